"""Use cases of monitoring people call: checks and thresholds, contacts, maintenance
windows, the alert history and the status tree.

What the monitoring programs call (service discovery, the webhook) is in `ingest` and
`discovery`; what the worker runs (delivery, reconciling with Prometheus) in `outbox` and
`sync`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from tenantry.access.audit.service import record_for
from tenantry.access.principal import Principal, scoped
from tenantry.core.db import rowcount, utcnow
from tenantry.core.errors import Conflict, InvalidInput, NotAllowed, NotFound
from tenantry.core.events import emit
from tenantry.core.names import new_id
from tenantry.monitoring import catalog as cat
from tenantry.monitoring.models import (
    Alert,
    AlertChange,
    Contact,
    Maintenance,
    Notification,
    ThresholdSetting,
)
from tenantry.monitoring.schemas import (
    AlertChangePublic,
    AlertPublic,
    CheckPublic,
    CheckState,
    ContactCreate,
    ContactPublic,
    HostNode,
    Level,
    MaintenanceCreate,
    MaintenancePublic,
    NotificationPublic,
    PlatformNode,
    RegionNode,
    StatusPublic,
    ThresholdPublic,
    ThresholdSet,
)
from tenantry.platforms.models import Host, Isv, Platform, Region
from tenantry.platforms.service import get_isv, get_platform

LEVEL_RANK: dict[str, int] = {"ok": 0, "unknown": 1, "busy": 2, "overloaded": 3}
# The status matrix: which checks speak for which column.
MATRIX: dict[str, frozenset[str]] = {
    "Network": frozenset({"interface_errors", "interface_saturation", "proxy", "responding",
                          "response_time", "tls_expiry", "heartbeat"}),
    "Compute": frozenset({"cpu", "memory", "swap", "processes", "rogue", "db_memory"}),
    "Storage": frozenset({"df", "db_up", "db_recovery", "connections", "longest_transaction",
                          "cache_hit", "cache_write", "checkpoint", "wal_space"}),
}
NOC = "NOC"


def plain_name(value: str, *, field: str) -> str:
    """A host, region or check name as given by a caller: plain, or refused by field (it
    goes into queries and PromQL label matchers)."""
    if len(value) > 100 or not cat.TARGET_RE.fullmatch(value):
        raise InvalidInput(f"{field} must be a plain name (letters, digits, . _ : / @ -)",
                           field=field)
    return value


def worst(levels: Iterable[str]) -> Level:
    best: Level = "ok"
    for level in levels:
        if LEVEL_RANK[level] > LEVEL_RANK[best]:
            best = level  # type: ignore[assignment]
    return best


# ------------------------------------------------------------------ checks and thresholds


def list_checks(*, session: Session, principal: Principal) -> list[CheckPublic]:
    principal.require("view")
    counts: dict[str, int] = dict(session.execute(
        scoped(select(ThresholdSetting), principal, "view", ThresholdSetting.isv_id)
        .with_only_columns(ThresholdSetting.check, func.count())
        .group_by(ThresholdSetting.check)).all())
    return [CheckPublic(name=c.name, kind=c.kind.value, summary=c.summary, unit=c.unit,
                        higher_is_worse=c.higher_is_worse, busy=c.busy,
                        overloaded=c.overloaded, clear=c.clear, hold_seconds=c.hold,
                        overrides=counts.get(c.name, 0))
            for c in cat.catalog().values()]


def _threshold_public(row: ThresholdSetting) -> ThresholdPublic:
    checks = cat.catalog()
    resolved = cat.resolve(_override(row), checks)
    return ThresholdPublic(check=row.check, scope=row.scope, target=row.target,
                           busy=resolved.busy, overloaded=resolved.overloaded,
                           clear=resolved.clear, set_by=row.set_by, updated_at=row.updated_at)


def _override(row: ThresholdSetting) -> cat.ThresholdOverride:
    return cat.ThresholdOverride(check=row.check, scope=cat.Scope(row.scope), target=row.target,
                                 busy=row.busy, overloaded=row.overloaded, clear=row.clear)


def overrides(session: Session) -> list[cat.ThresholdOverride]:
    """Every override, for the rule file."""
    rows = session.scalars(select(ThresholdSetting).order_by(
        ThresholdSetting.check, ThresholdSetting.scope, ThresholdSetting.target))
    return [_override(r) for r in rows]


def _scope_target(session: Session, principal: Principal, scope: str,
                  target: str) -> tuple[str, str | None]:
    """The target's canonical name and its ISV (None for a host), or NotFound."""
    if scope == "isv":
        isv = get_isv(session, principal, target, "admin")
        return isv.name, isv.id
    if scope == "platform":
        platform = get_platform(session, principal, target, "admin")
        return f"{platform.isv.name}/{platform.name}", platform.isv_id
    if not principal.is_provider:
        raise NotAllowed("only the provider sets thresholds of a host")
    plain_name(target, field="host")
    if session.scalar(select(Host.id).where(Host.name == target)) is None:
        raise NotFound(f"no host named {target!r}", field="host")
    return target, None


def set_threshold(*, session: Session, principal: Principal,
                  spec: ThresholdSet) -> ThresholdPublic:
    principal.require("admin")
    scope, target = spec.scope
    checks = cat.catalog()
    if spec.check not in checks:
        raise InvalidInput(f"unknown check {spec.check!r}; `tenantry check list` shows them",
                           field="check")
    name, isv_id = _scope_target(session, principal, scope, target)
    override = cat.parse_override({"check": spec.check, "scope": scope, "target": name,
                                   "busy": spec.busy, "overloaded": spec.overloaded,
                                   "clear": spec.clear}, checks)
    row = session.get(ThresholdSetting, (spec.check, scope, name))
    if row is None:
        row = ThresholdSetting(check=spec.check, scope=scope, target=name, isv_id=isv_id,
                               set_by=principal.username)
        session.add(row)
    row.busy, row.overloaded, row.clear = override.busy, override.overloaded, override.clear
    row.set_by, row.updated_at = principal.username, utcnow()
    session.flush()
    record_for(session, principal, action="threshold.set", target=f"{scope}:{name}",
               source="api", org=isv_id,
               detail={"check": spec.check, "busy": row.busy, "overloaded": row.overloaded,
                       "clear": row.clear})
    session.commit()
    return _threshold_public(row)


def list_thresholds(*, session: Session, principal: Principal,
                    check: str | None = None) -> list[ThresholdPublic]:
    query = scoped(select(ThresholdSetting), principal, "view", ThresholdSetting.isv_id)
    if check is not None:
        query = query.where(ThresholdSetting.check == check)
    rows = session.scalars(query.order_by(ThresholdSetting.check, ThresholdSetting.scope,
                                          ThresholdSetting.target))
    return [_threshold_public(r) for r in rows]


def unset_threshold(*, session: Session, principal: Principal, check: str, scope: str,
                    target: str) -> None:
    principal.require("admin")
    if scope not in ("isv", "host", "platform"):
        raise InvalidInput("scope must be isv, host or platform", field="scope")
    plain_name(check, field="check")
    name, isv_id = _scope_target(session, principal, scope, target)
    gone = rowcount(session.execute(delete(ThresholdSetting).where(
        ThresholdSetting.check == check, ThresholdSetting.scope == scope,
        ThresholdSetting.target == name)))
    if not gone:
        raise NotFound(f"no threshold of {check!r} for {scope} {name!r}", field="check")
    record_for(session, principal, action="threshold.unset", target=f"{scope}:{name}",
               source="api", org=isv_id, detail={"check": check})
    session.commit()


# ------------------------------------------------------------------ contacts


def _contact_public(c: Contact, isv: str | None) -> ContactPublic:
    return ContactPublic(id=c.id, name=c.name, isv=isv, email=c.email, phone=c.phone,
                         hours=c.hours, created_at=c.created_at)


def add_contact(*, session: Session, principal: Principal, spec: ContactCreate) -> ContactPublic:
    principal.require("admin")
    isv_id: str | None = None
    isv_name: str | None = None
    if spec.isv is not None:
        isv = get_isv(session, principal, spec.isv, "admin")
        isv_id, isv_name = isv.id, isv.name
    elif not principal.is_provider:
        if principal.isv_id is None:
            raise NotAllowed("only the provider adds NOC contacts")
        isv_id = principal.isv_id
        isv_name = session.scalar(select(Isv.name).where(Isv.id == isv_id))
    same = select(Contact.id).where(Contact.name == spec.name, Contact.isv_id.is_(None)
                                    if isv_id is None else Contact.isv_id == isv_id)
    if session.scalar(same) is not None:
        raise Conflict(f"contact {spec.name!r} exists already", field="name")
    contact = Contact(id=new_id("ct" if isv_id else "noc"), name=spec.name, isv_id=isv_id,
                      email=spec.email, phone=spec.phone, hours=spec.hours)
    session.add(contact)
    session.flush()
    record_for(session, principal, action="contact.add", target=f"contact:{spec.name}",
               source="api", org=isv_id, detail={"isv": isv_name, "hours": spec.hours})
    session.commit()
    return _contact_public(contact, isv_name)


def list_contacts(*, session: Session, principal: Principal) -> list[ContactPublic]:
    rows = session.execute(
        scoped(select(Contact), principal, "view", Contact.isv_id).add_columns(Isv.name)
        .outerjoin(Isv, Isv.id == Contact.isv_id).order_by(Isv.name.nulls_first(), Contact.name))
    return [_contact_public(c, isv) for c, isv in rows]


def remove_contact(*, session: Session, principal: Principal, contact_id: str) -> None:
    contact = session.scalar(scoped(select(Contact), principal, "admin", Contact.isv_id)
                             .where(Contact.id == contact_id))
    if contact is None:
        raise NotFound(f"no contact {contact_id!r}", field="contact")
    if contact.isv_id is None and not principal.is_provider:
        raise NotAllowed("only the provider removes NOC contacts")
    session.delete(contact)
    record_for(session, principal, action="contact.remove", target=f"contact:{contact.name}",
               source="api", org=contact.isv_id)
    session.commit()


# ------------------------------------------------------------------ alerts


def _notification_public(n: Notification, principal: Principal) -> NotificationPublic:
    recipient = n.recipient
    if not principal.is_provider and n.contact_id is not None and n.contact_id.startswith("noc"):
        recipient = NOC
    return NotificationPublic(channel=n.channel, recipient=recipient, state=n.state,
                              status=n.status, attempts=n.attempts, sent_at=n.sent_at,
                              last_error=n.last_error)


def alert_public(alert: Alert, *, principal: Principal, changes: list[AlertChange] | None = None,
                 notifications: list[Notification] | None = None) -> AlertPublic:
    labels = alert.labels or {}
    return AlertPublic(
        id=alert.id, check=alert.check, level=alert.level, kind=alert.kind,
        target=alert.target, host=alert.host, region=alert.region, isv=labels.get("isv"),
        platform=labels.get("platform"), summary=alert.summary, value=alert.value,
        threshold=alert.threshold, started_at=alert.started_at, ended_at=alert.ended_at,
        silenced_by=alert.maintenance_id, suppressed=alert.suppressed,
        changes=[AlertChangePublic(state=c.state, at=c.at, value=c.value, note=c.note)
                 for c in changes or ()],
        notifications=[_notification_public(n, principal) for n in notifications or ()])


def _parse_since(since: str | None) -> dt.datetime | None:
    """An ISO time, or a span back from now: 30m, 6h, 7d."""
    if since is None:
        return None
    text = since.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if text[-1:] in units and text[:-1].isdigit():
        return utcnow() - dt.timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput("since must be an ISO time (2026-11-30T12:00:00Z) or a span "
                           "back from now (30m, 6h, 7d)", field="since") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _own_hosts(session: Session, principal: Principal) -> set[str]:
    """The hosts an ISV's platforms run on now."""
    return set(session.scalars(
        select(Host.name).join(Platform, Platform.host_id == Host.id)
        .where(Platform.isv_id == principal.isv_id, Platform.state != "destroyed")))


def _visible_alerts(session: Session, principal: Principal,
                    hosts: Collection[str] | None = None) -> Select[Alert]:
    """Alerts the principal may see: a provider's, all; an ISV user's, its platforms' and
    the host checks of the hosts they run on (a platform-scoped token: its platform's).
    `hosts`: those hosts' names when the caller has them already."""
    query = scoped(select(Alert), principal, "view", Alert.isv_id, Alert.platform_id)
    if principal.is_provider or principal.platform_id is not None:
        return query
    if hosts is None:
        hosts = _own_hosts(session, principal)
    return select(Alert).where((Alert.isv_id == principal.isv_id) | (
        (Alert.kind == "host") & Alert.host.in_(hosts or {""})))


def list_alerts(*, session: Session, principal: Principal, platform: str | None = None,
                host: str | None = None, check: str | None = None, open_only: bool = False,
                since: str | None = None, limit: int = 200) -> list[AlertPublic]:
    query = _visible_alerts(session, principal)
    if platform is not None:
        query = query.where(Alert.platform_id == get_platform(session, principal, platform).id)
    if host is not None:
        query = query.where(Alert.host == plain_name(host, field="host"))
    if check is not None:
        query = query.where(Alert.check == plain_name(check, field="check"))
    if open_only:
        query = query.where(Alert.ended_at.is_(None))
    after = _parse_since(since)
    if after is not None:
        query = query.where(Alert.started_at >= after)
    alerts = list(session.scalars(query.order_by(Alert.started_at.desc(), Alert.id.desc())
                                  .limit(max(1, min(limit, 1000)))))
    notes: dict[int, list[Notification]] = {}
    if alerts:
        for n in session.scalars(select(Notification).where(
                Notification.alert_id.in_([a.id for a in alerts])).order_by(Notification.id)):
            notes.setdefault(n.alert_id or 0, []).append(n)
    return [alert_public(a, principal=principal, notifications=notes.get(a.id, []))
            for a in alerts]


def get_alert(*, session: Session, principal: Principal, alert_id: int) -> AlertPublic:
    alert = session.scalar(_visible_alerts(session, principal).where(Alert.id == alert_id))
    if alert is None:
        raise NotFound(f"no alert {alert_id}", field="alert")
    changes = list(session.scalars(select(AlertChange).where(AlertChange.alert_id == alert.id)
                                   .order_by(AlertChange.id)))
    notes = list(session.scalars(select(Notification).where(Notification.alert_id == alert.id)
                                 .order_by(Notification.id)))
    return alert_public(alert, principal=principal, changes=changes, notifications=notes)


# ------------------------------------------------------------------ maintenance


def _maintenance_public(m: Maintenance, now: dt.datetime | None = None) -> MaintenancePublic:
    now = now or utcnow()
    return MaintenancePublic(id=m.id, scope=m.scope, target=m.target, starts_at=m.starts_at,
                             ends_at=m.ends_at, message=m.message, created_by=m.created_by,
                             created_at=m.created_at, silence_id=m.silence_id,
                             active=m.cancelled_at is None and m.starts_at <= now < m.ends_at)


def create_maintenance(*, session: Session, principal: Principal,
                       spec: MaintenanceCreate) -> MaintenancePublic:
    """Posted now; announced to the affected ISVs' contacts by the outbox; Alertmanager's
    silence is made by the worker (`sync`), so a refused or unreachable Alertmanager loses
    nothing."""
    scope, target = spec.scope
    if spec.ends_at <= spec.starts_at:
        raise InvalidInput("to must be after from", field="to")
    if spec.ends_at <= utcnow():
        raise InvalidInput("to is in the past: the window would silence nothing", field="to")
    if spec.ends_at - spec.starts_at > dt.timedelta(days=14):
        raise InvalidInput("a maintenance window lasts at most 14 days", field="to")
    isv_id: str | None = None
    if scope == "platform":
        platform = get_platform(session, principal, target, "operate")
        if not principal.is_provider and platform.service_level != "hands-on":
            raise NotAllowed("the provider maintains hands-off platforms")
        target, isv_id = f"{platform.isv.name}/{platform.name}", platform.isv_id
    else:
        principal.require("provider")
        principal.require("operate")
        model = Region if scope == "region" else Host
        plain_name(target, field=scope)
        if session.scalar(select(model.id).where(model.name == target)) is None:
            raise NotFound(f"no {scope} named {target!r}", field=scope)
    window = Maintenance(id=new_id("mw"), scope=scope, target=target, isv_id=isv_id,
                         starts_at=spec.starts_at, ends_at=spec.ends_at, message=spec.message,
                         created_by=principal.username)
    session.add(window)
    session.flush()
    from tenantry.monitoring.ingest import announce_maintenance

    announce_maintenance(session, window)
    emit(session, "MAINTENANCE", f"Maintenance of {scope} {target} from "
         f"{spec.starts_at:%Y-%m-%d %H:%M} to {spec.ends_at:%Y-%m-%d %H:%M} UTC: "
         f"{spec.message}", isv_id=isv_id)
    record_for(session, principal, action="maintenance.create", target=f"{scope}:{target}",
               source="api", org=isv_id,
               detail={"id": window.id, "from": spec.starts_at.isoformat(),
                       "to": spec.ends_at.isoformat()})
    session.commit()
    return _maintenance_public(window)


def _visible_maintenance(session: Session, principal: Principal) -> list[Maintenance]:
    query = select(Maintenance).where(Maintenance.cancelled_at.is_(None),
                                      Maintenance.ends_at > utcnow())
    if not principal.is_provider:
        principal.require("view")
        # An ISV sees its platforms' windows and those of the hosts and regions they run on.
        mine = select(Platform.id, Host.name, Region.name).join(Isv).join(
            Region, Region.id == Platform.region_id).outerjoin(
            Host, Host.id == Platform.host_id).where(Platform.isv_id == principal.isv_id)
        rows = session.execute(mine).all()
        hosts = {h for _, h, _ in rows if h}
        regions = {r for _, _, r in rows}
        query = query.where(
            (Maintenance.isv_id == principal.isv_id)
            | ((Maintenance.scope == "host") & Maintenance.target.in_(hosts or {""}))
            | ((Maintenance.scope == "region") & Maintenance.target.in_(regions or {""})))
    return list(session.scalars(query.order_by(Maintenance.starts_at)))


def list_maintenance(*, session: Session, principal: Principal) -> list[MaintenancePublic]:
    now = utcnow()
    return [_maintenance_public(m, now) for m in _visible_maintenance(session, principal)]


def cancel_maintenance(*, session: Session, principal: Principal,
                       maintenance_id: str) -> MaintenancePublic:
    window = session.get(Maintenance, maintenance_id)
    if window is None or (not principal.is_provider and window.isv_id != principal.isv_id):
        raise NotFound(f"no maintenance window {maintenance_id!r}", field="maintenance")
    principal.require("operate")
    if window.isv_id is None:
        principal.require("provider")
    if window.cancelled_at is None:
        window.cancelled_at = utcnow()
        record_for(session, principal, action="maintenance.cancel",
                   target=f"{window.scope}:{window.target}", source="api", org=window.isv_id,
                   detail={"id": window.id})
        session.commit()
    return _maintenance_public(window)


# ------------------------------------------------------------------ status


def status(*, session: Session, principal: Principal) -> StatusPublic:
    """Region → host → platform → checks, with the status matrix per region.

    A check is OK unless an alert of it is open on the target (its level then); everything
    on a host that is offline is unknown.
    """
    principal.require("view")
    platforms = session.execute(
        scoped(select(Platform), principal, "view", Platform.isv_id, Platform.id)
        .add_columns(Isv.name, Region.name).join(Isv).join(
            Region, Region.id == Platform.region_id).where(Platform.state != "destroyed")
        .order_by(Isv.name, Platform.name)).all()
    host_query = select(Host, Region.name).join(Region)
    if not principal.is_provider:
        host_query = host_query.where(Host.id.in_({p.host_id for p, _, _ in platforms
                                                   if p.host_id} or {""}))
    hosts = session.execute(host_query.order_by(Region.name, Host.name)).all()
    own = {h.name for h, _ in hosts}  # for an ISV, the hosts its platforms run on
    open_alerts = list(session.scalars(_visible_alerts(session, principal, own).where(
        Alert.ended_at.is_(None), Alert.suppressed.is_(None))))
    # When each check last changed to OK (its latest resolution in the last 30 days).
    ended = session.execute(
        _visible_alerts(session, principal, own)
        .with_only_columns(Alert.kind, Alert.host, Alert.platform_id, Alert.check,
                           func.max(Alert.ended_at))
        .where(Alert.ended_at.is_not(None),
               Alert.started_at > utcnow() - dt.timedelta(days=30))
        .group_by(Alert.kind, Alert.host, Alert.platform_id, Alert.check)).all()
    resolved: dict[tuple[str, str, str], dt.datetime] = {}
    for kind, host_name, platform_id, check_name, at in ended:
        key = (("host", host_name or "") if kind == "host" else ("platform", platform_id or ""))
        found = resolved.get((*key, check_name))
        if at is not None and (found is None or at > found):
            resolved[(*key, check_name)] = at
    checks = cat.catalog()
    by_target: dict[tuple[str, str], list[Alert]] = {}
    for a in open_alerts:
        key = ("host", a.host or "") if a.kind == "host" else ("platform", a.platform_id or "")
        by_target.setdefault(key, []).append(a)

    def states(kinds: tuple[str, ...], key: tuple[str, str], unknown: bool) -> list[CheckState]:
        found = {a.check: a for a in sorted(by_target.get(key, []),
                                            key=lambda a: LEVEL_RANK[a.level])}
        out = []
        for c in checks.values():
            if c.kind.value not in kinds:
                continue
            a = found.get(c.name)
            level: Level = "unknown" if unknown else ("ok" if a is None else a.level)  # type: ignore[assignment]
            out.append(CheckState(check=c.name, level=level, value=a.value if a else None,
                                  since=a.started_at if a else resolved.get((*key, c.name)),
                                  alert_id=a.id if a else None))
        return out

    regions: dict[str, RegionNode] = {}
    for host, region in hosts:
        offline = host.state != "online"
        node = HostNode(name=host.name, state=host.state, level="ok",
                        checks=states(("host",), ("host", host.name), False),
                        platforms=[])
        for p, isv_name, _ in platforms:
            if p.host_id != host.id:
                continue
            pc = states(("platform", "database"), ("platform", p.id), offline)
            node.platforms.append(PlatformNode(name=f"{isv_name}/{p.name}", id=p.id,
                                               level=worst(c.level for c in pc), checks=pc))
        node.level = worst([*(c.level for c in node.checks),
                            *(p.level for p in node.platforms)])
        reg = regions.setdefault(region, RegionNode(name=region, level="ok", matrix={},
                                                    hosts=[]))
        reg.hosts.append(node)
    for reg in regions.values():
        every = [c for h in reg.hosts for c in (*h.checks,
                                               *(x for p in h.platforms for x in p.checks))]
        reg.matrix = {col: worst(c.level for c in every if c.check in names)
                      for col, names in MATRIX.items()}
        reg.level = worst(reg.matrix.values())
    return StatusPublic(at=utcnow(), regions=list(regions.values()),
                        maintenance=list_maintenance(session=session, principal=principal))
