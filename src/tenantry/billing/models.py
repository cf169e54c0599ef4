"""Billing's tables.

Usage events keep no foreign key to the platform: a destroyed platform's row goes, its
usage must stay billable. For the same reason the ledger (`billing_platforms`) keeps each
platform's name and lifetime for the platform fees.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.db import Base, utcnow


class UsageToken(Base):
    """A token that may only send usage for one platform (`tnu_...`)."""

    __tablename__ = "billing_usage_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    platform_id: Mapped[str] = mapped_column(String(20), index=True)
    isv_id: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(80))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class UsageEvent(Base):
    """One "this end user of this tenant was active then". The primary key is the
    idempotency key: a replayed id inserts nothing."""

    __tablename__ = "billing_usage_events"
    __table_args__ = (
        # a month's distinct users per ISV, read from the index alone
        Index("ix_billing_usage_isv_time", "isv_id", "time",
              postgresql_include=["tenant", "user_hash", "platform_id"]),
        # late usage: what arrived since an invoice, and for which month
        Index("ix_billing_usage_isv_received", "isv_id", "received_at",
              postgresql_include=["time"]),
    )

    platform_id: Mapped[str] = mapped_column(String(20), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    isv_id: Mapped[str] = mapped_column(String(20))
    tenant: Mapped[str] = mapped_column(String(40))
    user_hash: Mapped[bytes] = mapped_column(LargeBinary(16))  # a keyed hash, never the user
    time: Mapped[dt.datetime]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class BilledPlatform(Base):
    """The ledger of platforms for their fees: kept after the platform itself is gone."""

    __tablename__ = "billing_platforms"

    platform_id: Mapped[str] = mapped_column(String(20), primary_key=True)
    isv_id: Mapped[str] = mapped_column(String(20), index=True)
    name: Mapped[str] = mapped_column(String(90))  # ISV/NAME
    created_at: Mapped[dt.datetime]
    destroyed_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class Plan(Base):
    __tablename__ = "billing_plans"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    version: Mapped[int]
    document: Mapped[dict[str, Any]] = mapped_column(JSON)  # PlanDocument.canonical()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(80))


class Subscription(Base):
    __tablename__ = "billing_subscriptions"
    __table_args__ = (Index("ix_billing_subscriptions_isv_start", "isv_id", "start"),)

    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    isv_id: Mapped[str] = mapped_column(ForeignKey("isvs.id", ondelete="CASCADE"))
    plan_id: Mapped[str] = mapped_column(ForeignKey("billing_plans.id"))
    term: Mapped[str] = mapped_column(String(4))
    min_users: Mapped[int] = mapped_column(default=0)
    tax_rate: Mapped[str] = mapped_column(String(20))  # a decimal string, percent
    start: Mapped[dt.date] = mapped_column(Date)
    end: Mapped[dt.date] = mapped_column(Date)  # the first day no longer covered
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(80))


class Invoice(Base):
    """An issued invoice: never changed once written."""

    __tablename__ = "billing_invoices"
    __table_args__ = (UniqueConstraint("isv_id", "period"),)

    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    isv_id: Mapped[str] = mapped_column(ForeignKey("isvs.id", ondelete="CASCADE"))
    period: Mapped[str] = mapped_column(String(7))
    subscription_id: Mapped[str] = mapped_column(ForeignKey("billing_subscriptions.id"))
    currency: Mapped[str] = mapped_column(String(3))
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    subtotal: Mapped[str] = mapped_column(String(30))
    tax: Mapped[str] = mapped_column(String(30))
    total: Mapped[str] = mapped_column(String(30))
    tax_rate: Mapped[str] = mapped_column(String(20))
    active_users: Mapped[int]
    # active users billed per month: its own, and any earlier month adjusted for late usage
    billed_users: Mapped[dict[str, int]] = mapped_column(JSON)
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
