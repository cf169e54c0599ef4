"""What Alertmanager 0.25 posts to tenantry's webhook (payload version 4), as typed models.

Only the fields tenantry reads are declared (in its camelCase); others are ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict


class WebhookAlert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    startsAt: datetime
    endsAt: datetime
    fingerprint: str


class WebhookPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str
    groupKey: str
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str]
    alerts: list[WebhookAlert]
