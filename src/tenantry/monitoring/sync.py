"""What the worker keeps in step with the monitoring programs, every few seconds.

- the rule file, from the catalog and the threshold overrides (Prometheus reloads it only
  when it changed);
- Alertmanager silences for maintenance windows (made once, removed when cancelled);
- the alert history against Prometheus's own alert state: an open alert Prometheus no longer
  has for CLOSE_AFTER is closed (the resolution was lost while tenantry or Alertmanager was
  down), and alerts silenced by a maintenance window are recorded, since silenced alerts
  never reach the webhook;
- flapping series that have been quiet long enough are told "stable".
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from tenantry.core import localhttp
from tenantry.core.db import utcnow
from tenantry.core.errors import Unavailable
from tenantry.core.notify import BusinessHours
from tenantry.monitoring import ingest, local, stack
from tenantry.monitoring.models import Alert, AlertChange, Flap, Maintenance
from tenantry.monitoring.service import overrides
from tenantry.monitoring.webhook import WebhookAlert

log = logging.getLogger(__name__)

CLOSE_AFTER = dt.timedelta(seconds=30)
TIMEOUT = 5.0


def sync_rules(session: Session, data_dir: Any, urls: local.StackUrls) -> bool:
    changed = local.write_rules(data_dir, overrides(session))
    if changed:
        stack.reload(urls.prometheus)
        log.info("rule file changed; Prometheus reloaded it")
    return changed


def _matchers(window: Maintenance) -> list[dict[str, Any]]:
    return [{"name": window.scope, "value": window.target, "isRegex": False, "isEqual": True}]


def sync_silences(session: Session, urls: local.StackUrls, now: dt.datetime) -> int:
    made = 0
    windows = [w for w in session.scalars(select(Maintenance).where(Maintenance.ends_at > now))
               if (w.cancelled_at is None) == (w.silence_id is None)]  # to make, or to remove
    if not windows:  # the usual case; a client (its TLS context) costs more than the query
        session.commit()
        return 0
    with httpx.Client(base_url=urls.alertmanager, timeout=TIMEOUT) as am:
        for w in windows:
            if w.cancelled_at is None and w.silence_id is None:
                r = am.post("/api/v2/silences", json={
                    "matchers": _matchers(w), "startsAt": w.starts_at.isoformat(),
                    "endsAt": w.ends_at.isoformat(), "createdBy": f"tenantry:{w.created_by}",
                    "comment": f"maintenance {w.id}: {w.message}"})
                if r.status_code != 200:
                    raise Unavailable(f"Alertmanager refused the silence of maintenance "
                                      f"{w.id}: {r.status_code} {r.text.strip()[:200]}")
                w.silence_id = r.json()["silenceID"]
                made += 1
            elif w.cancelled_at is not None and w.silence_id is not None:
                r = am.delete(f"/api/v2/silence/{w.silence_id}")
                if r.status_code not in (200, 404):
                    raise Unavailable(f"Alertmanager kept the silence of maintenance {w.id}: "
                                      f"{r.status_code}")
                w.silence_id = None
    session.commit()
    return made


def _firing_in_prometheus(urls: local.StackUrls) -> list[dict[str, str]]:
    r = localhttp.client().get(f"{urls.prometheus}/api/v1/alerts", timeout=TIMEOUT)
    r.raise_for_status()
    return [a["labels"] for a in r.json()["data"]["alerts"] if a["state"] == "firing"]


def reconcile(session: Session, urls: local.StackUrls, hours: BusinessHours, now: dt.datetime,
              absent_since: dict[int, dt.datetime]) -> int:
    """Close open alerts Prometheus has not had for CLOSE_AFTER; the number closed."""
    try:
        firing = _firing_in_prometheus(urls)
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        raise Unavailable(f"Prometheus at {urls.prometheus} did not answer: {exc}") from exc
    present = {tuple(sorted(labels.items())) for labels in firing}
    closed = 0
    open_alerts = list(session.scalars(select(Alert).where(Alert.ended_at.is_(None))))
    seen = set()
    for alert in open_alerts:
        seen.add(alert.id)
        if tuple(sorted((alert.labels or {}).items())) in present:
            absent_since.pop(alert.id, None)
            continue
        since = absent_since.setdefault(alert.id, now)
        if now - since >= CLOSE_AFTER and alert.started_at < now - CLOSE_AFTER:
            ingest.close(session, alert, hours=hours, now=now, ended_at=since,
                         note="no longer firing in Prometheus (its resolution was missed)")
            absent_since.pop(alert.id, None)
            closed += 1
    for gone in set(absent_since) - seen:
        absent_since.pop(gone, None)
    session.commit()
    return closed


def record_silenced(session: Session, urls: local.StackUrls, hours: BusinessHours,
                    now: dt.datetime) -> int:
    """Alerts Alertmanager holds silenced enter the history, marked with their window."""
    r = localhttp.client().get(f"{urls.alertmanager}/api/v2/alerts", timeout=TIMEOUT,
                  params={"active": "false", "silenced": "true", "inhibited": "false"})
    if r.status_code != 200:
        raise Unavailable(f"Alertmanager at {urls.alertmanager}: {r.status_code}")
    recorded = 0
    for item in r.json():
        silenced_by = (item.get("status") or {}).get("silencedBy") or []
        if not silenced_by:
            continue
        window = session.scalar(select(Maintenance).where(
            Maintenance.silence_id.in_(silenced_by)).limit(1))
        alert = WebhookAlert(status="firing", labels=item["labels"],
                             annotations=item.get("annotations") or {},
                             startsAt=item["startsAt"], endsAt=item["endsAt"],
                             fingerprint=item["fingerprint"])
        if ingest.open_alert(session, alert.fingerprint) is not None:
            continue
        row = ingest.new_alert(session, alert, now)
        if row is None:
            continue
        row.maintenance_id = window.id if window is not None else None
        session.add(AlertChange(alert_id=row.id, state="firing", at=now, value=row.value))
        session.add(AlertChange(alert_id=row.id, state="silenced", at=now,
                                note=f"maintenance {window.id}: {window.message}"
                                if window is not None else "silenced in Alertmanager"))
        recorded += 1
    session.commit()
    return recorded


def settle_flaps(session: Session, hours: BusinessHours, now: dt.datetime) -> int:
    told = 0
    quiet = session.scalars(select(Flap).where(
        Flap.flapping_since.is_not(None), Flap.last_change_at < now - ingest.STABLE_AFTER)
        .with_for_update(skip_locked=True))
    for flap in quiet:
        latest = session.scalar(select(Alert).where(Alert.series == flap.series)
                                .order_by(Alert.id.desc()).limit(1))
        flap.flapping_since, flap.changes = None, []
        if latest is not None:
            session.add(AlertChange(alert_id=latest.id, state="stable", at=now))
            ingest.notify(session, latest, "stable", hours=hours, now=now)
            told += 1
    session.commit()
    return told


def run(session: Session, data_dir: Any, hours: BusinessHours,
        absent_since: dict[int, dt.datetime], now: dt.datetime | None = None) -> None:
    """One round; a part that cannot reach its program raises Unavailable after the others
    have run."""
    now = now or utcnow()
    settle_flaps(session, hours, now)
    urls = local.StackUrls.load(data_dir)
    if urls is None:
        return  # no stack on this control plane (TENANTRY_MONITORING=false)
    failures: list[str] = []
    steps: list[Callable[[], object]] = [
        lambda: sync_rules(session, data_dir, urls),
        lambda: sync_silences(session, urls, now),
        lambda: reconcile(session, urls, hours, now, absent_since),
        lambda: record_silenced(session, urls, hours, now)]
    for step in steps:
        try:
            step()
        except (Unavailable, httpx.HTTPError) as exc:
            session.rollback()
            failures.append(exc.message if isinstance(exc, Unavailable) else str(exc))
    if failures:
        raise Unavailable("; ".join(failures))
