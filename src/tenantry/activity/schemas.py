"""What comes out of the jobs and events use cases."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel


class JobStepPublic(BaseModel):
    name: str
    state: str
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    error: str | None


class JobPublic(BaseModel):
    id: int
    kind: str
    state: str
    isv: str | None
    platform: str | None
    platform_id: str | None
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    steps: list[JobStepPublic]


class EventPublic(BaseModel):
    id: int
    time: dt.datetime
    kind: str
    message: str
    isv: str | None
    platform_id: str | None
    host_id: str | None
    job_id: int | None
