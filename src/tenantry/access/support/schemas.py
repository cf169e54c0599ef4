"""What goes in and out of the support-grant API."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

MAX_HOURS = 72


class SupportGrantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    platform: str = Field(min_length=1, max_length=81, description="ISV/NAME or platform id")
    hours: int = Field(ge=1, le=MAX_HOURS, description=f"1 to {MAX_HOURS}")
    reason: str = Field(min_length=3, max_length=500)


class SupportGrantPublic(BaseModel):
    id: str
    isv: str
    platform: str  # ISV/NAME
    platform_id: str
    reason: str
    granted_by: str
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    revoked_by: str | None
    active: bool
