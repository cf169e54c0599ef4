"""The arithmetic of a bill, as pure functions: worked examples to the penny, and properties
hypothesis checks over many plans and months (lines sum to the subtotal, total = subtotal +
tax, tiers charge each user once)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tenantry.billing import rating
from tenantry.billing.schemas import PlanDocument
from tests.billing.plans import standard

PLAN = PlanDocument.model_validate(standard())
VOLUME = PlanDocument.model_validate(standard(model="volume"))


def amounts(lines: list[rating.InvoiceLine]) -> list[str]:
    return [line.amount for line in lines]


def test_graduated_tiers_charge_each_users_band_at_its_price() -> None:
    # 40 users: 3 x 30 + 27 x 25 + 10 x 20 = 90 + 675 + 200
    lines = rating.user_lines(PLAN, 40, 0)
    assert [(x.quantity, x.unit_price, x.amount) for x in lines] == [
        ("3", "30.00", "90.00"), ("27", "25.00", "675.00"), ("10", "20.00", "200.00")]
    assert rating.user_charge(PLAN, 40) == Decimal("965.00")
    assert rating.user_charge(PLAN, 301) == Decimal("90") + 27 * 25 + 270 * 20 + 15
    assert rating.user_lines(PLAN, 0, 0) == []


def test_volume_prices_every_user_at_the_tier_the_total_reaches() -> None:
    assert rating.user_charge(VOLUME, 3) == Decimal("90.00")
    assert rating.user_charge(VOLUME, 4) == Decimal("100.00")  # all four at 25
    assert rating.user_charge(VOLUME, 301) == Decimal("4515.00")
    assert amounts(rating.user_lines(VOLUME, 40, 0)) == ["800.00"]


def test_the_commitment_shortfall_is_its_own_lines() -> None:
    # 2 active of 10 committed: users 3..10 are the shortfall, 1 at 30 and 7 at 25
    lines = rating.user_lines(PLAN, 2, 10)
    assert [(x.description.split(",")[0], x.quantity, x.amount) for x in lines] == [
        ("Active users 1-2 (graduated)", "2", "60.00"),
        ("Commitment shortfall", "1", "30.00"), ("Commitment shortfall", "7", "175.00")]
    short = rating.user_lines(VOLUME, 2, 10)
    assert amounts(short) == ["60.00", "190.00"]  # 10 x 25 - 2 x 30
    assert rating.user_lines(PLAN, 12, 10) == rating.user_lines(PLAN, 12, 0)


def test_the_term_discount_is_negative_and_rounded_once() -> None:
    lines = rating.user_lines(PLAN, 7, 0)  # 90 + 100 = 190
    d = rating.discount_line(PLAN, "12m", lines)
    assert d is not None and d.amount == "-28.50"
    assert rating.discount_line(PLAN, "1m", lines) is None
    odd = PlanDocument.model_validate(standard(terms={"3m": "3.3"}))
    d = rating.discount_line(odd, "3m", rating.user_lines(odd, 1, 0))  # 3.3 % of 30 = 0.99
    assert d is not None and d.amount == "-0.99"


def test_rounding_is_half_away_from_zero() -> None:
    assert rating.money(Decimal("0.125"), "GBP") == Decimal("0.13")
    assert rating.money(Decimal("-0.125"), "GBP") == Decimal("-0.13")
    assert rating.money(Decimal("2.5"), "JPY") == Decimal("3")
    assert rating.money(Decimal("0.0005"), "KWD") == Decimal("0.001")


@pytest.mark.parametrize(("created", "destroyed", "days"), [
    (dt.datetime(2026, 10, 1, tzinfo=dt.UTC), None, 30),
    (dt.datetime(2026, 8, 1, tzinfo=dt.UTC), None, 30),
    (dt.datetime(2026, 11, 16, 23, 59, tzinfo=dt.UTC), None, 15),
    (dt.datetime(2026, 11, 3, tzinfo=dt.UTC), dt.datetime(2026, 11, 3, 0, 1, tzinfo=dt.UTC), 1),
    (dt.datetime(2026, 10, 3, tzinfo=dt.UTC), dt.datetime(2026, 11, 10, tzinfo=dt.UTC), 10),
    (dt.datetime(2026, 10, 3, tzinfo=dt.UTC), dt.datetime(2026, 10, 31, tzinfo=dt.UTC), 0),
    (dt.datetime(2026, 12, 1, tzinfo=dt.UTC), None, 0),
])
def test_days_a_platform_existed_in_november(created: dt.datetime,
                                             destroyed: dt.datetime | None, days: int) -> None:
    assert rating.days_existed("2026-11", created, destroyed) == days


def test_platform_fees_are_prorated_by_day() -> None:
    line = rating.platform_fee_line(PLAN, "2026-11", "bms/lbh", 12)
    assert (line.quantity, line.amount) == ("12", "20.00")  # 50 x 12 / 30
    assert rating.platform_fee_line(PLAN, "2026-02", "bms/lbh", 1).amount == "1.79"  # 50/28


def test_tax_on_the_subtotal_of_rounded_lines() -> None:
    lines = [*rating.user_lines(PLAN, 7, 0), rating.platform_fee_line(PLAN, "2026-11", "a", 30)]
    t = rating.totals(lines, Decimal("20"), "GBP")
    assert (t.subtotal, t.tax, t.total) == ("240.00", "48.00", "288.00")


# ------------------------------------------------------------------ properties

prices = st.decimals(min_value=0, max_value=10_000, places=2, allow_nan=False)
tiers = st.lists(st.tuples(st.integers(1, 50), prices), min_size=0, max_size=5)


@st.composite
def plans(draw: st.DrawFn) -> PlanDocument:
    steps = draw(tiers)
    bound, out = 0, []
    for step, price in steps:
        bound += step
        out.append({"up_to": bound, "price": str(price)})
    out.append({"price": str(draw(prices))})
    currency = draw(st.sampled_from(["GBP", "JPY", "KWD"]))
    pct = draw(st.decimals(min_value=0, max_value=100, places=2, allow_nan=False))
    return PlanDocument.model_validate({
        "name": "p", "currency": currency, "platform_fee": str(draw(prices)),
        "users": {"model": draw(st.sampled_from(["graduated", "volume"])), "tiers": out},
        "terms": {"1m": "0", "12m": str(pct)}})


@settings(max_examples=400, deadline=None)
@given(plan=plans(), active=st.integers(0, 500), committed=st.integers(0, 500),
       term=st.sampled_from(["1m", "12m"]),
       days=st.lists(st.integers(0, 30), max_size=4),
       tax=st.decimals(min_value=0, max_value=100, places=3, allow_nan=False))
def test_lines_sum_to_the_subtotal_and_the_total_adds_up(
        plan: PlanDocument, active: int, committed: int, term: str, days: list[int],
        tax: Decimal) -> None:
    charged = rating.user_lines(plan, active, committed)
    lines = list(charged)
    discount = rating.discount_line(plan, term, charged)
    if discount is not None:
        lines.append(discount)
    lines += [rating.platform_fee_line(plan, "2026-11", f"x/p{i}", d) for i, d in enumerate(days)]
    t = rating.totals(lines, tax, plan.currency)
    unit = rating.minor_unit(plan.currency)
    assert sum(Decimal(x.amount) for x in lines) == Decimal(t.subtotal)
    assert Decimal(t.subtotal) + Decimal(t.tax) == Decimal(t.total)
    for value in [*amounts(lines), t.subtotal, t.tax, t.total]:
        assert Decimal(value) == Decimal(value).quantize(unit), "rounded to the minor unit"
    # the user and shortfall lines charge the committed-or-active users' price, give or take
    # each line's own rounding
    billed = max(active, committed)
    drift = abs(sum(Decimal(x.amount) for x in charged) - rating.user_charge(plan, billed))
    assert drift <= len(charged) * unit / 2
    if plan.users.model == "graduated":
        assert sum(Decimal(x.quantity) for x in charged) == billed, "each user charged once"
        assert sum(Decimal(x.quantity) * Decimal(x.unit_price or 0) for x in charged) == \
            rating.user_charge(plan, billed)
    # tax within its bounds and never negative for a non-negative subtotal
    assert Decimal(0) <= Decimal(t.tax) <= Decimal(t.subtotal) or Decimal(t.subtotal) < 0


@settings(max_examples=300, deadline=None)
@given(plan=plans(), users=st.integers(0, 1000), more=st.integers(0, 1000))
def test_more_users_never_cost_less_under_graduated_tiers(plan: PlanDocument, users: int,
                                                         more: int) -> None:
    if plan.users.model != "graduated":
        return
    assert rating.user_charge(plan, users + more) >= rating.user_charge(plan, users)
