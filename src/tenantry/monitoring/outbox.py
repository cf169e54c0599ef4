"""The outbox: every queued notification is sent until a server accepts it, once.

The worker calls `deliver` every second. Rows due for one recipient, channel and group (a
platform, a host, a maintenance window) go out as one message. Each batch is sent while its
rows are locked (FOR UPDATE SKIP LOCKED) and marked in the same transaction: a worker killed
mid-send leaves them pending, and the next attempt carries the same dedup key (the email's
Message-ID), so even then the receiving side can drop the copy.

A server that is down, slow or refusing for now is retried with backoff (RETRY_FIRST,
doubling, at most RETRY_MAX apart) for GIVE_UP (24 h) from when the row was queued; a
final refusal (the recipient does not exist, say) marks the row failed. With no channel of a
kind configured, its rows wait (shown as pending), and go once one is.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from itertools import groupby

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tenantry.core.db import rowcount, utcnow
from tenantry.monitoring.channels import Channel, DeliveryFailed, Message
from tenantry.monitoring.models import Notification

log = logging.getLogger(__name__)

RETRY_FIRST = dt.timedelta(seconds=5)
RETRY_MAX = dt.timedelta(minutes=10)
GIVE_UP = dt.timedelta(hours=24)
BATCH = 50


def backoff(attempts: int) -> dt.timedelta:
    delay: dt.timedelta = min(RETRY_FIRST * (2 ** min(max(attempts - 1, 0), 16)), RETRY_MAX)
    return delay


def _message(rows: list[Notification]) -> Message:
    first = rows[0]
    if len(rows) == 1:
        subject, body = first.subject, first.body
    else:
        subject = f"[tenantry] {len(rows)} alerts: {first.group_key}"
        body = "\n\n".join(r.body for r in rows)
    if first.channel == "sms":
        body = (subject.removeprefix("[tenantry] ") if len(rows) == 1 else
                subject.removeprefix("[tenantry] ") + ": " + "; ".join(
                    r.subject.removeprefix("[tenantry] ") for r in rows))[:600]
    key = "n" + "-".join(str(r.id) for r in rows[:8])
    return Message(to=first.recipient, subject=subject[:200], body=body[:20_000],
                   dedup_key=key[:200])


def deliver(session: Session, channels: Mapping[str, Channel], *,
            now: dt.datetime | None = None) -> int:
    """Send what is due; the number of notifications accepted. Commits per message."""
    now = now or utcnow()
    kinds = sorted(channels)
    if not kinds:
        return 0
    due = list(session.scalars(
        select(Notification).where(Notification.status == "pending",
                                   Notification.next_attempt_at <= now,
                                   Notification.channel.in_(kinds))
        .order_by(Notification.recipient, Notification.channel, Notification.group_key,
                  Notification.id)
        .limit(BATCH).with_for_update(skip_locked=True)))
    sent = 0
    try:
        for _, batch in groupby(due, key=lambda n: (n.recipient, n.channel, n.group_key)):
            rows = list(batch)
            try:
                channels[rows[0].channel].send(_message(rows))
            except DeliveryFailed as exc:
                _failed(rows, exc, now)
                continue
            for r in rows:
                r.status, r.sent_at, r.last_error = "sent", utcnow(), None
                r.attempts += 1
            sent += len(rows)
            session.flush()
    finally:
        session.commit()
    return sent


def _failed(rows: list[Notification], exc: DeliveryFailed, now: dt.datetime) -> None:
    for r in rows:
        r.attempts += 1
        r.last_error = exc.message[:500]
        if not exc.retry:
            r.status = "failed"
        elif now + backoff(r.attempts) - r.created_at > GIVE_UP:
            r.status = "expired"
        else:
            r.next_attempt_at = now + backoff(r.attempts)
    log.warning("notification to %s by %s failed (%s): %s", rows[0].recipient, rows[0].channel,
                "will retry" if exc.retry else "final", exc.message)


def expire(session: Session, *, now: dt.datetime | None = None) -> int:
    """Rows of a kind with no channel configured give up after GIVE_UP too."""
    now = now or utcnow()
    gone = rowcount(session.execute(update(Notification).where(
        Notification.status == "pending", Notification.created_at < now - GIVE_UP)
        .values(status="expired", last_error="no delivery within 24 h")))
    session.commit()
    return gone
