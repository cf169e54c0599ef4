"""Tables of monitoring: contacts, threshold overrides, alerts with their history and
notification outbox, flap state, maintenance windows, and the stack's credentials.

Alerts are kept for good (a year at least): one row per episode of one Prometheus alert
(its fingerprint and start), every state change beside it, every notification attempt in the
outbox. Indexes serve the questions asked: by target and time, by platform, by host, open.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.core.db import Base, utcnow


class Contact(Base):
    """Who is told. `isv_id` None: the provider's NOC."""

    __tablename__ = "monitor_contacts"
    __table_args__ = (UniqueConstraint("isv_id", "name"),)

    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(String(60))
    isv_id: Mapped[str | None] = mapped_column(ForeignKey("isvs.id", ondelete="CASCADE"),
                                               index=True)
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(20))
    hours: Mapped[str] = mapped_column(String(10), default="always")  # always | business
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ThresholdSetting(Base):
    """One override of a check's thresholds for an ISV, a host or a platform."""

    __tablename__ = "monitor_thresholds"

    check: Mapped[str] = mapped_column(String(40), primary_key=True)
    scope: Mapped[str] = mapped_column(String(10), primary_key=True)  # isv | host | platform
    target: Mapped[str] = mapped_column(String(100), primary_key=True)  # its name
    isv_id: Mapped[str | None] = mapped_column(String(20), index=True)  # who may see it
    busy: Mapped[float | None]
    overloaded: Mapped[float]
    clear: Mapped[float | None]
    set_by: Mapped[str] = mapped_column(String(40))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Alert(Base):
    """One episode of one check on one target at one level: from firing to resolved."""

    __tablename__ = "monitor_alerts"
    __table_args__ = (
        UniqueConstraint("fingerprint", "starts_at"),
        Index("ix_monitor_alerts_target_time", "target", "started_at"),
        Index("ix_monitor_alerts_platform_time", "platform_id", "started_at"),
        Index("ix_monitor_alerts_host_time", "host", "started_at"),
        Index("ix_monitor_alerts_isv_time", "isv_id", "started_at"),
        Index("ix_monitor_alerts_open", "ended_at", postgresql_where="ended_at IS NULL"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(32))
    starts_at: Mapped[dt.datetime]  # Alertmanager's startsAt: with the fingerprint, the key
    check: Mapped[str] = mapped_column(String(40))
    level: Mapped[str] = mapped_column(String(12))  # busy | overloaded
    kind: Mapped[str] = mapped_column(String(12))  # host | platform | database
    target: Mapped[str] = mapped_column(String(140))  # host name, or ISV/NAME
    series: Mapped[str] = mapped_column(String(300))  # check and target, levels aside (flaps)
    host: Mapped[str | None] = mapped_column(String(40))
    region: Mapped[str | None] = mapped_column(String(40))
    isv_id: Mapped[str | None] = mapped_column(String(20))
    platform_id: Mapped[str | None] = mapped_column(String(20))
    value: Mapped[float | None]
    threshold: Mapped[float | None]
    summary: Mapped[str] = mapped_column(Text)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[dt.datetime | None]
    maintenance_id: Mapped[str | None] = mapped_column(String(20))  # silenced by it
    suppressed: Mapped[str | None] = mapped_column(Text)  # why nobody was told


class AlertChange(Base):
    """Every state change of an alert: firing, resolved, flapping, stable, suppressed,
    silenced."""

    __tablename__ = "monitor_alert_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("monitor_alerts.id", ondelete="CASCADE"),
                                          index=True)
    state: Mapped[str] = mapped_column(String(12))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    value: Mapped[float | None]
    note: Mapped[str | None] = mapped_column(Text)


class Notification(Base):
    """The outbox: one row per (alert, state, recipient, channel), delivered once.

    pending → sent | failed (refused for good) | expired (24 h of retries) | suppressed
    """

    __tablename__ = "monitor_notifications"
    __table_args__ = (
        UniqueConstraint("alert_id", "state", "recipient", "channel"),
        UniqueConstraint("maintenance_id", "state", "recipient", "channel"),
        Index("ix_monitor_notifications_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int | None] = mapped_column(
        ForeignKey("monitor_alerts.id", ondelete="CASCADE"), index=True)
    maintenance_id: Mapped[str | None] = mapped_column(String(20), index=True)
    state: Mapped[str] = mapped_column(String(12))  # firing, resolved, flapping, ...
    channel: Mapped[str] = mapped_column(String(10))  # email | sms
    recipient: Mapped[str] = mapped_column(String(254))
    contact_id: Mapped[str | None] = mapped_column(String(20))
    group_key: Mapped[str] = mapped_column(String(200))  # one message per group and recipient
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None]


class Flap(Base):
    """Recent changes of one series (check and target): flapping is told once, then
    nothing until it is stable."""

    __tablename__ = "monitor_flaps"

    series: Mapped[str] = mapped_column(String(300), primary_key=True)
    changes: Mapped[list[str]] = mapped_column(JSON, default=list)  # ISO times, recent first
    flapping_since: Mapped[dt.datetime | None]
    last_change_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    alert_id: Mapped[int | None]  # the alert the flapping notice went out under


class Maintenance(Base):
    """A maintenance window: announced when posted, silencing alerts in scope while open."""

    __tablename__ = "monitor_maintenance"

    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    scope: Mapped[str] = mapped_column(String(10))  # region | host | platform
    target: Mapped[str] = mapped_column(String(100))  # its name (ISV/NAME for a platform)
    isv_id: Mapped[str | None] = mapped_column(String(20), index=True)  # a platform's ISV
    starts_at: Mapped[dt.datetime] = mapped_column(index=True)
    ends_at: Mapped[dt.datetime] = mapped_column(index=True)
    message: Mapped[str] = mapped_column(Text)
    silence_id: Mapped[str | None] = mapped_column(String(64))  # Alertmanager's, once made
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    cancelled_at: Mapped[dt.datetime | None]


class StackCredential(Base):
    """Bearer tokens of the monitoring programs (their hashes): Prometheus reads the
    service discovery, Alertmanager posts to the webhook."""

    __tablename__ = "monitor_credentials"

    name: Mapped[str] = mapped_column(String(20), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
