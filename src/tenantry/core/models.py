"""Tables shared by every domain: jobs with their steps, and events.

They name the ISV and platform they concern by id only, without foreign keys: core's
tables reference nothing above core, and a job's record outlives its platform.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tenantry.core.db import Base, utcnow


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    # queued → running → succeeded | failed
    state: Mapped[str] = mapped_column(String(20), default="queued")
    isv_id: Mapped[str | None] = mapped_column(String(20), index=True)
    platform_id: Mapped[str | None] = mapped_column(String(20), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    steps: Mapped[list[JobStep]] = relationship(
        back_populates="job", order_by="JobStep.position", cascade="all, delete-orphan")


class JobStep(Base):
    __tablename__ = "job_steps"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    position: Mapped[int]
    name: Mapped[str] = mapped_column(String(60))
    # pending → running → done | failed | skipped
    state: Mapped[str] = mapped_column(String(20), default="pending")
    started_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    # when the step's wait began, kept once the step gave its worker slot back to wait
    # (`jobs.Waiting`): the wait's timeout counts from here across the step's runs
    waiting_since: Mapped[dt.datetime | None]
    job: Mapped[Job] = relationship(back_populates="steps")


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_isv_time", "isv_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    time: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    isv_id: Mapped[str | None] = mapped_column(String(20))
    platform_id: Mapped[str | None] = mapped_column(String(20), index=True)
    host_id: Mapped[str | None] = mapped_column(String(20))
    job_id: Mapped[int | None]
