"""Billing's use cases against a real PostgreSQL: usage counted once, plans and their
versions, subscriptions, invoices issued once and exact to the penny, late usage adjusted,
another ISV's billing invisible, the PDF and the CSV.

The worked example in docs/billing.md is `test_the_worked_example_to_the_penny`.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tenantry.access.principal import Principal
from tenantry.billing import pdf, service
from tenantry.billing.models import Invoice, Plan, UsageEvent
from tenantry.billing.schemas import SubscriptionCreate, UsageBatch
from tenantry.core.errors import Conflict, InvalidInput, NotAllowed, NotFound, Unauthenticated
from tests.billing.plans import standard
from tests.conftest import rolled_back, store_runtime

pytestmark = pytest.mark.slow

ADMIN = Principal(user_id="u0", username="root", role="provider-admin")
BMS = Principal(user_id="u1", username="ann", role="isv-admin", isv_id="i1")
BMS_VIEWER = Principal(user_id="u3", username="vic", role="isv-viewer", isv_id="i1")
ACME = Principal(user_id="u2", username="bob", role="isv-admin", isv_id="i2")
KEY = b"k" * 32
UTC = dt.UTC


@pytest.fixture(scope="module")
def store() -> Iterator[Any]:
    with store_runtime("tn-billing-") as runtime:
        yield runtime


@pytest.fixture
def session(store: Any) -> Iterator[Session]:
    with rolled_back(store) as session:
        _seed(session)
        session.commit()
        yield session


def _seed(session: Session) -> None:
    from tenantry.platforms.models import (
        App,
        Host,
        Isv,
        Platform,
        Region,
        Release,
        Tenant,
        platform_tenants,
    )

    region = Region(id="g1", name="eu")
    host = Host(id="h1", name="node1", region=region, ingress_port=8443,
                agent_token_hash="x" * 64)
    bms, acme = Isv(id="i1", name="bms"), Isv(id="i2", name="acme")
    app = App(id="a1", isv=bms, name="bodyshop")
    release = Release(id="r1", app=app, version="1.0.0", digest="sha256:" + "ab" * 32,
                      manifest={})
    lbh = Platform(id="p1", isv=bms, name="lbh", region=region, release=release, host=host,
                   state="ready", created_at=dt.datetime(2026, 9, 1, tzinfo=UTC))
    dlg = Platform(id="p2", isv=bms, name="dlg", region=region, release=release, host=host,
                   state="ready", created_at=dt.datetime(2026, 11, 16, 9, tzinfo=UTC))
    app2 = App(id="a2", isv=acme, name="crm")
    release2 = Release(id="r2", app=app2, version="1.0.0", digest="sha256:" + "cd" * 32,
                       manifest={})
    crm = Platform(id="p3", isv=acme, name="crm", region=region, release=release2,
                   host=host, state="ready", created_at=dt.datetime(2026, 9, 1, tzinfo=UTC))
    session.add_all([region, host, bms, acme, app, release, lbh, dlg, app2, release2, crm])
    session.add_all([Tenant(id="t1", isv_id="i1", name="leeds"),
                     Tenant(id="t2", isv_id="i1", name="york"),
                     Tenant(id="t3", isv_id="i2", name="north")])
    session.flush()
    session.execute(platform_tenants.insert(), [
        {"platform_id": "p1", "tenant_id": "t1"}, {"platform_id": "p1", "tenant_id": "t2"},
        {"platform_id": "p2", "tenant_id": "t1"}, {"platform_id": "p3", "tenant_id": "t3"}])


def ev(i: int | str, user: str, when: str, tenant: str = "leeds") -> dict[str, str]:
    return {"id": f"e{i}", "tenant": tenant, "user": user, "time": when}


def send(session: Session, platform: str, *events: Any, by: Principal = BMS,
         as_body: bool = False) -> Any:
    """A batch as a test shapes it, or (`as_body`) as the API passes it: the request's
    bytes, which billing validates in one pass when every event is well formed."""
    batch = {"platform": platform, "events": list(events)}
    return service.ingest(session=session, key=KEY, principal=by,
                          batch=json.dumps(batch).encode() if as_body else UsageBatch(**batch))


def subscribe(session: Session, isv: str = "bms", **over: Any) -> Any:
    service.apply_plan(session=session, principal=ADMIN, document=standard())
    spec = SubscriptionCreate(**{"plan": "standard", "term": "12m", "min_users": 10,
                                 "start": dt.date(2026, 10, 1), "tax_rate": "20", **over})
    return service.create_subscription(session=session, principal=ADMIN, isv=isv, spec=spec,
                                       today=dt.date(2026, 10, 1))


NOV = "2026-11-{:02d}T12:00:00Z"
DEC1 = dt.datetime(2026, 12, 1, 0, 5, tzinfo=UTC)


def november_usage(session: Session) -> None:
    # 6 distinct users: ann..eve under leeds, and ann again under york (another tenant:
    # another user); ann at leeds is active on both platforms and on many days
    send(session, "bms/lbh", *(ev(f"l{i}", u, NOV.format(d)) for i, (u, d) in enumerate(
        [("ann", 2), ("ann", 3), ("bob", 4), ("cat", 5), ("dan", 6), ("eve", 7)])),
        ev("y1", "ann", NOV.format(8), "york"))
    send(session, "bms/dlg", ev("d1", "ann", NOV.format(20)), ev("d2", "bob", NOV.format(21)))


# ------------------------------------------------------------------ usage


def test_usage_is_counted_once_however_often_it_is_sent(session: Session) -> None:
    subscribe(session)
    batch = [ev(1, "ann", NOV.format(2)), ev(2, "bob", NOV.format(2)),
             ev(1, "ann", NOV.format(2))]
    first = send(session, "bms/lbh", *batch)
    assert (first.accepted, first.duplicates, first.refused) == (2, 1, 0)
    for _ in range(3):  # a client retrying three times over
        again = send(session, "bms/lbh", *batch)
        assert (again.accepted, again.duplicates, again.refused) == (0, 3, 0)
    assert session.scalar(select(func.count()).select_from(UsageEvent)) == 2
    # the same id on another platform is another event
    assert send(session, "bms/dlg", ev(1, "ann", NOV.format(2))).accepted == 1


@pytest.mark.parametrize("as_body", [False, True], ids=["shaped", "body"])
def test_each_refused_event_is_named_with_its_field_and_nothing_of_it_is_stored(
        session: Session, as_body: bool) -> None:
    subscribe(session)
    now = dt.datetime.now(UTC)
    got = send(session, "bms/lbh",
               ev(1, "ann", NOV.format(2)),
               ev(2, "ann", NOV.format(2), tenant="north"),  # acme's tenant
               ev(3, "ann", (now + dt.timedelta(minutes=10)).isoformat()),
               ev(4, "ann", "2026-08-01T00:00:00Z"),  # before the start minus 30 days
               ev(5, "ann", "yesterday"),
               ev(6, "ann", "2026-11-02T12:00:00"),  # no time zone
               {"id": "e7", "tenant": "leeds", "time": NOV.format(2)},  # no user
               {"id": "e8", "tenant": "leeds", "user": "x", "time": NOV.format(2), "n": 1},
               "not an object",
               ev(9, "bob", (now + dt.timedelta(minutes=4)).isoformat()),
               ev("10\x01", "cat", NOV.format(2)), as_body=as_body)  # a control character
    assert (got.accepted, got.duplicates, got.refused) == (2, 0, 9)
    fields = {r.index: r.field for r in got.refusals}
    assert fields == {1: "events[1].tenant", 2: "events[2].time", 3: "events[3].time",
                      4: "events[4].time", 5: "events[5].time", 6: "events[6].user",
                      7: "events[7].n", 8: "events[8]", 10: "events[10].id"}
    assert "not served" in got.refusals[0].reason
    assert {r.id for r in got.refusals} == {"e2", "e3", "e4", "e5", "e6", "e7", "e8", None,
                                            "e10\x01"}
    stored = set(session.scalars(select(UsageEvent.event_id)))
    assert stored == {"e1", "e9"}


def test_user_strings_are_kept_only_as_a_keyed_hash(session: Session) -> None:
    subscribe(session)
    send(session, "bms/lbh", ev(1, "ann@customer.example", NOV.format(2)))
    row = session.scalars(select(UsageEvent)).one()
    assert b"ann" not in row.user_hash and len(row.user_hash) == 16
    assert row.user_hash != service.usage.user_hash(KEY, "i2", "ann@customer.example"), \
        "the same user string of another ISV is another value"


def test_a_usage_token_sends_for_its_platform_only(session: Session) -> None:
    subscribe(session)
    made = service.issue_usage_token(session=session, principal=BMS, ref="bms/lbh")
    assert made.platform == "bms/lbh" and made.token.startswith("tnu_")
    platform_id = service.usage_platform(session, made.token)
    ok = service.ingest(session=session, key=KEY, token_platform=platform_id,
                        batch=UsageBatch(events=[ev(1, "ann", NOV.format(2))]))
    assert ok.accepted == 1 and ok.platform == "bms/lbh"
    with pytest.raises(NotAllowed):
        service.ingest(session=session, key=KEY, token_platform=platform_id,
                       batch=UsageBatch(platform="bms/dlg", events=[ev(2, "a", NOV.format(2))]))
    with pytest.raises(Unauthenticated):
        service.usage_platform(session, "tnu_guessed")
    with pytest.raises(NotFound):  # acme's people cannot mint one for bms
        service.issue_usage_token(session=session, principal=ACME, ref="bms/lbh")
    with pytest.raises(NotAllowed):  # nor can a viewer send
        send(session, "bms/lbh", ev(3, "ann", NOV.format(2)), by=BMS_VIEWER)
    with pytest.raises(NotFound):
        send(session, "bms/lbh", ev(4, "ann", NOV.format(2)), by=ACME)
    assert session.scalar(select(func.count()).select_from(UsageEvent)) == 1


def test_a_well_formed_body_is_stored_as_its_shaped_twin(session: Session) -> None:
    """The API's fast path (the body's bytes, validated in one pass) stores what the shaped
    path stores: the same events, times in UTC whatever zone they came in, and a control
    character anywhere in an id still refuses that event alone."""
    subscribe(session)
    got = send(session, "bms/lbh", ev(1, "ann", "2026-11-02T13:30:00+01:30"),
               ev(2, "bob", NOV.format(2)), ev(1, "ann", NOV.format(3)), as_body=True)
    assert (got.accepted, got.duplicates, got.refused) == (2, 1, 0)
    row = session.get(UsageEvent, ("p1", "e1"))
    assert row is not None and row.time == dt.datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    assert row.user_hash == service.usage.user_hash(KEY, "i1", "ann")
    again = send(session, "bms/lbh", ev(1, "ann", NOV.format(2)), ev(3, "cat", NOV.format(2)),
                 as_body=True)
    assert (again.accepted, again.duplicates, again.refused) == (1, 1, 0)


@pytest.mark.parametrize(("body", "field"), [
    (b"{not json", "body"),
    (b"\xff\xfe", "body"),
    (b"[]", None),
    (b'{"events": []}', "events"),
    (json.dumps({"events": [{}] * 10_001}).encode(), "events"),
    (b'{"events": [{"id": "e1"}], "extra": 1}', "extra"),
])
def test_a_body_of_the_wrong_shape_is_refused_whole(session: Session, body: bytes,
                                                    field: str | None) -> None:
    subscribe(session)
    with pytest.raises(InvalidInput) as refused:
        service.ingest(session=session, key=KEY, principal=BMS, batch=body)
    assert refused.value.field == field
    assert session.scalar(select(func.count()).select_from(UsageEvent)) == 0


def test_a_revoked_usage_token_sends_nothing_more(session: Session) -> None:
    """Rotation: a second token, then the first revoked; listed by id, never by token; the
    revocation is audited; another ISV's tokens cannot be listed or revoked."""
    from tenantry.access.audit.models import AuditEntry

    subscribe(session)
    old = service.issue_usage_token(session=session, principal=BMS, ref="bms/lbh")
    new = service.issue_usage_token(session=session, principal=BMS, ref="bms/lbh")
    listed = service.list_usage_tokens(session=session, principal=BMS, ref="bms/lbh")
    assert sorted(t.id for t in listed) == sorted([old.id, new.id])
    assert all(t.revoked_at is None and t.platform == "bms/lbh" for t in listed)
    assert old.token not in repr(listed) and new.token not in repr(listed)
    gone = service.revoke_usage_token(session=session, principal=BMS, ref="bms/lbh",
                                      token_id=old.id)
    assert gone.id == old.id and gone.revoked_at is not None
    with pytest.raises(Unauthenticated):
        service.usage_platform(session, old.token)
    assert service.usage_platform(session, new.token) == "p1"
    again = service.revoke_usage_token(session=session, principal=BMS, ref="bms/lbh",
                                       token_id=old.id)
    assert again.revoked_at == gone.revoked_at, "revoking twice changes nothing"
    revocations = session.scalars(select(AuditEntry).where(
        AuditEntry.action == "usage.token.revoke")).all()
    assert [(e.actor, e.target) for e in revocations] == [("ann", "bms/lbh")]
    for token_id in ("nosuch", new.id[:6], "%" * 12, old.id.upper()):
        with pytest.raises(NotFound):
            service.revoke_usage_token(session=session, principal=BMS, ref="bms/lbh",
                                       token_id=token_id)
    with pytest.raises(NotFound):  # the token of another platform of the same ISV
        service.revoke_usage_token(session=session, principal=BMS, ref="bms/dlg",
                                   token_id=new.id)
    with pytest.raises(NotFound):  # acme's admin: bms's platform does not exist
        service.list_usage_tokens(session=session, principal=ACME, ref="bms/lbh")
    with pytest.raises(NotFound):
        service.revoke_usage_token(session=session, principal=ACME, ref="bms/lbh",
                                   token_id=new.id)
    with pytest.raises(NotAllowed):  # bms's viewer may not
        service.list_usage_tokens(session=session, principal=BMS_VIEWER, ref="bms/lbh")
    with pytest.raises(NotAllowed):
        service.revoke_usage_token(session=session, principal=BMS_VIEWER, ref="bms/lbh",
                                   token_id=new.id)
    assert service.usage_platform(session, new.token) == "p1"


def test_a_batch_holds_one_to_ten_thousand_events() -> None:
    for events in ([], [{}] * 10_001):
        with pytest.raises(ValidationError):
            UsageBatch(platform="bms/lbh", events=events)
    UsageBatch(platform="bms/lbh", events=[{}] * 10_000)


# ------------------------------------------------------------------ plans


def test_a_changed_plan_is_a_new_version_and_subscriptions_keep_theirs(
        session: Session) -> None:
    first = service.apply_plan(session=session, principal=ADMIN, document=standard())
    assert (first.version, first.changed) == (1, True)
    same = service.apply_plan(session=session, principal=ADMIN, document=standard())
    assert (same.version, same.changed) == (1, False)
    sub = service.create_subscription(
        session=session, principal=ADMIN, isv="bms", today=dt.date(2026, 10, 1),
        spec=SubscriptionCreate(plan="standard", term="12m", start=dt.date(2026, 10, 1)))
    changed = service.apply_plan(session=session, principal=ADMIN,
                                 document=standard(platform_fee="60.00"))
    assert (changed.version, changed.changed) == (2, True)
    kept = service.list_subscriptions(session=session, principal=BMS)
    assert [(s.id, s.plan_version) for s in kept] == [(sub.id, 1)]
    with pytest.raises(NotAllowed):
        service.apply_plan(session=session, principal=BMS, document=standard())


BAD_PLANS: list[tuple[dict[str, Any], str]] = [
    (standard(platform_fee="-1"), "platform_fee"),
    (standard(platform_fee="fifty"), "platform_fee"),
    (standard(platform_fee=50.0), "platform_fee"),  # a float: not exact
    (standard(currency="XYZ"), "currency"),
    (standard(name="Bad Name"), "name"),
    (standard(users={"model": "graduated", "tiers": [{"up_to": 30, "price": "1"},
                                                     {"up_to": 3, "price": "2"},
                                                     {"price": "3"}]}), "users.tiers"),
    (standard(users={"model": "graduated", "tiers": [{"up_to": 3, "price": "1"}]}),
     "users.tiers"),
    (standard(users={"model": "graduated", "tiers": [{"up_to": 3, "price": "-2"},
                                                     {"price": "1"}]}), "users.tiers.0.price"),
    (standard(users={"model": "tiered", "tiers": [{"price": "1"}]}), "users.model"),
    (standard(terms={"5x": "1"}), "terms"),
    (standard(terms={"12m": "101"}), "terms"),
    (standard(terms={"12m": "15", "1y": "10"}), "terms"),
    (standard(extra="x"), "extra"),
]


@pytest.mark.parametrize(("document", "field"), BAD_PLANS)
def test_a_bad_plan_is_refused_by_field_and_nothing_is_stored(
        session: Session, document: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        service.apply_plan(session=session, principal=ADMIN, document=document)
    assert refused.value.field == field, refused.value
    assert session.scalar(select(func.count()).select_from(Plan)) == 0


# ------------------------------------------------------------------ subscriptions


def test_subscription_input_is_checked(session: Session) -> None:
    for bad in ({"tax_rate": "101"}, {"tax_rate": "99999999"}, {"tax_rate": "-1"},
                {"min_users": -1}, {"term": "5x"}, {"tax_rate": "abc"}):
        with pytest.raises(ValidationError):
            SubscriptionCreate(**{"plan": "standard", "term": "12m", **bad})
    service.apply_plan(session=session, principal=ADMIN, document=standard())
    with pytest.raises(InvalidInput) as refused:  # a term the plan does not offer
        service.create_subscription(session=session, principal=ADMIN, isv="bms",
                                    spec=SubscriptionCreate(plan="standard", term="24m"))
    assert refused.value.field == "term"
    with pytest.raises(NotFound):
        service.create_subscription(session=session, principal=ADMIN, isv="bms",
                                    spec=SubscriptionCreate(plan="gold", term="12m"))


def test_a_renewal_starts_on_the_first_of_next_month(session: Session) -> None:
    first = subscribe(session)
    assert (first.start, first.end) == (dt.date(2026, 10, 1), dt.date(2027, 10, 1))
    renewal = service.create_subscription(
        session=session, principal=ADMIN, isv="bms", today=dt.date(2026, 11, 17),
        spec=SubscriptionCreate(plan="standard", term="36m"))
    assert (renewal.start, renewal.end) == (dt.date(2026, 12, 1), dt.date(2029, 12, 1))
    subs = service.list_subscriptions(session=session, principal=ADMIN, isv="bms")
    assert [(s.start, s.end) for s in subs] == [(dt.date(2026, 10, 1), dt.date(2026, 12, 1)),
                                               (dt.date(2026, 12, 1), dt.date(2029, 12, 1))]
    with pytest.raises(Conflict):
        service.create_subscription(
            session=session, principal=ADMIN, isv="bms", today=dt.date(2026, 11, 18),
            spec=SubscriptionCreate(plan="standard", term="1m"))


# ------------------------------------------------------------------ invoices


def test_the_worked_example_to_the_penny(session: Session) -> None:
    subscribe(session)
    november_usage(session)
    [inv] = service.run_invoices(session=session, principal=ADMIN, period="2026-11", now=DEC1)
    assert (inv.isv, inv.period, inv.currency, inv.active_users) == ("bms", "2026-11", "GBP", 6)
    assert [(x.description, x.quantity, x.unit_price, x.amount) for x in inv.lines] == [
        ("Active users 1-3 (graduated)", "3", "30.00", "90.00"),
        ("Active users 4-6 (graduated)", "3", "25.00", "75.00"),
        ("Commitment shortfall, users 7-10 of 10", "4", "25.00", "100.00"),
        ("Commitment discount, 12m term (15 %)", "1", None, "-39.75"),
        ("Platform bms/dlg: 15 of 30 days at 50.00 a month", "15", "1.67", "25.00"),
        ("Platform bms/lbh: 30 of 30 days at 50.00 a month", "30", "1.67", "50.00"),
    ]
    assert (inv.subtotal, inv.tax, inv.total) == ("300.25", "60.05", "360.30")
    assert Decimal(inv.subtotal) == sum(Decimal(x.amount) for x in inv.lines)
    # docs/billing.md shows this invoice: the same, to the penny
    doc = (Path(__file__).resolve().parents[2] / "docs" / "billing.md").read_text()
    block = doc.split("```invoice\n", 1)[1].split("```", 1)[0].splitlines()
    shown = [tuple(cell.strip() or None for cell in row.split("|")) for row in block
             if "|" in row]
    assert shown == [(x.description, x.quantity, x.unit_price, x.amount) for x in inv.lines]
    assert [row for row in block if "|" not in row] == [
        f"subtotal {inv.subtotal}", f"tax {inv.tax}", f"total {inv.total}"]


def test_an_issued_invoice_never_changes_and_a_rerun_makes_nothing(session: Session) -> None:
    subscribe(session)
    november_usage(session)
    first = service.run_invoices(session=session, principal=ADMIN, period="2026-11", now=DEC1)
    november_usage(session)  # every event replayed
    again = service.run_invoices(session=session, principal=ADMIN, period="2026-11",
                                 now=DEC1 + dt.timedelta(days=3))
    assert [i.model_dump() for i in again] == [i.model_dump() for i in first]
    assert session.scalar(select(func.count()).select_from(Invoice)) == 1
    # the replay did not add late usage either: December adjusts nothing
    [dec] = service.run_invoices(session=session, principal=ADMIN, period="2026-12",
                                 now=dt.datetime(2027, 1, 1, tzinfo=UTC))
    assert not [x for x in dec.lines if x.description.startswith("Adjustment")]


def test_late_usage_is_billed_next_month_once(session: Session) -> None:
    subscribe(session)
    november_usage(session)
    [nov] = service.run_invoices(session=session, principal=ADMIN, period="2026-11", now=DEC1)
    # five more November users arrive after November was issued
    send(session, "bms/lbh", *(ev(f"late{i}", f"u{i}", NOV.format(28)) for i in range(5)))
    assert service.get_invoice(session=session, principal=BMS, invoice_id=nov.id) == nov
    [dec] = service.run_invoices(session=session, principal=ADMIN, period="2026-12",
                                 now=dt.datetime(2027, 1, 1, tzinfo=UTC))
    late = [x for x in dec.lines if x.description.startswith("Adjustment")]
    # 11 users (90 + 8 x 25 = 290) against the 10 committed ones billed (265), less 15 %
    assert [(x.description, x.amount) for x in late] == [
        ("Adjustment for 2026-11: 5 more active users reported late (6 billed, 11 now)",
         "21.25")]
    [jan] = service.run_invoices(session=session, principal=ADMIN, period="2027-01",
                                 now=dt.datetime(2027, 2, 1, tzinfo=UTC))
    assert not [x for x in jan.lines if x.description.startswith("Adjustment")], "once"


def test_a_month_not_ended_is_refused_but_projected(session: Session) -> None:
    subscribe(session)
    november_usage(session)
    with pytest.raises(InvalidInput) as refused:
        service.run_invoices(session=session, principal=ADMIN, period="2026-11",
                             now=dt.datetime(2026, 11, 30, 23, 59, tzinfo=UTC))
    assert refused.value.field == "period"
    with pytest.raises(InvalidInput):
        service.run_invoices(session=session, principal=ADMIN, period="2026-13")
    service.sync_ledger(session)  # the periodic task's work
    seen = service.projection(session=session, principal=BMS, isv="bms", period="2026-11",
                              now=dt.datetime(2026, 11, 30, tzinfo=UTC))
    assert seen.projection and seen.issued_at is None and seen.active_users == 6
    assert seen.total == "360.30"
    assert session.scalar(select(func.count()).select_from(Invoice)) == 0


def test_another_isvs_billing_does_not_exist_for_you(session: Session) -> None:
    subscribe(session)
    november_usage(session)
    [inv] = service.run_invoices(session=session, principal=ADMIN, period="2026-11", now=DEC1)
    assert service.list_invoices(session=session, principal=ACME) == []
    assert service.list_subscriptions(session=session, principal=ACME) == []
    for call in (lambda: service.get_invoice(session=session, principal=ACME,
                                             invoice_id=inv.id),
                 lambda: service.projection(session=session, principal=ACME, isv="bms"),
                 lambda: service.active_users_csv(session=session, principal=ACME, isv="bms",
                                                  period="2026-11")):
        with pytest.raises(NotFound):
            call()
    assert [i.id for i in service.list_invoices(session=session, principal=BMS_VIEWER)] == [
        inv.id]
    with pytest.raises(NotAllowed):
        service.run_invoices(session=session, principal=BMS, period="2026-11")


@pytest.mark.parametrize("synced", [True, False], ids=["in-ledger", "not-yet-in-ledger"])
def test_active_users_per_platform_and_tenant_as_csv(session: Session, synced: bool) -> None:
    """Platforms by name, whether or not billing's ledger (synced every minute) has them."""
    subscribe(session)
    november_usage(session)
    if synced:
        service.sync_ledger(session)
    text = service.active_users_csv(session=session, principal=BMS, isv="bms",
                                    period="2026-11")
    assert text.splitlines() == [
        "period,platform,tenant,active_users",
        "2026-11,bms/dlg,leeds,2",
        "2026-11,bms/lbh,leeds,5",
        "2026-11,bms/lbh,york,1",
    ]


def test_the_pdf_is_the_same_bytes_every_time_and_reads_back(session: Session) -> None:
    from pypdf import PdfReader

    subscribe(session)
    november_usage(session)
    [inv] = service.run_invoices(session=session, principal=ADMIN, period="2026-11", now=DEC1)
    shown = service.get_invoice(session=session, principal=BMS, invoice_id=inv.id)
    first, second = pdf.render(shown), pdf.render(
        service.get_invoice(session=session, principal=ADMIN, invoice_id=inv.id))
    assert first == second and first.startswith(b"%PDF-1.4")
    reader = PdfReader(io.BytesIO(first), strict=True)
    words = " ".join(page.extract_text() for page in reader.pages)
    for expected in (inv.id, "bms - 2026-11", "Commitment shortfall", "-39.75", "360.30",
                     "Platform bms/dlg"):
        assert expected in words, (expected, words)


def test_a_long_invoice_runs_over_pages() -> None:
    from pypdf import PdfReader

    from tenantry.billing.schemas import InvoiceLine, InvoicePublic

    lines = [InvoiceLine(description=f"Platform acme/p{i} (\u00a3 \u20ac \u4e2d)",
                         quantity="30", unit_price="1.67", amount="50.00") for i in range(120)]
    inv = InvoicePublic(id="in1", isv="acme", period="2026-11", currency="GBP", lines=lines,
                        subtotal="6000.00", tax="0.00", total="6000.00", tax_rate="0",
                        active_users=0, issued_at=DEC1)
    reader = PdfReader(io.BytesIO(pdf.render(inv)), strict=True)
    assert len(reader.pages) == 3
    text = " ".join(p.extract_text() for p in reader.pages)
    assert "acme/p119" in text and "6000.00" in text and "\u00a3 \u20ac ?" in text


def test_the_migration_makes_exactly_the_billing_tables(store: Any) -> None:
    from tenantry.app import metadata

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata())
    ours = [d for d in diff if "billing" in repr(d)]
    assert ours == []


def test_an_invoice_waits_for_usage_in_flight_and_counts_it() -> None:
    """The race between a usage batch and the invoice of its month, made slow on purpose:
    a batch inserted but not yet committed when the run begins is billed in that invoice,
    not lost between it and the next."""
    import threading

    from tenantry.billing import usage

    with store_runtime("tn-billing-race-") as runtime:
        with runtime.sessions() as setup:
            _seed(setup)
            setup.commit()
            subscribe(setup)
            november_usage(setup)
        slow = runtime.sessions()
        slow_session = slow.__enter__()
        # a batch of two new November users, inserted and held open
        rows = usage.Rows([f"slow{i}" for i in range(2)], ["leeds"] * 2,
                          [usage.user_hash(KEY, "i1", f"late{i}") for i in range(2)],
                          [dt.datetime(2026, 11, 20, tzinfo=UTC)] * 2)
        assert usage.insert(slow_session, platform_id="p1", isv_id="i1", rows=rows) == 2
        done: list[Any] = []

        def run() -> None:
            with runtime.sessions() as s:
                done.extend(service.run_invoices(session=s, principal=ADMIN,
                                                 period="2026-11"))

        runner = threading.Thread(target=run)
        runner.start()
        runner.join(2.0)
        assert runner.is_alive(), "the invoice waits for the batch in flight"
        slow_session.commit()
        slow.__exit__(None, None, None)
        runner.join(30)
        assert not runner.is_alive()
        [inv] = done
        assert inv.active_users == 8, "the batch's two users are in November's invoice"
        runtime.engine.dispose()


event_strategy = st.lists(
    st.tuples(st.integers(0, 40), st.sampled_from(["leeds", "york"]),
              st.sampled_from(["ann", "bob", "cat", "dan", "eve", "fay", "gus"]),
              st.integers(1, 30)),
    min_size=1, max_size=60)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=event_strategy, replays=st.lists(st.integers(0, 59), max_size=30),
       min_users=st.integers(0, 12))
def test_replays_and_reruns_never_change_a_bill(store: Any, events: list[Any],
                                               replays: list[int], min_users: int) -> None:
    """Whatever is sent, and however often parts of it are sent again, before or after the
    run: the bill counts each distinct (tenant, user) of the month once, and a second run
    returns the same invoice."""
    with rolled_back(store) as session:
        _seed(session)
        session.commit()
        subscribe(session, min_users=min_users)
        batch = [ev(i, user, NOV.format(day), tenant) for i, tenant, user, day in events]
        send(session, "bms/lbh", *batch)
        if replays:
            send(session, "bms/lbh", *[batch[r % len(batch)] for r in replays])
        # the same id with other content is the same event: ignored
        send(session, "bms/lbh", *[{**e, "user": "zed"} for e in batch[:3]])
        [inv] = service.run_invoices(session=session, principal=ADMIN, period="2026-11",
                                     now=DEC1)
        firsts: dict[int, tuple[str, str]] = {}
        for i, tenant, user, _ in events:
            firsts.setdefault(i, (tenant, user))
        assert inv.active_users == len(set(firsts.values()))
        send(session, "bms/lbh", *batch)
        [again] = service.run_invoices(session=session, principal=ADMIN, period="2026-11",
                                       now=DEC1 + dt.timedelta(days=1))
        assert again == inv
        [dec] = service.run_invoices(session=session, principal=ADMIN, period="2026-12",
                                     now=dt.datetime(2027, 1, 1, tzinfo=UTC))
        assert not [x for x in dec.lines if x.description.startswith("Adjustment")]
        assert Decimal(inv.subtotal) + Decimal(inv.tax) == Decimal(inv.total)


def test_a_destroyed_platform_is_billed_for_the_days_it_lived(session: Session) -> None:
    from tenantry.core.models import Event
    from tenantry.platforms.models import Platform

    subscribe(session)
    service.sync_ledger(session)  # the periodic task saw bms/dlg while it lived
    dlg = session.get(Platform, "p2")
    assert dlg is not None
    session.add(Event(kind="DESTROYED", message="platform bms/dlg destroyed", isv_id="i1",
                      platform_id="p2", time=dt.datetime(2026, 11, 20, 15, tzinfo=UTC)))
    session.delete(dlg)  # as the destroy job's last step does
    session.commit()
    [inv] = service.run_invoices(session=session, principal=ADMIN, period="2026-11", now=DEC1)
    fees = {x.description: x.amount for x in inv.lines if x.description.startswith("Platform")}
    assert fees == {"Platform bms/dlg: 5 of 30 days at 50.00 a month": "8.33",  # 16-20 Nov
                    "Platform bms/lbh: 30 of 30 days at 50.00 a month": "50.00"}
