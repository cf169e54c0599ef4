"""Support grants: while one is unexpired and unrevoked, provider operators may act as the
platform's Unix user on its host (see tenantry.access.ssh.policy)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.db import Base, utcnow


class SupportGrant(Base):
    __tablename__ = "support_grants"

    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    isv_id: Mapped[str] = mapped_column(ForeignKey("isvs.id", ondelete="CASCADE"), index=True)
    platform_id: Mapped[str] = mapped_column(ForeignKey("platforms.id", ondelete="CASCADE"),
                                             index=True)
    reason: Mapped[str] = mapped_column(Text)
    granted_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    revoked_at: Mapped[dt.datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(40))
