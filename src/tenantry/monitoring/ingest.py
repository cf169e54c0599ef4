"""From Alertmanager's webhook to the alert history and the outbox.

Each alert Prometheus raises is one `Alert` row per episode: an open row with the same
fingerprint *is* the episode, whatever startsAt says (Prometheus restarted forgets its alerts'
start), so a re-sent or re-raised alert never notifies twice. Every change is stored.

Who hears of it is decided here (`route`) and written to the outbox in the same transaction
(deduplicated by alert, state, recipient and channel); `outbox.deliver` sends it.

Noise control:
- flap damping: a series (check and target, levels aside) that changed FLAP_CHANGES times
  within FLAP_WINDOW tells "flapping" once and then nothing until it is quiet for STABLE_AFTER
  (`sync.settle_flaps` then tells "stable" with its state);
- dependencies: while a host's heartbeat alert is open, alerts of platforms and databases on
  it are stored as suppressed, and the heartbeat's message says so;
- grouping: notifications wait GROUP_WAIT before they go, and the outbox sends everything
  due for one recipient, channel and platform as one message.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from tenantry.core.db import utcnow
from tenantry.core.events import emit
from tenantry.core.notify import BusinessHours
from tenantry.monitoring.models import (
    Alert,
    AlertChange,
    Contact,
    Flap,
    Maintenance,
    Notification,
)
from tenantry.monitoring.webhook import WebhookAlert, WebhookPayload
from tenantry.platforms.models import Host, Isv, Platform, Region

log = logging.getLogger(__name__)

GROUP_WAIT = dt.timedelta(seconds=1)
# Flapping: fired, resolved and fired again within two minutes (a check evaluated every 5 s
# that changes at every evaluation is caught within 15 s; an outage that recurs after minutes
# is told as what it is). Stable: five minutes without a change.
FLAP_WINDOW = dt.timedelta(minutes=2)
FLAP_CHANGES = 3
STABLE_AFTER = dt.timedelta(minutes=5)
TOLD = ("firing", "resolved", "flapping", "stable")
# Labels that tell one series of a check from another on the same target.
_SERIES_LABELS = ("mountpoint", "device", "server", "instance")


@dataclass(frozen=True)
class Recipient:
    contact_id: str
    channel: str  # email | sms
    address: str


def _series(labels: dict[str, str], target: str) -> str:
    extra = ",".join(f"{k}={labels[k]}" for k in _SERIES_LABELS if labels.get(k))
    return f"{labels.get('check', '?')}|{target}|{extra}"[:300]


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def ingest(session: Session, payload: WebhookPayload, *, hours: BusinessHours,
           now: dt.datetime | None = None) -> int:
    """Store what the payload says; the number of alerts that changed state. Commits."""
    now = now or utcnow()
    changed = 0
    for item in payload.alerts:
        if item.status == "firing":
            changed += _firing(session, item, hours, now)
        else:
            changed += _resolved(session, item, hours, now)
    session.commit()
    return changed


def open_alert(session: Session, fingerprint: str) -> Alert | None:
    return session.scalar(select(Alert).where(Alert.fingerprint == fingerprint,
                                              Alert.ended_at.is_(None))
                          .order_by(Alert.id.desc()).limit(1).with_for_update())


def new_alert(session: Session, item: WebhookAlert, now: dt.datetime) -> Alert | None:
    labels = item.labels
    kind = labels.get("kind", "host")
    platform_label = labels.get("platform")
    target = platform_label if kind in ("platform", "database") and platform_label else \
        labels.get("host") or labels.get("instance") or "?"
    if kind == "database":
        target = f"{target} database"
    if labels.get("mountpoint"):
        target = f"{target} {labels['mountpoint']}"
    isv_id = platform_id = None
    if platform_label and "/" in platform_label:
        isv_name, _, name = platform_label.partition("/")
        found = session.execute(select(Platform.id, Platform.isv_id).join(Isv).where(
            Isv.name == isv_name, Platform.name == name)).first()
        if found is not None:
            platform_id, isv_id = found
    host = labels.get("host")
    region = labels.get("region") or (session.scalar(
        select(Region.name).join(Host, Host.region_id == Region.id).where(Host.name == host))
        if host else None)
    values = dict(
        fingerprint=item.fingerprint[:32], starts_at=item.startsAt,
        check=labels.get("check", labels.get("alertname", "?"))[:40],
        level=labels.get("level", "overloaded")[:12], kind=kind[:12], target=target[:140],
        series=_series(labels, target), host=host, region=region, isv_id=isv_id,
        platform_id=platform_id, value=_float(item.annotations.get("value")),
        threshold=_float(item.annotations.get("threshold")),
        summary=item.annotations.get("summary", labels.get("alertname", "alert")),
        labels=dict(labels), started_at=min(item.startsAt, now))
    made = session.execute(insert(Alert).values(**values).on_conflict_do_nothing(
        index_elements=["fingerprint", "starts_at"]).returning(Alert.id)).scalar()
    return session.get(Alert, made) if made is not None else None


def _firing(session: Session, item: WebhookAlert, hours: BusinessHours,
            now: dt.datetime) -> int:
    alert = open_alert(session, item.fingerprint[:32])
    if alert is not None:  # the same episode, re-sent: only the value moves
        alert.value = _float(item.annotations.get("value")) or alert.value
        return 0
    alert = new_alert(session, item, now)
    if alert is None:  # this very episode was seen and ended (reconciled): nothing new
        return 0
    session.add(AlertChange(alert_id=alert.id, state="firing", at=now, value=alert.value))
    _event(session, alert, "ALERT")
    window = active_maintenance(session, alert, now)
    if window is not None:
        alert.maintenance_id = window.id
        session.add(AlertChange(alert_id=alert.id, state="silenced", at=now,
                                note=f"maintenance {window.id}: {window.message}"))
        return 1
    silent = _silent_host(session, alert)
    if silent is not None:
        alert.suppressed = f"host {alert.host} is silent (alert {silent.id})"
        session.add(AlertChange(alert_id=alert.id, state="suppressed", at=now,
                                note=alert.suppressed))
        return 1
    if alert.check == "heartbeat":
        _hold_back_host(session, alert, now)
    told = _flap(session, alert, now)
    if told is not None:
        notify(session, alert, told, hours=hours, now=now)
    return 1


def _resolved(session: Session, item: WebhookAlert, hours: BusinessHours,
              now: dt.datetime) -> int:
    alert = open_alert(session, item.fingerprint[:32])
    if alert is None:
        return 0  # never seen firing (it fired and ended while nobody listened), or closed
    close(session, alert, hours=hours, now=now,
          ended_at=min(item.endsAt, now) if item.endsAt.year > 2000 else now)
    return 1


def close(session: Session, alert: Alert, *, hours: BusinessHours, now: dt.datetime,
          ended_at: dt.datetime, note: str | None = None) -> None:
    """End an open alert; tell those who were told it fired (unless it flaps)."""
    alert.ended_at = max(ended_at, alert.started_at)
    session.add(AlertChange(alert_id=alert.id, state="resolved", at=now, note=note))
    _event(session, alert, "ALERT_RESOLVED")
    if alert.suppressed is not None or alert.maintenance_id is not None:
        return
    told = _flap(session, alert, now)
    if told is None:
        return
    if told == "resolved":
        session.execute(
            update(Notification).where(Notification.alert_id == alert.id,
                                       Notification.status == "pending",
                                       Notification.state == "firing")
            .values(status="suppressed", last_error="resolved before it went out"))
        # Those who heard it fire hear it end; nobody else (a contact added meanwhile, or
        # one outside their hours when it fired, has nothing to be told).
        heard = {(n.contact_id, n.channel) for n in session.scalars(
            select(Notification).where(Notification.alert_id == alert.id,
                                       Notification.state == "firing",
                                       Notification.status != "suppressed"))}
        recipients = [r for r in route(session, alert, hours=hours, now=now, any_hour=True)
                      if (r.contact_id, r.channel) in heard]
        _queue_alert(session, alert, told, recipients, now)
        return
    notify(session, alert, told, hours=hours, now=now)


def _event(session: Session, alert: Alert, kind: str) -> None:
    """The events feed: "CPU busy on node1", "Instance not responding on bms/lbh"."""
    what = alert.summary.split(" (")[0]
    what = what[:1].upper() + what[1:]
    if kind == "ALERT":
        text = f"{what} ({alert.level}) on {alert.target} (alert {alert.id})"
    else:
        text = f"{what} on {alert.target}: resolved (alert {alert.id})"
    host_id = session.scalar(select(Host.id).where(Host.name == alert.host)) \
        if alert.host else None
    emit(session, kind, text, isv_id=alert.isv_id, platform_id=alert.platform_id,
         host_id=host_id)


def _flap(session: Session, alert: Alert, now: dt.datetime) -> str | None:
    """Note a change of the alert's series; what to tell: its own state, "flapping" the
    first time it flaps, None while it flaps."""
    state = "resolved" if alert.ended_at is not None else "firing"
    flap = session.get(Flap, alert.series, with_for_update=True)
    if flap is None:
        flap = Flap(series=alert.series, changes=[], last_change_at=now)
        session.add(flap)
    recent = [t for t in flap.changes
              if dt.datetime.fromisoformat(t) > now - FLAP_WINDOW][: FLAP_CHANGES * 4]
    flap.changes = [now.isoformat(), *recent]
    flap.last_change_at = now
    if flap.flapping_since is not None:
        session.add(AlertChange(alert_id=alert.id, state="flapping", at=now,
                                note="flapping: not told"))
        return None
    if len(flap.changes) >= FLAP_CHANGES:
        flap.flapping_since, flap.alert_id = now, alert.id
        session.execute(update(Notification).where(
            Notification.alert_id.in_(select(Alert.id).where(Alert.series == alert.series)),
            Notification.status == "pending").values(
            status="suppressed", last_error="the check is flapping"))
        session.add(AlertChange(alert_id=alert.id, state="flapping", at=now,
                                note=f"{len(flap.changes)} changes within "
                                     f"{int(FLAP_WINDOW.total_seconds() // 60)} min"))
        return "flapping"
    return state


def _silent_host(session: Session, alert: Alert) -> Alert | None:
    if alert.kind not in ("platform", "database") or not alert.host:
        return None
    return session.scalar(select(Alert).where(
        Alert.check == "heartbeat", Alert.host == alert.host, Alert.ended_at.is_(None))
        .limit(1))


def _hold_back_host(session: Session, heartbeat: Alert, now: dt.datetime) -> None:
    """A host went silent: what fired on it moments before is explained by that."""
    held = session.scalars(select(Alert).where(
        Alert.host == heartbeat.host, Alert.kind.in_(("platform", "database")),
        Alert.ended_at.is_(None), Alert.suppressed.is_(None)))
    for other in held:
        other.suppressed = f"host {heartbeat.host} is silent (alert {heartbeat.id})"
        session.add(AlertChange(alert_id=other.id, state="suppressed", at=now,
                                note=other.suppressed))
        session.execute(update(Notification).where(
            Notification.alert_id == other.id, Notification.status == "pending")
            .values(status="suppressed", last_error=other.suppressed))


def active_maintenance(session: Session, alert: Alert, now: dt.datetime) -> Maintenance | None:
    scopes = [("region", alert.region), ("host", alert.host),
              ("platform", (alert.labels or {}).get("platform"))]
    for scope, target in scopes:
        if not target:
            continue
        window = session.scalar(select(Maintenance).where(
            Maintenance.scope == scope, Maintenance.target == target,
            Maintenance.cancelled_at.is_(None), Maintenance.starts_at <= now,
            Maintenance.ends_at > now).limit(1))
        if window is not None:
            return window
    return None


# ------------------------------------------------------------------ routing


def route(session: Session, alert: Alert, *, hours: BusinessHours,
          now: dt.datetime, any_hour: bool = False) -> list[Recipient]:
    """An ISV's contacts hear of their own platforms; the NOC of everything on hands-off
    platforms and hosts at any hour, of hands-on platforms in business hours. A contact
    kept to business hours hears nothing outside them (`any_hour`: the hours aside)."""
    in_hours = any_hour or hours.contains(now)
    contacts: list[Contact] = []
    if alert.isv_id is not None:
        contacts += session.scalars(select(Contact).where(Contact.isv_id == alert.isv_id))
    noc_hears = True
    if alert.platform_id is not None:
        level = session.scalar(select(Platform.service_level).where(
            Platform.id == alert.platform_id))
        noc_hears = level != "hands-on" or in_hours
    if noc_hears:
        contacts += session.scalars(select(Contact).where(Contact.isv_id.is_(None)))
    return _channels(contacts, in_hours)


def _channels(contacts: Sequence[Contact], in_hours: bool) -> list[Recipient]:
    out: list[Recipient] = []
    for c in sorted(contacts, key=lambda c: c.id):
        if c.hours == "business" and not in_hours:
            continue
        if c.email:
            out.append(Recipient(c.id, "email", c.email))
        if c.phone:
            out.append(Recipient(c.id, "sms", c.phone))
    return out


def _words(alert: Alert, state: str) -> tuple[str, str]:
    what = alert.summary.split(" (")[0]
    value = "" if alert.value is None else f" (value {alert.value:.4g}"
    value += "" if not value or alert.threshold is None else f", threshold {alert.threshold:g})"
    value += ")" if value and alert.threshold is None else ""
    head = {"firing": alert.level.upper(), "resolved": "RESOLVED", "flapping": "FLAPPING",
            "stable": "STABLE"}.get(state, state.upper())
    subject = f"[tenantry] {head} {alert.target}: {what}"
    lines = [f"{head}: {what} on {alert.target}{value}.",
             f"Check {alert.check}, level {alert.level}, since "
             f"{alert.started_at:%Y-%m-%d %H:%M:%S} UTC."]
    if state == "resolved" and alert.ended_at is not None:
        lines.append(f"Ended {alert.ended_at:%Y-%m-%d %H:%M:%S} UTC.")
    if state == "flapping":
        lines.append("It keeps changing state: no more messages about it until it is stable.")
    if state == "stable":
        lines.append("It has stopped flapping; it is now "
                     + ("resolved." if alert.ended_at is not None else "firing."))
    if alert.check == "heartbeat" and state == "firing":
        lines.append(f"Alerts of the platforms and databases on host {alert.host} are held "
                     "back until it answers again.")
    lines.append(f"Alert {alert.id}: tenantry alert show {alert.id}")
    return subject, "\n".join(lines)


def notify(session: Session, alert: Alert, state: str, *, hours: BusinessHours,
           now: dt.datetime) -> int:
    """Queue the notifications of one alert state; the number queued (duplicates none)."""
    return _queue_alert(session, alert, state, route(session, alert, hours=hours, now=now),
                        now)


def _queue_alert(session: Session, alert: Alert, state: str, recipients: Sequence[Recipient],
                 now: dt.datetime) -> int:
    subject, body = _words(alert, state)
    group = (alert.labels or {}).get("platform") or f"host:{alert.host}"
    return _queue(session, recipients, subject=subject, body=body, state=state,
                  group_key=group, now=now, alert_id=alert.id)


def _queue(session: Session, recipients: Sequence[Recipient], *, subject: str, body: str,
           state: str, group_key: str, now: dt.datetime, alert_id: int | None = None,
           maintenance_id: str | None = None) -> int:
    queued = 0
    for r in recipients:
        stmt = insert(Notification).values(
            alert_id=alert_id, maintenance_id=maintenance_id, state=state, channel=r.channel,
            recipient=r.address, contact_id=r.contact_id, group_key=group_key[:200],
            subject=subject, body=body, status="pending", attempts=0,
            next_attempt_at=now + GROUP_WAIT, created_at=now)
        conflict = ["alert_id" if alert_id is not None else "maintenance_id", "state",
                    "recipient", "channel"]
        made = session.execute(stmt.on_conflict_do_nothing(index_elements=conflict)
                               .returning(Notification.id)).scalar()
        queued += made is not None
    return queued


def announce_maintenance(session: Session, window: Maintenance,
                         now: dt.datetime | None = None) -> int:
    """Tell the contacts of every ISV with a platform in the window's scope, and the NOC."""
    now = now or utcnow()
    query = select(Platform.isv_id).join(Isv)
    if window.scope == "platform":
        isv_ids = {window.isv_id}
    else:
        if window.scope == "host":
            query = query.join(Host, Host.id == Platform.host_id).where(
                Host.name == window.target)
        else:
            query = query.join(Region, Region.id == Platform.region_id).where(
                Region.name == window.target)
        isv_ids = set(session.scalars(query.where(Platform.state != "destroyed")))
    contacts = list(session.scalars(select(Contact).where(
        Contact.isv_id.in_({i for i in isv_ids if i}) | Contact.isv_id.is_(None))))
    recipients = _channels(contacts, in_hours=True)
    subject = (f"[tenantry] MAINTENANCE {window.scope} {window.target}: "
               f"{window.starts_at:%Y-%m-%d %H:%M} to {window.ends_at:%Y-%m-%d %H:%M} UTC")
    body = (f"Planned maintenance of {window.scope} {window.target} from "
            f"{window.starts_at:%Y-%m-%d %H:%M} to {window.ends_at:%Y-%m-%d %H:%M} UTC.\n"
            f"{window.message}")
    return _queue(session, recipients, subject=subject, body=body, state="announced",
                  group_key=f"maintenance:{window.id}", now=now, maintenance_id=window.id)
