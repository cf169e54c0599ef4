"""What the audit log's routes, pages and commands take and return."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field


class AuditEntryPublic(BaseModel):
    id: int
    time: dt.datetime
    actor: str
    actor_id: str | None
    org: str | None
    source: str
    action: str
    target: str
    outcome: str
    ip: str | None
    detail: dict[str, Any] | None


class AuditFilter(BaseModel):
    actor: str | None = None
    action: str | None = None  # substring
    target: str | None = None  # substring
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class AuditHead(BaseModel):
    """The chain's head as shipped offsite, with its HMAC signature."""

    last_id: int
    last_mac: str
    count: int
    time: dt.datetime
    sig: str


class AuditProblem(BaseModel):
    id: int | None
    reason: str
    entry: AuditEntryPublic | None = None


class AuditVerifyReport(BaseModel):
    ok: bool
    checked: int
    first_bad: AuditProblem | None
    head: AuditHead | None
