"""Tables of backups. A platform's backups themselves are in its repository and reported by
its agent (`platforms.observed.backup`); the ISV's escrowed passphrases are on its row
(`isvs.backup_key`, `isvs.files_key`). Drills are kept here: each one's measured RPO and
RTO are the platform's record of having been proven recoverable."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.db import Base, utcnow


class Drill(Base):
    """One drill: a disaster-recovery drill, or a restore test."""

    __tablename__ = "backup_drills"
    __table_args__ = (Index("ix_backup_drills_platform_started", "platform_id", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    platform_id: Mapped[str] = mapped_column(ForeignKey("platforms.id", ondelete="CASCADE"))
    isv_id: Mapped[str] = mapped_column(ForeignKey("isvs.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int] = mapped_column(unique=True)
    # "dr": destroyed and recovered under load; "restore-test": the latest backup restored
    # into a scratch cluster and read (the weekly proof that each platform restores)
    kind: Mapped[str] = mapped_column(String(20), default="dr")
    host: Mapped[str] = mapped_column(String(40))
    same_host: Mapped[bool] = mapped_column(default=True)
    result: Mapped[str] = mapped_column(String(10))  # ok | failed
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    acked_commits: Mapped[int | None] = mapped_column(default=None)
    lost_commits: Mapped[int | None] = mapped_column(default=None)
    rpo_seconds: Mapped[float | None] = mapped_column(default=None)
    rto_seconds: Mapped[float | None] = mapped_column(default=None)
    detail: Mapped[str | None] = mapped_column(Text, default=None)


class BackupSchedule(Base):
    """A platform's own rhythm, where it differs from the defaults (backups.jobs.EVERY):
    seconds between backups of each type and between checks; NULL keeps the default."""

    __tablename__ = "backup_schedules"

    platform_id: Mapped[str] = mapped_column(
        ForeignKey("platforms.id", ondelete="CASCADE"), primary_key=True)
    full: Mapped[int | None] = mapped_column(default=None)
    diff: Mapped[int | None] = mapped_column(default=None)
    incr: Mapped[int | None] = mapped_column(default=None)
    verify: Mapped[int | None] = mapped_column(default=None)
    restore_test: Mapped[int | None] = mapped_column(default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(80), default="")
