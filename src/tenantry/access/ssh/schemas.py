"""What goes in and out of the SSH certificate API."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field


class SshCertCreate(BaseModel):
    host: str = Field(min_length=1, max_length=40, description="host name or id")
    public_key: str = Field(min_length=20, max_length=16384)
    reason: str = Field(min_length=3, max_length=500)
    ttl_seconds: int = Field(default=900, ge=1, le=3600,
                             description="at most 900, or 3600 for admins")


class SshCertIssued(BaseModel):
    serial: int
    certificate: str
    principals: list[str]
    valid_before: dt.datetime


class SshCertPublic(BaseModel):
    serial: int
    username: str
    host: str
    principals: list[str]
    reason: str
    valid_after: dt.datetime
    valid_before: dt.datetime
    revoked_at: dt.datetime | None


class SshHostConfig(BaseModel):
    """What a host agent needs to configure sshd: CA, accounts' principals, revocations."""
    ca_public_key: str
    accounts: dict[str, list[str]]
    revoked_serials: list[int]


class SshHostEvents(BaseModel):
    """Logins and sudo runs the agent read from the host's logs (see agent.hostlog)."""
    events: list[dict[str, Any]] = Field(max_length=1000)
