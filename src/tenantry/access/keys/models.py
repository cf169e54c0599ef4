"""Tables of this package: site certificates uploaded by ISVs (data keys are core's,
`tenantry.core.keystore`: the secret box of every process needs them)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.db import Base, utcnow


class SiteCertificate(Base):
    """A certificate and key an ISV uploaded for a custom domain; the key is encrypted."""

    __tablename__ = "site_certificates"
    __table_args__ = (UniqueConstraint("isv_id", "domain"),)

    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    isv_id: Mapped[str] = mapped_column(ForeignKey("isvs.id", ondelete="CASCADE"), index=True)
    domain: Mapped[str] = mapped_column(String(253))
    certificate_pem: Mapped[str] = mapped_column(Text)
    key: Mapped[str] = mapped_column(Text)  # encrypted under the ISV's data key
    issuer: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the leaf
    not_before: Mapped[dt.datetime]
    not_after: Mapped[dt.datetime] = mapped_column(index=True)
    expiry_notified_on: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
