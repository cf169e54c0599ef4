"""Issued SSH certificates: the serial is the row id, so sshd's logs point back to a row."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.db import Base, utcnow


class SshCert(Base):
    __tablename__ = "ssh_certs"

    serial: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    username: Mapped[str] = mapped_column(String(40))
    # the user's ISV (None for provider staff): what `scoped()` narrows on
    isv_id: Mapped[str | None] = mapped_column(String(20), index=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    # the role it was issued under (a token may act with less than its user's role)
    role: Mapped[str | None] = mapped_column(String(30))
    principals: Mapped[list[str]] = mapped_column(JSON, default=list)
    extensions: Mapped[list[str]] = mapped_column(JSON, default=list)
    reason: Mapped[str] = mapped_column(Text)
    public_key: Mapped[str] = mapped_column(Text)
    certificate: Mapped[str] = mapped_column(Text, default="")
    valid_after: Mapped[dt.datetime]
    valid_before: Mapped[dt.datetime] = mapped_column(index=True)
    revoked_at: Mapped[dt.datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
