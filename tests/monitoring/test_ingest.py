"""The alert history and the outbox, in a real PostgreSQL: what Alertmanager posts becomes
alerts, changes and notifications; routing, dependencies, flap damping, grouping, retries.

Alertmanager's payloads are built here as it sends them (version 4); the channels are the
recording fake (the real SMTP and SMS adapters are tested in test_channels.py and end to end
in test_monitoring_live.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tenantry.core.notify import BusinessHours
from tenantry.monitoring import ingest, outbox, sync
from tenantry.monitoring.channels import DeliveryFailed, RecordingChannel
from tenantry.monitoring.models import Alert, AlertChange, Contact, Maintenance, Notification
from tenantry.monitoring.webhook import WebhookPayload
from tenantry.platforms.models import Platform
from tests.conftest import rolled_back, store_runtime

pytestmark = pytest.mark.slow

HOURS = BusinessHours.parse("Mon-Fri 08:00-18:00", "UTC")
MONDAY_NOON = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
SUNDAY_NIGHT = dt.datetime(2026, 11, 29, 23, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def store() -> Iterator[Any]:
    with store_runtime("tn-ingest-") as runtime:
        yield runtime


@pytest.fixture
def session(store: Any) -> Iterator[Session]:
    from tenantry.platforms.models import App, Host, Isv, Platform, Region, Release

    with rolled_back(store) as session:
        region = Region(id="g1", name="eu")
        host = Host(id="h1", name="node1", region=region, ingress_port=8443,
                    agent_token_hash="x" * 64)
        isv, other = Isv(id="i1", name="bms"), Isv(id="i2", name="acme")
        app = App(id="a1", isv=isv, name="bodyshop")
        release = Release(id="r1", app=app, version="1.0.0", digest="sha256:" + "ab" * 32,
                          manifest={})
        off = Platform(id="p1", isv=isv, name="lbh", region=region, release=release,
                       host=host, service_level="hands-off", state="ready")
        on = Platform(id="p2", isv=isv, name="dlg", region=region, release=release,
                      host=host, service_level="hands-on", state="ready")
        session.add_all([region, host, isv, other, app, release, off, on])
        session.flush()
        session.add_all([
            Contact(id="ct1", name="anna", isv_id="i1", email="anna@bms.example",
                    phone="+41790000001"),
            Contact(id="ct2", name="other", isv_id="i2", email="ops@acme.example"),
            Contact(id="noc1", name="noc", isv_id=None, email="noc@provider.example"),
        ])
        session.commit()
        yield session


def alert(check: str = "responding", *, status: str = "firing", platform: str = "bms/lbh",
          kind: str = "platform", level: str = "overloaded", fingerprint: str = "f1",
          starts: dt.datetime = MONDAY_NOON, ends: dt.datetime | None = None,
          value: str = "0") -> dict[str, Any]:
    labels = {"alertname": f"{check}_{level}", "check": check, "level": level, "kind": kind,
              "host": "node1", "region": "eu", "scope": "default"}
    if kind != "host":
        labels |= {"isv": platform.split("/")[0], "platform": platform}
    return {"status": status, "labels": labels,
            "annotations": {"summary": f"{check} ({level})", "value": value, "threshold": "1"},
            "startsAt": starts.isoformat(),
            "endsAt": (ends or dt.datetime(1, 1, 1, tzinfo=dt.UTC)).isoformat(),
            "fingerprint": fingerprint}


def post(session: Session, *alerts: dict[str, Any], now: dt.datetime = MONDAY_NOON) -> int:
    payload = WebhookPayload.model_validate({
        "version": "4", "groupKey": "g", "status": alerts[0]["status"], "receiver": "tenantry",
        "groupLabels": {}, "alerts": list(alerts)})
    return ingest.ingest(session, payload, hours=HOURS, now=now)


def notes(session: Session, **where: Any) -> list[tuple[str, str, str, str]]:
    rows = session.scalars(select(Notification).filter_by(**where).order_by(Notification.id))
    return [(n.state, n.channel, n.recipient, n.status) for n in rows]


def test_a_firing_alert_is_stored_and_routed_once(session: Session) -> None:
    assert post(session, alert()) == 1
    stored = session.scalars(select(Alert)).one()
    assert (stored.check, stored.level, stored.target, stored.platform_id, stored.isv_id) == \
        ("responding", "overloaded", "bms/lbh", "p1", "i1")
    # the ISV's contact by email and SMS, the NOC (hands-off: any hour); not the other ISV
    assert sorted(notes(session)) == [
        ("firing", "email", "anna@bms.example", "pending"),
        ("firing", "email", "noc@provider.example", "pending"),
        ("firing", "sms", "+41790000001", "pending")]
    # Alertmanager re-sends it, and Prometheus restarted gives it a new start: same episode
    assert post(session, alert(), now=MONDAY_NOON + dt.timedelta(seconds=30)) == 0
    assert post(session, alert(starts=MONDAY_NOON + dt.timedelta(minutes=2))) == 0
    assert session.scalar(select(func.count()).select_from(Alert)) == 1
    assert len(notes(session)) == 3


def test_resolution_tells_those_who_heard_it_fire(session: Session) -> None:
    post(session, alert())
    email = RecordingChannel("email")
    assert outbox.deliver(session, {"email": email},
                          now=MONDAY_NOON + ingest.GROUP_WAIT) == 2
    later = MONDAY_NOON + dt.timedelta(minutes=1)
    post(session, alert(status="resolved", ends=later), now=later)
    stored = session.scalars(select(Alert)).one()
    assert stored.ended_at == later
    assert [c.state for c in session.scalars(select(AlertChange).order_by(AlertChange.id))] \
        == ["firing", "resolved"]
    assert ("resolved", "email", "anna@bms.example", "pending") in notes(session)


def test_resolved_before_anyone_heard_it_fire_tells_nobody(session: Session) -> None:
    post(session, alert())
    soon = MONDAY_NOON + dt.timedelta(seconds=1)
    post(session, alert(status="resolved", ends=soon), now=soon)
    assert {n[3] for n in notes(session)} == {"suppressed"}
    assert not [n for n in notes(session) if n[0] == "resolved"]


def test_the_noc_hears_of_hands_on_platforms_in_business_hours_only(session: Session) -> None:
    post(session, alert(platform="bms/dlg", fingerprint="f2"), now=SUNDAY_NIGHT)
    assert {r for _, _, r, _ in notes(session)} == {"anna@bms.example", "+41790000001"}
    post(session, alert(platform="bms/dlg", fingerprint="f3"), now=MONDAY_NOON)
    assert "noc@provider.example" in {r for _, _, r, _ in notes(session)}


def test_a_contact_kept_to_business_hours_hears_nothing_at_night(session: Session) -> None:
    session.get(Contact, "ct1").hours = "business"  # type: ignore[union-attr]
    session.commit()
    post(session, alert(), now=SUNDAY_NIGHT)
    assert {r for _, _, r, _ in notes(session)} == {"noc@provider.example"}


def test_a_silent_host_explains_what_runs_on_it(session: Session) -> None:
    # the platform's alert arrives first, then the host's heartbeat: the platform's pending
    # notifications are held back, and later alerts on the host are stored as suppressed
    post(session, alert(fingerprint="p"))
    post(session, alert("heartbeat", kind="host", fingerprint="h"))
    post(session, alert("db_up", kind="database", fingerprint="d"))
    by_check = {a.check: a for a in session.scalars(select(Alert))}
    assert by_check["responding"].suppressed and by_check["db_up"].suppressed
    assert by_check["heartbeat"].suppressed is None
    told = notes(session, status="pending")
    assert told and {n[0] for n in told} == {"firing"}
    heartbeat = session.scalars(select(Notification).where(
        Notification.alert_id == by_check["heartbeat"].id)).first()
    assert heartbeat is not None and "held back" in heartbeat.body
    assert not notes(session, alert_id=by_check["db_up"].id)


def test_flapping_is_told_once_and_stable_once(session: Session) -> None:
    """A check crossing its clear threshold every evaluation (5 s) for 30 minutes, the
    outbox delivering as often as the worker runs it: 4 messages instead of 360."""
    t = MONDAY_NOON
    channels = {"email": RecordingChannel(), "sms": RecordingChannel("sms")}
    for i in range(360):
        firing = i % 2 == 0
        post(session, alert(status="firing" if firing else "resolved", fingerprint="flap",
                            starts=t if firing else t - dt.timedelta(seconds=5),
                            ends=None if firing else t), now=t)
        for second in range(5):
            outbox.deliver(session, channels, now=t + dt.timedelta(seconds=second))
        t += dt.timedelta(seconds=5)
    sync.settle_flaps(session, HOURS, t)  # not quiet yet
    quiet = t + ingest.STABLE_AFTER + dt.timedelta(seconds=1)
    sync.settle_flaps(session, HOURS, quiet)
    told = [n for n in notes(session) if n[1] == "email" and n[2] == "anna@bms.example"
            and n[3] != "suppressed"]
    assert [n[0] for n in told] == ["firing", "resolved", "flapping", "stable"]
    assert session.scalar(select(func.count()).select_from(Alert)) == 180  # all in history


def test_the_outbox_groups_retries_and_gives_up(session: Session) -> None:
    post(session, alert(fingerprint="a"), alert("response_time", fingerprint="b"))
    email = RecordingChannel("email")
    due = MONDAY_NOON + ingest.GROUP_WAIT
    email.fail_next(DeliveryFailed("SMTP server down", retry=True))
    assert outbox.deliver(session, {"email": email}, now=due) == 2  # NOC's went, anna's failed
    first = [m for m in email.attempts if m.to == "anna@bms.example"]
    assert len(first) == 1 and "2 alerts" in first[0].subject  # one message for the platform
    assert outbox.deliver(session, {"email": email}, now=due) == 0  # backing off
    later = due + outbox.backoff(1)
    assert outbox.deliver(session, {"email": email}, now=later) == 2
    assert [m.to for m in email.sent].count("anna@bms.example") == 1
    assert outbox.deliver(session, {"email": email}, now=later + dt.timedelta(hours=1)) == 0
    # SMS: the gateway refuses for good (a bad number): failed, not retried
    sms = RecordingChannel("sms")
    sms.fail_next(DeliveryFailed("gateway refused the number", retry=False))
    assert outbox.deliver(session, {"sms": sms}, now=due) == 0
    assert {n[3] for n in notes(session, channel="sms")} == {"failed"}


def test_nothing_delivered_for_24_hours_expires(session: Session) -> None:
    post(session, alert())
    down = RecordingChannel("email")
    t = MONDAY_NOON + ingest.GROUP_WAIT
    while t < MONDAY_NOON + dt.timedelta(hours=25):
        down.fail_next(DeliveryFailed("down", retry=True), DeliveryFailed("down", retry=True))
        outbox.deliver(session, {"email": down}, now=t)
        t += dt.timedelta(minutes=10)
    assert {n[3] for n in notes(session, channel="email")} == {"expired"}
    assert not down.sent


def test_a_maintenance_window_silences_and_is_announced(session: Session) -> None:
    window = Maintenance(id="mw1", scope="host", target="node1", isv_id=None,
                         starts_at=MONDAY_NOON - dt.timedelta(hours=1),
                         ends_at=MONDAY_NOON + dt.timedelta(hours=1), message="kernel update",
                         created_by="ops")
    session.add(window)
    session.flush()
    assert ingest.announce_maintenance(session, window, now=MONDAY_NOON) == 3
    session.commit()
    announced = {r for _, _, r, _ in notes(session, state="announced")}
    assert announced == {"anna@bms.example", "+41790000001", "noc@provider.example"}
    post(session, alert())
    stored = session.scalars(select(Alert)).one()
    assert stored.maintenance_id == "mw1"
    assert not notes(session, alert_id=stored.id)


def test_only_those_who_heard_it_fire_hear_it_end(session: Session) -> None:
    """A contact added while the alert was open (or who was outside their hours when it
    fired) is not told of its end."""
    session.get(Contact, "ct1").hours = "business"  # type: ignore[union-attr]
    session.commit()
    post(session, alert(), now=SUNDAY_NIGHT)  # anna is off duty: only the NOC hears it
    outbox.deliver(session, {"email": RecordingChannel(), "sms": RecordingChannel("sms")},
                   now=SUNDAY_NIGHT + ingest.GROUP_WAIT)
    session.add(Contact(id="ct9", name="new", isv_id="i1", email="new@bms.example"))
    session.commit()
    post(session, alert(status="resolved", ends=MONDAY_NOON), now=MONDAY_NOON)
    assert {r for s, _, r, _ in notes(session) if s == "resolved"} == {"noc@provider.example"}


def test_an_isv_sees_the_host_alerts_of_the_hosts_it_runs_on(session: Session) -> None:
    from tenantry.access.principal import Principal
    from tenantry.core.errors import NotFound
    from tenantry.monitoring import service

    post(session, alert("cpu", kind="host", level="busy", fingerprint="h", value="91"))
    post(session, alert(fingerprint="p"))
    bms = Principal(user_id="u1", username="ann", role="isv-viewer", isv_id="i1")
    acme = Principal(user_id="u2", username="bob", role="isv-admin", isv_id="i2")
    noc = Principal(user_id="u0", username="root", role="provider-operator")
    host_alert = session.scalars(select(Alert).where(Alert.check == "cpu")).one()

    seen = service.list_alerts(session=session, principal=bms)
    assert {(a.check, a.kind) for a in seen} == {("cpu", "host"), ("responding", "platform")}
    assert {a.recipient for a in service.get_alert(
        session=session, principal=bms, alert_id=host_alert.id).notifications} <= {
        service.NOC}, "the provider's own contacts are not named to an ISV"
    assert [a.check for a in service.list_alerts(session=session, principal=bms,
                                                 host="node1")] == ["responding", "cpu"]
    # acme runs nothing on node1: neither alert exists for it
    assert service.list_alerts(session=session, principal=acme) == []
    with pytest.raises(NotFound):
        service.get_alert(session=session, principal=acme, alert_id=host_alert.id)
    assert len(service.list_alerts(session=session, principal=noc)) == 2
    # bms's platforms leave node1: its host alerts are no longer bms's business
    session.execute(update(Platform).values(state="destroyed"))
    assert [a.check for a in service.list_alerts(session=session, principal=bms)] == [
        "responding"]
