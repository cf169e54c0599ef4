"""Use cases of the SSH CA: issue and revoke certificates, and what host agents need."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from tenantry.access.models import User
from tenantry.access.principal import PROVIDER_ROLES, Principal, role_rank, scoped
from tenantry.access.ssh import policy
from tenantry.access.ssh.ca import SshCertificateAuthority, parse_user_key
from tenantry.access.ssh.models import SshCert
from tenantry.access.ssh.schemas import (
    SshCertCreate,
    SshCertIssued,
    SshCertPublic,
    SshHostConfig,
    SshHostPerson,
)
from tenantry.access.support.service import granted_platforms
from tenantry.core.db import utcnow
from tenantry.core.errors import InvalidInput, NotAllowed, NotFound
from tenantry.platforms.models import Host, Isv, Platform

# Clocks drift: a certificate is valid from a little before it was issued.
BACKDATE = dt.timedelta(seconds=60)
# how long after a revocation or disabling the host still ends that person's sessions
CUT_OFF_WINDOW = dt.timedelta(hours=24)


def _audit(session: Session, *, actor: str, action: str, target: str, source: str = "api",
           org: str | None = None, detail: dict[str, Any] | None = None) -> None:
    """Record in the audit log, in the caller's transaction, when that package is present."""
    try:
        from tenantry.access.audit.service import record  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return
    record(session, actor=actor, action=action, target=target, source=source, org=org,
           detail=detail)


def _lesser_roles(role: str) -> set[str]:
    """The roles at most `role`, on its side (provider or ISV)."""
    side = [r for r in ("provider-admin", "provider-operator") if role in PROVIDER_ROLES] or [
        "isv-admin", "isv-operator", "isv-viewer"]
    return {r for r in side if role_rank(r) <= role_rank(role)}


def platforms_on(session: Session, host_id: str) -> list[policy.PlatformOnHost]:
    """The host's platforms as the policy sees them, with live support grants marked."""
    granted = granted_platforms(session, host_id)
    rows = session.execute(select(Platform.id, Isv.name, Platform.service_level)
                           .join(Isv, Isv.id == Platform.isv_id)
                           .where(Platform.host_id == host_id).order_by(Platform.id))
    return [policy.PlatformOnHost(id=pid, isv=isv, hands_on=level == "hands-on",
                                  support_granted=pid in granted)
            for pid, isv, level in rows]


def _find_host(session: Session, principal: Principal, ref: str) -> Host:
    host = session.scalar(select(Host).where(or_(Host.name == ref, Host.id == ref)))
    if host is not None and not principal.is_provider:
        # ISV users see only hosts that carry one of their platforms
        mine = session.scalar(select(Platform.id).where(Platform.host_id == host.id,
                                                        Platform.isv_id == principal.isv_id))
        host = host if mine else None
    if host is None:
        raise NotFound(f"no host {ref!r}", field="host")
    return host


def _public(cert: SshCert, host_name: str) -> SshCertPublic:
    return SshCertPublic(serial=cert.serial, username=cert.username, host=host_name,
                         principals=cert.principals, reason=cert.reason,
                         valid_after=cert.valid_after, valid_before=cert.valid_before,
                         revoked_at=cert.revoked_at)


def issue_certificate(*, session: Session, principal: Principal, ca: SshCertificateAuthority,
                      spec: SshCertCreate, now: dt.datetime | None = None) -> SshCertIssued:
    """Sign the caller's own key for one host, for minutes, bound to a reason."""
    reason = spec.reason.strip()
    if len(reason) < 3:
        raise InvalidInput("reason must say why, in 3 to 500 characters", field="reason")
    parse_user_key(spec.public_key)
    host = _find_host(session, principal, spec.host)
    isv_name = (session.scalar(select(Isv.name).where(Isv.id == principal.isv_id))
                if principal.isv_id else None)
    allowed = policy.grant(username=principal.username, role=principal.role, isv=isv_name,
                           host=host.name, platforms=platforms_on(session, host.id))
    if spec.ttl_seconds > allowed.max_ttl:
        raise InvalidInput(f"ttl_seconds may be at most {allowed.max_ttl} for role "
                           f"{principal.role}", field="ttl_seconds")
    now = now or utcnow()
    row = SshCert(user_id=principal.user_id, username=principal.username, role=principal.role,
                  isv_id=principal.isv_id, host_id=host.id,
                  principals=list(allowed.principals), extensions=sorted(allowed.extensions),
                  reason=reason, public_key=spec.public_key.strip(),
                  valid_after=now - BACKDATE,
                  valid_before=now + dt.timedelta(seconds=spec.ttl_seconds))
    session.add(row)
    session.flush()  # the serial
    row.certificate = ca.sign(public_key=row.public_key, serial=row.serial,
                              key_id=f"{principal.username}/{row.serial}",
                              principals=row.principals, extensions=row.extensions,
                              valid_after=row.valid_after, valid_before=row.valid_before)
    _audit(session, actor=principal.username, action="ssh.cert.issue",
           target=f"host:{host.name}", org=principal.isv_id,
           detail={"serial": row.serial, "reason": reason, "principals": row.principals,
                   "valid_before": row.valid_before.isoformat()})
    session.commit()
    return SshCertIssued(serial=row.serial, certificate=row.certificate,
                         principals=row.principals,
                         login=policy.login_account(principal.username),
                         valid_before=row.valid_before)


def list_certificates(*, session: Session, principal: Principal,
                      active_only: bool = True) -> list[SshCertPublic]:
    query = (scoped(select(SshCert), principal, "view", SshCert.isv_id)
             .add_columns(Host.name).join(Host, Host.id == SshCert.host_id))
    if active_only:
        query = query.where(SshCert.valid_before > utcnow(), SshCert.revoked_at.is_(None))
    return [_public(cert, name)
            for cert, name in session.execute(query.order_by(SshCert.serial.desc()).limit(500))]


def revoke_certificate(*, session: Session, principal: Principal, serial: int) -> SshCertPublic:
    """Revoke one certificate: its owner may, and admins within their scope."""
    found = session.execute(
        scoped(select(SshCert), principal, "view", SshCert.isv_id)
        .add_columns(Host.name).join(Host, Host.id == SshCert.host_id)
        .where(SshCert.serial == serial).with_for_update(of=SshCert)).first()
    if found is None:
        raise NotFound(f"no certificate with serial {serial}", field="serial")
    cert, host_name = found
    if cert.user_id != principal.user_id:
        try:
            principal.require("admin")
        except NotAllowed:
            raise NotAllowed("only the certificate's owner or an admin may revoke it") from None
    if cert.revoked_at is None:
        cert.revoked_at = utcnow()
        cert.revoked_by = principal.username
        # wake the host's agent (it long-polls on the generation)
        session.execute(update(Host).where(Host.id == cert.host_id)
                        .values(generation=Host.generation + 1))
        _audit(session, actor=principal.username, action="ssh.cert.revoke",
               target=f"host:{host_name}", org=cert.isv_id,
               detail={"serial": serial, "owner": cert.username})
        session.commit()
    return _public(cert, host_name)


def revoked_serials(*, session: Session) -> list[int]:
    """Revoked certificates that would still be valid; expired ones need no listing."""
    return list(session.scalars(select(SshCert.serial).where(
        SshCert.revoked_at.is_not(None), SshCert.valid_before > utcnow() - BACKDATE)
        .order_by(SshCert.serial)))


def host_config(*, session: Session, host: Host, ca: SshCertificateAuthority) -> SshHostConfig:
    """Who may log in to the host now, as which account, with which sudo.

    People with a live certificate for the host, with rights from their *current* role:
    a disabled user, a demoted one or an ISV whose platform left the host loses them at
    the agent's next poll, even while the certificate is still valid.
    """
    now = utcnow()
    here = platforms_on(session, host.id)
    rows = session.execute(
        select(User.username, User.role, Isv.name, SshCert.role, SshCert.valid_before)
        .join(SshCert, SshCert.user_id == User.id)
        .outerjoin(Isv, Isv.id == User.isv_id)
        .where(SshCert.host_id == host.id, SshCert.revoked_at.is_(None),
               SshCert.valid_before > now, User.disabled.is_(False))
        .order_by(User.username))
    best: dict[str, tuple[str, str | None, dt.datetime]] = {}
    for username, user_role, isv, cert_role, valid_before in rows:
        # a certificate gives no more than the role it was issued under (a token may act
        # with less than its user), nor more than the person's role today
        role = user_role if cert_role not in _lesser_roles(user_role) else str(cert_role)
        if username in best:
            held_role, _, held_until = best[username]
            role = max(role, held_role, key=role_rank)
            valid_before = max(valid_before, held_until)
        best[username] = (role, isv, valid_before)
    people = []
    for username, (person_role, person_isv, until) in best.items():
        try:
            rights = policy.rights(role=person_role, isv=person_isv, platforms=here)
        except NotAllowed:
            continue
        people.append(SshHostPerson(
            username=username, account=policy.login_account(username),
            principals=[policy.principal(username, host.name)], root=rights.root,
            platforms=list(rights.platforms), valid_before=until))
    return SshHostConfig(ca_public_key=ca.public_key_line(), login_group=policy.LOGIN_GROUP,
                         people=people, cut_off=_cut_off(session, host, now, people),
                         revoked_serials=revoked_serials(session=session))


def _cut_off(session: Session, host: Host, now: dt.datetime,
             people: list[SshHostPerson]) -> list[str]:
    """Accounts whose open sessions must end: their certificate for the host was revoked or
    they were disabled within CUT_OFF_WINDOW, and they hold no other live certificate.
    (A certificate that merely expires leaves an open session be, as OpenSSH does.)"""
    staying = {p.username for p in people}
    since = now - CUT_OFF_WINDOW
    names = session.scalars(
        select(SshCert.username).join(User, User.id == SshCert.user_id)
        .where(SshCert.host_id == host.id, SshCert.valid_before > since,
               or_(SshCert.revoked_at.is_not(None), User.disabled.is_(True)))
        .distinct())
    return sorted(policy.login_account(n) for n in names if n not in staying)


def krl(*, session: Session, ca: SshCertificateAuthority) -> bytes:
    return ca.krl(revoked_serials(session=session))


def record_host_events(*, session: Session, host: Host, events: list[dict[str, Any]]) -> int:
    """Logins and sudo runs read from a host's logs go to the audit log.

    The actor is never taken from the agent's word alone: a login names the person by the
    certificate's key id, and a sudo run by the login account, which is the person's own.
    """
    accounts = {policy.login_account(name): name for name in session.scalars(
        select(SshCert.username).where(SshCert.host_id == host.id).distinct())}
    count = 0
    for event in events:
        action = str(event.get("action", ""))
        if action not in ("ssh.login", "ssh.login.failed", "host.sudo", "ssh.session.ended"):
            continue
        account = str(event.get("account") or "")
        actor = accounts.get(account) or str(event.get("actor") or account or "unknown")
        detail = {k: str(v)[:500] for k, v in event.items() if v is not None}
        _audit(session, actor=actor[:80], action=action, target=f"host:{host.name}",
               source="agent", detail=detail)
        count += 1
    session.commit()
    return count
