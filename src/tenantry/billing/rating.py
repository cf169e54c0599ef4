"""Pricing as pure arithmetic: a plan, a month's facts in, invoice lines out.

Everything is `Decimal`. Each line's amount is rounded once, half away from zero, to the
currency's minor unit; the subtotal is the sum of the rounded lines, the tax is rounded once,
and the total is their sum. Nothing here reads the store or the clock, so the same facts
always give the same invoice (and hypothesis can try millions of them).
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from tenantry.billing.schemas import InvoiceLine, PlanDocument, Tier

HUNDRED = Decimal(100)


def minor_unit(currency: str) -> Decimal:
    from tenantry.billing.schemas import CURRENCIES

    return Decimal(1).scaleb(-CURRENCIES[currency])


def money(value: Decimal, currency: str) -> Decimal:
    """Round once, half away from zero (ROUND_HALF_UP rounds magnitudes), to the minor unit."""
    return value.quantize(minor_unit(currency), rounding=ROUND_HALF_UP)


def _text(value: Decimal) -> str:
    return format(value, "f")


@dataclass(frozen=True)
class Band:
    """Users `first`..`last` of a tier (1-based, inclusive) at `price`."""

    first: int
    last: int
    price: Decimal

    @property
    def users(self) -> int:
        return self.last - self.first + 1


def bands(tiers: Sequence[Tier], users: int, *, model: str) -> list[Band]:
    """How `users` fall into the tiers. Graduated: each tier's users at its price. Volume:
    all users at the price of the tier the total reaches."""
    if users <= 0:
        return []
    if model == "volume":
        tier = next(t for t in tiers if t.up_to is None or users <= t.up_to)
        return [Band(1, users, tier.price)]
    out, below = [], 0
    for t in tiers:
        top = users if t.up_to is None else min(users, t.up_to)
        if top > below:
            out.append(Band(below + 1, top, t.price))
        if t.up_to is None or users <= t.up_to:
            break
        below = t.up_to
    return out


def user_charge(plan: PlanDocument, users: int) -> Decimal:
    """The exact (unrounded) charge for `users` active users."""
    return sum((b.price * b.users for b in bands(plan.users.tiers, users, model=plan.users.model)),
               Decimal(0))


def _line(description: str, quantity: Decimal | int, unit_price: Decimal | None,
          amount: Decimal, currency: str) -> InvoiceLine:
    return InvoiceLine(description=description, quantity=_text(Decimal(quantity)),
                       unit_price=None if unit_price is None else _text(unit_price),
                       amount=_text(money(amount, currency)))


def _users_text(band: Band) -> str:
    return f"user {band.first}" if band.first == band.last else f"users {band.first}-{band.last}"


def user_lines(plan: PlanDocument, active: int, min_users: int,
               label: str = "Active") -> list[InvoiceLine]:
    """The user charge, line by line, then the commitment shortfall when `min_users` is
    above the active users: the charge for min_users minus the charge for the active."""
    cur, model = plan.currency, plan.users.model
    lines = [_line(f"{label} {_users_text(b)} ({plan.users.model})", b.users, b.price,
                   b.price * b.users, cur)
             for b in bands(plan.users.tiers, active, model=model)]
    if min_users > active:
        short = user_charge(plan, min_users) - user_charge(plan, active)
        if model == "graduated":
            # the committed users above the active ones, tier by tier, at each tier's price
            for b in bands(plan.users.tiers, min_users, model=model):
                first = max(b.first, active + 1)
                if first <= b.last:
                    n = b.last - first + 1
                    lines.append(_line(
                        f"Commitment shortfall, users {first}-{b.last} of {min_users}"
                        if first != b.last else
                        f"Commitment shortfall, user {first} of {min_users}",
                        n, b.price, b.price * n, cur))
        else:
            lines.append(_line(f"Commitment shortfall: {min_users} users committed, {active} "
                               "active (volume price)", 1, None, short, cur))
    return lines


def discount_line(plan: PlanDocument, term: str, lines: Sequence[InvoiceLine],
                  label: str = "") -> InvoiceLine | None:
    """The term's discount: its percentage of the user charge and shortfall lines given."""
    pct = plan.terms[term]
    if pct == 0 or not lines:
        return None
    base = sum((Decimal(line.amount) for line in lines), Decimal(0))
    return _line(f"{label}Commitment discount, {term} term ({_text(pct)} %)", 1, None,
                 -(base * pct / HUNDRED), plan.currency)


def committed_lines(plan: PlanDocument, term: str, active: int, min_users: int,
                    label: str = "Active") -> list[InvoiceLine]:
    """The user charge and shortfall lines, then the term's discount of them."""
    lines = user_lines(plan, active, min_users, label)
    discount = discount_line(plan, term, lines)
    return lines if discount is None else [*lines, discount]


def days_in(period: str) -> tuple[dt.date, dt.date, int]:
    """(first day, first day of the next month, days) of "YYYY-MM"."""
    year, month = int(period[:4]), int(period[5:7])
    days = calendar.monthrange(year, month)[1]
    first = dt.date(year, month, 1)
    return first, first + dt.timedelta(days=days), days


def days_existed(period: str, created: dt.datetime, destroyed: dt.datetime | None) -> int:
    """Calendar days (UTC) of the month on which the platform existed for any part of it."""
    first, after, _ = days_in(period)
    start = max(first, created.astimezone(dt.UTC).date())
    end = after if destroyed is None else min(
        after, destroyed.astimezone(dt.UTC).date() + dt.timedelta(days=1))
    return max(0, (end - start).days)


def platform_fee_line(plan: PlanDocument, period: str, name: str, days: int) -> InvoiceLine:
    _, _, month_days = days_in(period)
    rate = plan.platform_fee / month_days
    return _line(f"Platform {name}: {days} of {month_days} days at {_text(plan.platform_fee)} "
                 "a month", days, money(rate, plan.currency) if days else Decimal(0),
                 plan.platform_fee * days / month_days, plan.currency)


def quote_platform_line(plan: PlanDocument, platforms: int) -> InvoiceLine:
    return _line(f"Platform fee, {platforms} platform{'s' if platforms != 1 else ''}",
                 platforms, plan.platform_fee, plan.platform_fee * platforms, plan.currency)


def adjustment_line(plan: PlanDocument, term: str, min_users: int, period: str, billed: int,
                    known: int) -> InvoiceLine:
    """Late usage of an issued month: the charge for the users known now minus the charge
    billed, after the term's discount, as one line."""
    before = user_charge(plan, max(billed, min_users))
    after = user_charge(plan, max(known, min_users))
    net = (after - before) * (HUNDRED - plan.terms[term]) / HUNDRED
    return _line(f"Adjustment for {period}: {known - billed} more active users reported late "
                 f"({billed} billed, {known} now)", known - billed, None, net, plan.currency)


@dataclass(frozen=True)
class Totals:
    subtotal: str
    tax: str
    total: str


def totals(lines: Sequence[InvoiceLine], tax_rate: Decimal, currency: str) -> Totals:
    subtotal = sum((Decimal(line.amount) for line in lines), Decimal(0))
    subtotal = money(subtotal, currency)  # a sum of rounded amounts: already exact
    tax = money(subtotal * tax_rate / HUNDRED, currency)
    return Totals(_text(subtotal), _text(tax), _text(subtotal + tax))
