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
    login: str = Field(description="your account on the host: ssh LOGIN@HOST")
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


class SshHostPerson(BaseModel):
    """One person who may log in to the host now (see tenantry.access.ssh.policy)."""
    username: str
    account: str
    principals: list[str]
    root: str | None = Field(description='"all", "service" or none')
    platforms: list[str] = Field(description="platform ids whose Unix user they may become")
    valid_before: dt.datetime


class SshHostConfig(BaseModel):
    """What a host agent needs to configure sshd and sudo: CA, people, revocations."""
    ca_public_key: str
    login_group: str
    people: list[SshHostPerson]
    cut_off: list[str] = Field(default_factory=list,
                               description="accounts whose open sessions must end now")
    revoked_serials: list[int]


class SshHostEvents(BaseModel):
    """Logins and sudo runs the agent read from the host's logs (see agent.hostlog)."""
    events: list[dict[str, Any]] = Field(max_length=1000)
