"""Billing's use cases: usage tokens and ingestion, plans, subscriptions, invoices, quotes.

Who sees what: an ISV's people see their own subscription, usage and invoices (another
ISV's answer 404); plans are the provider's catalogue, readable by all; plans,
subscriptions and invoice runs are the provider's to make.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import io
import re
from decimal import Decimal

from pydantic import ValidationError
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from tenantry.access.audit.service import record_for
from tenantry.access.principal import Principal, scoped
from tenantry.billing import rating, usage
from tenantry.billing.models import (
    BilledPlatform,
    Invoice,
    Plan,
    Subscription,
    UsageToken,
)
from tenantry.billing.schemas import (
    PERIOD_RE,
    ActiveUsersRow,
    InvoiceLine,
    InvoicePublic,
    PlanDocument,
    PlanPublic,
    Quote,
    SubscriptionCreate,
    SubscriptionPublic,
    UsageBatch,
    UsageResult,
    UsageTokenInfo,
    term_months,
)
from tenantry.billing.schemas import UsageToken as UsageTokenPublic
from tenantry.core.db import utcnow
from tenantry.core.errors import (
    Conflict,
    InvalidInput,
    NotAllowed,
    NotFound,
    Unauthenticated,
    invalid_input,
)
from tenantry.core.names import new_id
from tenantry.platforms.models import Isv, Platform, Tenant, platform_tenants
from tenantry.platforms.service import get_isv, get_platform

USAGE_PREFIX = "tnu_"


# ------------------------------------------------------------------ the platform ledger


def sync_ledger(session: Session, now: dt.datetime | None = None) -> int:
    """Record platforms new to billing, and the end of those gone; how many rows changed.

    Platforms are deleted when destroyed, so billing keeps its own ledger of their names and
    lifetimes; the destruction time is the DESTROYED event's when there is one."""
    now = now or utcnow()
    changed = 0
    known = set(session.scalars(select(BilledPlatform.platform_id)))
    alive = set()
    for pid, isv_id, name, created_at, isv in session.execute(  # columns: no desired state
            select(Platform.id, Platform.isv_id, Platform.name, Platform.created_at, Isv.name)
            .join(Isv, Isv.id == Platform.isv_id)):
        alive.add(pid)
        if pid not in known:
            session.add(BilledPlatform(platform_id=pid, isv_id=isv_id, name=f"{isv}/{name}",
                                       created_at=created_at))
            changed += 1
    # the ids of the ledger's live rows, and only the gone ones' rows: loading every live
    # row as an object, every minute, was a sixth of the worker's time at 20,000 platforms
    gone = [pid for pid in session.scalars(select(BilledPlatform.platform_id).where(
        BilledPlatform.destroyed_at.is_(None))) if pid not in alive]
    for row in session.scalars(select(BilledPlatform).where(
            BilledPlatform.platform_id.in_(gone))) if gone else ():
        when = session.scalar(text(
            "SELECT max(time) FROM events WHERE kind = 'DESTROYED' AND platform_id = :p"),
            {"p": row.platform_id})
        row.destroyed_at = when or now
        changed += 1
    session.commit()
    return changed


# ------------------------------------------------------------------ usage


def issue_usage_token(*, session: Session, principal: Principal,
                      ref: str) -> UsageTokenPublic:
    """A new token for `ref`'s usage (earlier ones stay valid: rotate without a gap, then
    revoke the old one)."""
    from tenantry.core.crypto import new_token, token_hash

    platform = get_platform(session, principal, ref, "admin")
    secret = new_token(USAGE_PREFIX.rstrip("_")).get_secret_value()
    name = f"{platform.isv.name}/{platform.name}"
    digest = token_hash(secret)
    session.add(UsageToken(token_hash=digest, platform_id=platform.id,
                           isv_id=platform.isv_id, created_by=principal.username))
    record_for(session, principal, action="usage.token", target=name, source="api",
               org=platform.isv_id, detail={"token_id": _token_id(digest)})
    session.commit()
    return UsageTokenPublic(id=_token_id(digest), platform=name, token=secret)


# A usage token is named by the start of its SHA-256, which the store keeps anyway: 48 bits
# tell a platform's tokens apart and say nothing of the token.
TOKEN_ID_RE = re.compile(r"^[0-9a-f]{12}$")


def _token_id(digest: str) -> str:
    return digest[:12]


def _token_info(row: UsageToken, name: str) -> UsageTokenInfo:
    return UsageTokenInfo(id=_token_id(row.token_hash), platform=name,
                          created_at=row.created_at, created_by=row.created_by,
                          revoked_at=row.revoked_at)


def list_usage_tokens(*, session: Session, principal: Principal,
                      ref: str) -> list[UsageTokenInfo]:
    """The platform's usage tokens, revoked ones too, oldest first."""
    platform = get_platform(session, principal, ref, "admin")
    name = f"{platform.isv.name}/{platform.name}"
    rows = session.scalars(select(UsageToken).where(UsageToken.platform_id == platform.id)
                           .order_by(UsageToken.created_at, UsageToken.token_hash))
    return [_token_info(row, name) for row in rows]


def revoke_usage_token(*, session: Session, principal: Principal, ref: str,
                       token_id: str) -> UsageTokenInfo:
    """Revoke one of the platform's usage tokens: its next request is refused (401). Again
    on a revoked token changes nothing."""
    platform = get_platform(session, principal, ref, "admin")
    name = f"{platform.isv.name}/{platform.name}"
    rows = [] if not TOKEN_ID_RE.match(token_id) else list(session.scalars(
        select(UsageToken).where(UsageToken.platform_id == platform.id,
                                 UsageToken.token_hash.startswith(token_id, autoescape=True))))
    if len(rows) != 1:  # (two tokens of one platform sharing 48 bits: never, in practice)
        raise NotFound(f"{name} has no usage token {token_id!r} (see `tenantry usage tokens "
                       f"{name}`)", field="token_id")
    [row] = rows
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        record_for(session, principal, action="usage.token.revoke", target=name,
                   source="api", org=platform.isv_id, detail={"token_id": token_id})
    session.commit()
    return _token_info(row, name)


def usage_platform(session: Session, token: str) -> str:
    """The platform id a usage token may send for, or Unauthenticated."""
    from tenantry.core.crypto import token_hash

    row = session.get(UsageToken, token_hash(token))
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("the usage token is unknown or revoked")
    return row.platform_id


def _earliest(session: Session, isv_id: str, now: dt.datetime) -> dt.datetime:
    start = session.scalar(select(func.min(Subscription.start))
                           .where(Subscription.isv_id == isv_id))
    first = (dt.datetime.combine(start, dt.time(), dt.UTC) if start is not None
             else now.replace(hour=0, minute=0, second=0, microsecond=0))
    return first - usage.PAST


def ingest(*, session: Session, batch: UsageBatch | bytes, key: bytes,
           principal: Principal | None = None, token_platform: str | None = None) -> UsageResult:
    """Store a batch of usage events (a request's body, or a batch already shaped), once
    each. The caller is a usage token (its platform implied; naming another is refused) or
    a person allowed to operate the named platform."""
    read = usage.read(batch) if isinstance(batch, bytes) else usage.of(batch)
    if token_platform is not None:
        platform = session.get(Platform, token_platform)
        if platform is None:
            raise NotFound("the usage token's platform no longer exists", field="platform")
        name = f"{platform.isv.name}/{platform.name}"
        if read.platform is not None and read.platform not in (name, platform.id):
            raise NotAllowed(f"this usage token sends usage for {name} only", field="platform")
    else:
        assert principal is not None
        if read.platform is None:
            raise InvalidInput("platform: name the platform (ISV/NAME)", field="platform")
        platform = get_platform(session, principal, read.platform, "operate")
        name = f"{platform.isv.name}/{platform.name}"
    tenants = set(session.scalars(select(Tenant.name).join(
        platform_tenants, platform_tenants.c.tenant_id == Tenant.id)
        .where(platform_tenants.c.platform_id == platform.id)))
    now = utcnow()
    checked = usage.check(read, isv_id=platform.isv_id, tenants=tenants, key=key,
                          earliest=_earliest(session, platform.isv_id, now), now=now)
    new = usage.insert(session, platform_id=platform.id, isv_id=platform.isv_id,
                       rows=checked.rows)
    session.commit()
    return UsageResult(platform=name, accepted=new,
                       duplicates=checked.duplicates + len(checked.rows.ids) - new,
                       refused=len(checked.refusals), refusals=checked.refusals)


# ------------------------------------------------------------------ plans


def parse_plan(data: object) -> PlanDocument:
    try:
        return PlanDocument.model_validate(data)
    except ValidationError as e:
        raise invalid_input(e) from None


def _plan_public(plan: Plan, changed: bool = False) -> PlanPublic:
    return PlanPublic(name=plan.name, version=plan.version, created_at=plan.created_at,
                      changed=changed, document=plan.document)


def apply_plan(*, session: Session, principal: Principal, document: object) -> PlanPublic:
    """A new plan, or a new version of one when its content changed (subscriptions keep
    the version they were made with)."""
    principal.require("provider")
    principal.require("admin")
    doc = parse_plan(document).canonical()
    session.execute(text("SELECT pg_advisory_xact_lock(7261009)"))  # versions in order
    latest = session.scalar(select(Plan).where(Plan.name == doc["name"])
                            .order_by(Plan.version.desc()).limit(1))
    if latest is not None and latest.document == doc:
        session.commit()
        return _plan_public(latest)
    plan = Plan(id=new_id("pl"), name=doc["name"], version=(latest.version + 1) if latest else 1,
                document=doc, created_by=principal.username)
    session.add(plan)
    record_for(session, principal, action="plan.apply", target=f"{plan.name}@{plan.version}",
               source="api")
    session.commit()
    return _plan_public(plan, changed=True)


def _latest_plan(session: Session, name: str) -> Plan:
    plan = session.scalar(select(Plan).where(Plan.name == name).order_by(Plan.version.desc())
                          .limit(1))
    if plan is None:
        raise NotFound(f"no plan named {name!r}", field="plan")
    return plan


def list_plans(*, session: Session, principal: Principal) -> list[PlanPublic]:
    principal.require("view")
    latest = select(Plan.name, func.max(Plan.version).label("v")).group_by(Plan.name).subquery()
    rows = session.scalars(select(Plan).join(latest, (Plan.name == latest.c.name)
                                             & (Plan.version == latest.c.v)).order_by(Plan.name))
    return [_plan_public(p) for p in rows]


def _doc(plan: Plan) -> PlanDocument:
    return PlanDocument.model_validate(plan.document)


# ------------------------------------------------------------------ subscriptions


def _add_months(day: dt.date, months: int) -> dt.date:
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _first_of_next_month(day: dt.date) -> dt.date:
    return _add_months(day.replace(day=1), 1)


def _subscription_public(s: Subscription, isv: str, plan: Plan) -> SubscriptionPublic:
    return SubscriptionPublic(id=s.id, isv=isv, plan=plan.name, plan_version=plan.version,
                              term=s.term, min_users=s.min_users, tax_rate=s.tax_rate,
                              start=s.start, end=s.end, created_at=s.created_at)


def create_subscription(*, session: Session, principal: Principal, isv: str,
                        spec: SubscriptionCreate, today: dt.date | None = None,
                        ) -> SubscriptionPublic:
    """Subscribe an ISV to a plan's latest version for a term. With a subscription running,
    the new one (a renewal or a change of plan) starts on the first day of next month, and
    the running one ends there."""
    principal.require("provider")
    principal.require("admin")
    owner = get_isv(session, principal, isv, "admin")
    plan = _latest_plan(session, spec.plan)
    doc = _doc(plan)
    if spec.term not in doc.terms:
        raise InvalidInput(f"term: plan {plan.name!r} offers the terms "
                           f"{', '.join(doc.terms)}", field="term")
    today = today or utcnow().date()
    session.execute(select(Isv.id).where(Isv.id == owner.id).with_for_update())
    running = session.scalar(select(Subscription).where(
        Subscription.isv_id == owner.id, Subscription.end > today)
        .order_by(Subscription.start.desc()).limit(1))
    if running is not None:
        start = _first_of_next_month(today)
        if spec.start is not None and spec.start != start:
            raise InvalidInput(f"start: {owner.name} has a subscription until {running.end}; "
                               f"a renewal or change starts on {start}", field="start")
        if running.start >= start:
            raise Conflict(f"{owner.name} already has a subscription starting {running.start}",
                           field="isv")
        running.end = start
    else:
        # A first subscription may be backdated (a customer moved onto tenantry mid-way):
        # months already invoiced stay as they are, an invoice is issued once per month.
        start = spec.start or today
        if not dt.date(2000, 1, 1) <= start <= today + dt.timedelta(days=366):
            raise InvalidInput("start: must be within 2000-01-01 and a year from today",
                               field="start")
    sub = Subscription(id=new_id("sb"), isv_id=owner.id, plan_id=plan.id, term=spec.term,
                       min_users=spec.min_users, tax_rate=format(spec.tax_rate, "f"),
                       start=start, end=_add_months(start, term_months(spec.term)),
                       created_by=principal.username)
    session.add(sub)
    record_for(session, principal, action="subscription.create", target=owner.name,
               source="api", org=owner.id, detail={"plan": f"{plan.name}@{plan.version}",
                                                   "term": spec.term})
    session.commit()
    return _subscription_public(sub, owner.name, plan)


def list_subscriptions(*, session: Session, principal: Principal,
                       isv: str | None = None) -> list[SubscriptionPublic]:
    query = scoped(select(Subscription), principal, "view", Subscription.isv_id).add_columns(
        Isv.name, Plan).join(Isv, Isv.id == Subscription.isv_id).join(
        Plan, Plan.id == Subscription.plan_id)
    if isv is not None:
        query = query.where(Subscription.isv_id == get_isv(session, principal, isv).id)
    return [_subscription_public(s, name, plan)
            for s, name, plan in session.execute(query.order_by(Isv.name, Subscription.start))]


def _covering(session: Session, isv_id: str, first: dt.date,
              after: dt.date) -> Subscription | None:
    """The subscription that bills a month: the one running on its first day, else the one
    starting within it."""
    return session.scalar(select(Subscription).where(
        Subscription.isv_id == isv_id, Subscription.start < after, Subscription.end > first)
        .order_by(Subscription.start).limit(1))


# ------------------------------------------------------------------ invoices


def _period(period: str) -> str:
    if not PERIOD_RE.fullmatch(period):
        raise InvalidInput("period: must be a month, YYYY-MM", field="period")
    return period


def _bounds(period: str) -> tuple[dt.datetime, dt.datetime]:
    first, after, _ = rating.days_in(period)
    return (dt.datetime.combine(first, dt.time(), dt.UTC),
            dt.datetime.combine(after, dt.time(), dt.UTC))


def active_users(session: Session, isv_id: str, period: str) -> int:
    """Distinct (tenant, user) pairs with an event in the month, over all the ISV's
    platforms."""
    start, end = _bounds(period)
    return int(session.scalar(text(
        "SELECT count(*) FROM (SELECT DISTINCT tenant, user_hash FROM billing_usage_events "
        "WHERE isv_id = :isv AND time >= :start AND time < :end) AS u"),
        {"isv": isv_id, "start": start, "end": end}) or 0)


def _platform_lines(session: Session, doc: PlanDocument, isv_id: str,
                    period: str) -> list[InvoiceLine]:
    start, end = _bounds(period)
    rows = session.scalars(select(BilledPlatform).where(
        BilledPlatform.isv_id == isv_id, BilledPlatform.created_at < end,
        (BilledPlatform.destroyed_at.is_(None)) | (BilledPlatform.destroyed_at >= start))
        .order_by(BilledPlatform.name, BilledPlatform.platform_id))
    lines = []
    for p in rows:
        days = rating.days_existed(period, p.created_at, p.destroyed_at)
        if days:
            lines.append(rating.platform_fee_line(doc, period, p.name, days))
    return lines


def _late_lines(session: Session, isv_id: str, period: str) -> tuple[list[InvoiceLine],
                                                                      dict[str, int]]:
    """Adjustment lines for earlier months whose usage grew after they were invoiced."""
    start, _ = _bounds(period)
    issued = list(session.scalars(select(Invoice).where(Invoice.isv_id == isv_id,
                                                         Invoice.period < period)))
    if not issued:
        return [], {}
    billed: dict[str, int] = {}
    for inv in issued:
        for month, n in inv.billed_users.items():
            billed[month] = max(billed.get(month, 0), n)
    # Each invoice adjusted what had arrived late before it was issued (an invoice counts
    # under the ISV's usage lock, so every event is either in its count or received after
    # it: usage.insert): look only at what arrived since the newest.
    since = max(inv.issued_at for inv in issued)
    months = session.scalars(text(
        "SELECT DISTINCT to_char(time AT TIME ZONE 'UTC', 'YYYY-MM') FROM billing_usage_events "
        "WHERE isv_id = :isv AND received_at > :since AND time < :start ORDER BY 1"),
        {"isv": isv_id, "since": since, "start": start})
    by_period = {inv.period: inv for inv in issued}
    lines: list[InvoiceLine] = []
    counted: dict[str, int] = {}
    for month in months:
        if month not in by_period:
            continue  # a month no invoice covered (no subscription then): nothing to adjust
        known = active_users(session, isv_id, month)
        if known <= billed.get(month, 0):
            continue
        inv = by_period[month]
        sub = session.get(Subscription, inv.subscription_id)
        assert sub is not None
        plan = session.get(Plan, sub.plan_id)
        assert plan is not None
        lines.append(rating.adjustment_line(_doc(plan), sub.term, sub.min_users, month,
                                            billed.get(month, 0), known))
        counted[month] = known
    return lines, counted


def _compute(session: Session, isv_id: str, period: str,
             sub: Subscription) -> tuple[PlanDocument, list[InvoiceLine], int, dict[str, int]]:
    plan = session.get(Plan, sub.plan_id)
    assert plan is not None
    doc = _doc(plan)
    users = active_users(session, isv_id, period)
    lines = rating.committed_lines(doc, sub.term, users, sub.min_users)
    lines += _platform_lines(session, doc, isv_id, period)
    adjustments, counted = _late_lines(session, isv_id, period)
    return doc, lines + adjustments, users, {period: users} | counted


def _invoice_public(inv: Invoice, isv: str) -> InvoicePublic:
    return InvoicePublic(id=inv.id, isv=isv, period=inv.period, currency=inv.currency,
                         lines=[InvoiceLine.model_validate(x) for x in inv.lines],
                         subtotal=inv.subtotal, tax=inv.tax, total=inv.total,
                         tax_rate=inv.tax_rate, active_users=inv.active_users,
                         issued_at=inv.issued_at)


def run_invoices(*, session: Session, principal: Principal, period: str,
                 now: dt.datetime | None = None) -> list[InvoicePublic]:
    """One invoice per subscribed ISV for a month that has ended. Issued invoices never
    change: a second run returns them and creates nothing."""
    principal.require("provider")
    principal.require("admin")
    fixed = now  # tests fix the issue time; otherwise the store's clock, under the lock
    now = now or utcnow()
    _, end = _bounds(_period(period))
    if end > now:
        raise InvalidInput(f"period: {period} has not ended; see its projection with "
                           "`invoice show --projection`", field="period")
    sync_ledger(session, now)
    first, after, _ = rating.days_in(period)
    isvs = session.execute(select(Isv.id, Isv.name).order_by(Isv.name)).all()
    out = []
    for isv_id, isv_name in isvs:
        existing = session.scalar(select(Invoice).where(Invoice.isv_id == isv_id,
                                                         Invoice.period == period))
        if existing is not None:
            out.append(_invoice_public(existing, isv_name))
            continue
        sub = _covering(session, isv_id, first, after)
        if sub is None:
            continue
        usage.lock_for_invoice(session, isv_id)  # in-flight usage commits first, later waits
        doc, lines, users, billed = _compute(session, isv_id, period, sub)
        tax_rate = Decimal(sub.tax_rate)
        t = rating.totals(lines, tax_rate, doc.currency)
        values = dict(id=new_id("in"), isv_id=isv_id, period=period, subscription_id=sub.id,
                      currency=doc.currency, lines=[x.model_dump() for x in lines],
                      subtotal=t.subtotal, tax=t.tax, total=t.total, tax_rate=sub.tax_rate,
                      active_users=users, billed_users=billed,
                      issued_at=fixed or session.scalar(select(func.clock_timestamp())))
        # a concurrent run may have issued it meanwhile: theirs stands
        session.execute(pg_insert(Invoice).values(**values).on_conflict_do_nothing(
            index_elements=["isv_id", "period"]))
        session.commit()
        inv = session.scalar(select(Invoice).where(Invoice.isv_id == isv_id,
                                                    Invoice.period == period))
        assert inv is not None
        out.append(_invoice_public(inv, isv_name))
    record_for(session, principal, action="invoice.run", target=period, source="api",
               detail={"invoices": len(out)})
    session.commit()
    return out


def list_invoices(*, session: Session, principal: Principal,
                  isv: str | None = None) -> list[InvoicePublic]:
    query = scoped(select(Invoice), principal, "view", Invoice.isv_id).add_columns(
        Isv.name).join(Isv, Isv.id == Invoice.isv_id)
    if isv is not None:
        query = query.where(Invoice.isv_id == get_isv(session, principal, isv).id)
    rows = session.execute(query.order_by(Invoice.period.desc(), Isv.name))
    return [_invoice_public(inv, name) for inv, name in rows]


def get_invoice(*, session: Session, principal: Principal, invoice_id: str) -> InvoicePublic:
    row = session.execute(scoped(select(Invoice), principal, "view", Invoice.isv_id)
                          .add_columns(Isv.name).join(Isv, Isv.id == Invoice.isv_id)
                          .where(Invoice.id == invoice_id)).first()
    if row is None:
        raise NotFound(f"no invoice {invoice_id!r}", field="invoice")
    return _invoice_public(*row)


def projection(*, session: Session, principal: Principal, isv: str,
               period: str | None = None, now: dt.datetime | None = None) -> InvoicePublic:
    """The invoice a month would get if it ended now (this month by default). Its platform
    fees follow the ledger as the periodic task last wrote it (within a minute)."""
    now = now or utcnow()
    owner = get_isv(session, principal, isv)
    period = _period(period or now.strftime("%Y-%m"))
    first, after, _ = rating.days_in(period)
    sub = _covering(session, owner.id, first, after)
    if sub is None:
        raise NotFound(f"{owner.name} has no subscription for {period}", field="subscription")
    doc, lines, users, _ = _compute(session, owner.id, period, sub)
    t = rating.totals(lines, Decimal(sub.tax_rate), doc.currency)
    return InvoicePublic(id=f"projection-{period}", isv=owner.name, period=period,
                         currency=doc.currency, lines=lines, subtotal=t.subtotal, tax=t.tax,
                         total=t.total, tax_rate=sub.tax_rate, active_users=users,
                         issued_at=None, projection=True)


def active_users_csv(*, session: Session, principal: Principal, isv: str, period: str) -> str:
    """Active users per platform and tenant in a month, for the ISV to bill its customers.
    A user active on two platforms of one tenant counts once per platform here."""
    owner = get_isv(session, principal, isv)
    start, end = _bounds(_period(period))
    # The ledger names a platform once it has synced it (every minute); a platform not yet
    # in it is named from the platform itself.
    rows = session.execute(text(
        "SELECT coalesce(b.name, i.name || '/' || p.name, e.platform_id), e.tenant, "
        "count(DISTINCT e.user_hash) FROM billing_usage_events e "
        "LEFT JOIN billing_platforms b ON b.platform_id = e.platform_id "
        "LEFT JOIN platforms p ON p.id = e.platform_id LEFT JOIN isvs i ON i.id = p.isv_id "
        "WHERE e.isv_id = :isv AND e.time >= :start "
        "AND e.time < :end GROUP BY 1, 2 ORDER BY 1, 2"),
        {"isv": owner.id, "start": start, "end": end}).all()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["period", "platform", "tenant", "active_users"])
    for row in [ActiveUsersRow(platform=p, tenant=t, active_users=n) for p, t, n in rows]:
        writer.writerow([period, row.platform, row.tenant, row.active_users])
    return out.getvalue()


# ------------------------------------------------------------------ quotes


def quote(*, session: Session, principal: Principal, plan: str, users: int, term: str,
          platforms: int = 1) -> Quote:
    """The monthly price of committing to `users` for `term`, before any usage."""
    principal.require("view")
    if not 0 <= users <= 100_000_000:
        raise InvalidInput("users: must be within 0-100000000", field="users")
    if not 0 <= platforms <= 100_000:
        raise InvalidInput("platforms: must be within 0-100000", field="platforms")
    row = _latest_plan(session, plan)
    doc = _doc(row)
    if term not in doc.terms:
        raise InvalidInput(f"term: plan {plan!r} offers the terms {', '.join(doc.terms)}",
                           field="term")
    lines = rating.committed_lines(doc, term, users, 0, label="Committed")
    if platforms:
        lines.append(rating.quote_platform_line(doc, platforms))
    t = rating.totals(lines, Decimal(0), doc.currency)
    return Quote(plan=row.name, plan_version=row.version, currency=doc.currency, users=users,
                 platforms=platforms, term=term, lines=lines, monthly=t.subtotal)
