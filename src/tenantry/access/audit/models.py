"""The audit log's one table: append-only entries, each MAC-chained to the one before."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.db import Base


class AuditEntry(Base):
    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_org_id", "org", "id"),
        Index("ix_audit_entries_actor_id", "actor", "id"),
    )

    # Assigned by the appender under an advisory lock (no sequence): ids are contiguous, so a
    # gap is a deletion.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(120))
    actor_id: Mapped[str | None] = mapped_column(String(40))
    org: Mapped[str | None] = mapped_column(String(20))  # ISV id; NULL = provider
    source: Mapped[str] = mapped_column(String(10))
    action: Mapped[str] = mapped_column(String(200))
    target: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(String(20))
    ip: Mapped[str | None] = mapped_column(String(64))
    # `json`, not `jsonb`: kept as written, so the MAC recomputes from what is read back.
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    prev_mac: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))
