"""Billing's documents: plans (TOML in), usage events, subscriptions, invoices, quotes.

Money crosses every boundary as a decimal string ("50.00"), never a float: TOML and JSON
floats are binary fractions, and a bill must be exact.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from typing_extensions import TypedDict

# ISO 4217 minor units of the currencies a plan may use.
CURRENCIES: dict[str, int] = {
    "GBP": 2, "EUR": 2, "USD": 2, "CHF": 2, "CAD": 2, "AUD": 2, "NZD": 2, "SEK": 2, "NOK": 2,
    "DKK": 2, "PLN": 2, "CZK": 2, "HUF": 2, "INR": 2, "ZAR": 2, "SGD": 2, "HKD": 2, "BRL": 2,
    "MXN": 2, "CNY": 2, "JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "KWD": 3, "BHD": 3, "OMR": 3,
    "JOD": 3, "TND": 3,
}
TERM_RE = re.compile(r"^([1-9][0-9]?)(m|y)$")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
PERIOD_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"  # no control characters
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # what PRINTABLE refuses
MAX_PRICE = Decimal("1000000000")


def _decimal(value: Any) -> Decimal:
    """A decimal string (or an integer) of at most 6 decimals; floats are refused."""
    if isinstance(value, (bool, float)):
        raise ValueError('must be a decimal string like "50.00", not a float')
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("must be a decimal string")
    try:
        d = Decimal(value.strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None
    if not d.is_finite():
        raise ValueError("must be a finite number")
    if d.as_tuple().exponent < -6:  # type: ignore[operator]
        raise ValueError("at most 6 decimals")
    return d


def _price(v: Decimal) -> Decimal:
    if v < 0:
        raise ValueError("must not be negative")
    if v > MAX_PRICE:
        raise ValueError(f"must be at most {MAX_PRICE}")
    return v


Money = Annotated[Decimal, BeforeValidator(_decimal)]
Price = Annotated[Decimal, BeforeValidator(_decimal), AfterValidator(_price)]


def term_months(term: str) -> int:
    m = TERM_RE.fullmatch(term)
    if m is None:
        raise ValueError(f"{term!r} is not a term (1m, 3m, 12m, 1y, 3y ...)")
    n = int(m.group(1))
    return n * 12 if m.group(2) == "y" else n


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    up_to: int | None = Field(default=None, ge=1, le=100_000_000)
    price: Price


class UserPricing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Literal["graduated", "volume"]
    tiers: list[Tier] = Field(min_length=1, max_length=50)

    @field_validator("tiers")
    @classmethod
    def _ordered(cls, tiers: list[Tier]) -> list[Tier]:
        for i, t in enumerate(tiers[:-1]):
            if t.up_to is None:
                raise ValueError(f"tier {i + 1} has no up_to: only the last tier is open")
            following = tiers[i + 1].up_to
            if following is not None and following <= t.up_to:
                raise ValueError(f"tiers out of order: up_to {following} after {t.up_to}")
        if tiers[-1].up_to is not None:
            raise ValueError("the last tier must be open (no up_to)")
        return tiers


class PlanDocument(BaseModel):
    """A plan file (`tenantry plan apply FILE`), validated as a whole."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    currency: str
    platform_fee: Price
    users: UserPricing
    terms: dict[str, Money] = Field(min_length=1, max_length=40)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v):
            raise ValueError("must be lowercase letters, digits and '-', starting with a letter")
        return v

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        if v not in CURRENCIES:
            raise ValueError(f"unknown currency {v!r}: one of {', '.join(sorted(CURRENCIES))}")
        return v

    @field_validator("terms")
    @classmethod
    def _terms(cls, terms: dict[str, Decimal]) -> dict[str, Decimal]:
        for term, pct in terms.items():
            term_months(term)
            if not 0 <= pct <= 100:
                raise ValueError(f"the discount of term {term!r} must be within 0-100 %")
        if len({term_months(t) for t in terms}) != len(terms):
            raise ValueError("two terms of the same length (12m and 1y?)")
        return terms

    def canonical(self) -> dict[str, Any]:
        """The plan as JSON with decimal strings: what is stored, compared and shown."""
        return {
            "name": self.name, "currency": self.currency,
            "platform_fee": format(self.platform_fee, "f"),
            "users": {"model": self.users.model, "tiers": [
                {"up_to": t.up_to, "price": format(t.price, "f")} if t.up_to is not None
                else {"price": format(t.price, "f")} for t in self.users.tiers]},
            "terms": {k: format(v, "f") for k, v in sorted(self.terms.items(),
                                                            key=lambda kv: term_months(kv[0]))},
        }


class PlanPublic(BaseModel):
    name: str
    version: int
    created_at: dt.datetime
    changed: bool = Field(description="this apply made a new version")
    document: dict[str, Any]


# ------------------------------------------------------------------ usage


# An event's fields, bounded once for both ways a batch is read (below). Every check is a
# constraint pydantic-core runs itself (no Python validator), into a plain dict (no model
# instance per event): a batch of 10,000 validates in one pass, from the request's bytes.
EventId = Annotated[str, StringConstraints(min_length=1, max_length=100)]  # stored
EventTenant = Annotated[str, StringConstraints(min_length=1, max_length=40)]  # the platform's
EventUser = Annotated[str, StringConstraints(min_length=1, max_length=200)]  # hashed, not kept
EventTime = Annotated[AwareDatetime,
                      Field(description="with its time zone: 2026-11-30T12:00:00Z")]


class UsageEventIn(TypedDict):
    """"This end user of this tenant was active at this time." `id` is the idempotency key
    within the platform; `user` is stored only as a keyed hash."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    id: Annotated[EventId, StringConstraints(pattern=PRINTABLE)]
    tenant: EventTenant
    user: EventUser
    time: EventTime


MAX_EVENTS = 10_000


class UsageBatch(BaseModel):
    """`POST /usage`: a usage token's platform is implied; a person's token names it.
    (`events` is checked one by one, so that one bad event refuses only itself.)"""

    model_config = ConfigDict(extra="forbid")

    platform: str | None = Field(default=None, description="ISV/NAME; implied by a usage token")
    events: list[Any] = Field(min_length=1, max_length=MAX_EVENTS)


class UsageEventFast(TypedDict):
    """`UsageEventIn` less the pattern on `id`, which billing checks itself on all of a
    batch's ids at once (the pattern, run per id, was 40 % of a batch's validation)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    id: EventId
    tenant: EventTenant
    user: EventUser
    time: EventTime


class UsageBatchValid(TypedDict):
    """A batch whose every event is well formed: what most requests are, validated from
    the raw body in one pass (a batch that fails it is read again as `UsageBatch`)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    platform: NotRequired[str | None]
    events: Annotated[list[UsageEventFast], Field(min_length=1, max_length=MAX_EVENTS)]


class UsageRefusal(BaseModel):
    index: int
    id: str | None
    field: str
    reason: str


class UsageResult(BaseModel):
    platform: str
    accepted: int
    duplicates: int
    refused: int
    refusals: list[UsageRefusal]


class UsageToken(BaseModel):
    id: str = Field(description="names the token (to list or revoke it); not the token")
    platform: str
    token: str = Field(description="shown once; it may only send usage for this platform")


class UsageTokenInfo(BaseModel):
    """A usage token as listed: never the token itself."""

    id: str
    platform: str
    created_at: dt.datetime
    created_by: str
    revoked_at: dt.datetime | None


# ------------------------------------------------------------------ subscriptions


class SubscriptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: str
    term: str
    min_users: int = Field(default=0, ge=0, le=100_000_000)
    start: dt.date | None = None
    tax_rate: Money = Decimal(0)

    @field_validator("tax_rate")
    @classmethod
    def _tax(cls, v: Decimal) -> Decimal:
        if not 0 <= v <= 100:
            raise ValueError("must be within 0-100 %")
        return v

    @field_validator("term")
    @classmethod
    def _term(cls, v: str) -> str:
        term_months(v)
        return v


class SubscriptionPublic(BaseModel):
    id: str
    isv: str
    plan: str
    plan_version: int
    term: str
    min_users: int
    tax_rate: str
    start: dt.date
    end: dt.date
    created_at: dt.datetime


# ------------------------------------------------------------------ invoices


class InvoiceLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    description: str
    quantity: str
    unit_price: str | None
    amount: str


class InvoicePublic(BaseModel):
    id: str
    isv: str
    period: str
    currency: str
    lines: list[InvoiceLine]
    subtotal: str
    tax: str
    total: str
    tax_rate: str
    active_users: int
    issued_at: dt.datetime | None = Field(description="None: a projection of a month not ended")
    projection: bool = False


class InvoiceRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    period: str

    @field_validator("period")
    @classmethod
    def _period(cls, v: str) -> str:
        if not PERIOD_RE.fullmatch(v):
            raise ValueError("must be a month, YYYY-MM")
        return v


class Quote(BaseModel):
    plan: str
    plan_version: int
    currency: str
    users: int
    platforms: int
    term: str
    lines: list[InvoiceLine]
    monthly: str = Field(description="the monthly price before tax")


class ActiveUsersRow(BaseModel):
    platform: str
    tenant: str
    active_users: int
