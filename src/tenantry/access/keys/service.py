"""Use cases: rotating the master key, and ISVs' certificates for their own domains."""

from __future__ import annotations

import datetime as dt
import logging
import os

from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from tenantry.access.keys.certs import check_domain, check_site_cert
from tenantry.access.keys.models import SiteCertificate
from tenantry.access.keys.schemas import (
    RotationPublic,
    SiteCertificateCreate,
    SiteCertificatePublic,
)
from tenantry.access.principal import Principal
from tenantry.core.crypto import V2, MasterKey, SecretBox, write_private
from tenantry.core.db import utcnow
from tenantry.core.errors import InvalidInput, NotFound, Unavailable
from tenantry.core.events import emit
from tenantry.core.keystore import DataKey
from tenantry.core.names import new_id

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- master key


def rotate_master(*, sessions: sessionmaker[Session], box: SecretBox,
                  new_key: SecretStr) -> RotationPublic:
    """Re-wrap every data key under `new_key`; secrets themselves are not touched.

    With a key file, the new key is first written beside it as `master.key.next`, the data
    keys are re-wrapped in one transaction, and then the file is renamed over
    `master.key`. A crash in between leaves `.next`, which every process picks up as soon
    as it meets a data key wrapped by it. Running processes keep their unwrapped data keys,
    so nothing stops.
    """
    old, new = box.master, MasterKey(new_key)
    if new.key_id == old.key_id:
        raise InvalidInput("the new master key is the current one", field="new_key")
    pending = box.key_file.with_name(box.key_file.name + ".next") if box.key_file else None
    if pending is not None:
        write_private(pending, (new_key.get_secret_value() + "\n").encode())
    converted = convert_v1(sessions=sessions, box=box)
    with sessions() as session:
        session.execute(text("LOCK TABLE data_keys IN EXCLUSIVE MODE"))
        rows = session.scalars(select(DataKey).order_by(DataKey.id)).all()
        for row in rows:
            if row.master_key_id == new.key_id:
                continue  # a rotation that stopped half-way, run again
            if row.master_key_id != old.key_id:
                raise Unavailable(f"data key {row.id} is wrapped by {row.master_key_id}, "
                                  f"not by the current master key {old.key_id}")
            row.wrapped = new.wrap(old.unwrap(row.wrapped))
            row.master_key_id = new.key_id
            row.rotated_at = utcnow()
        session.commit()
    if pending is not None and box.key_file is not None:
        os.replace(pending, box.key_file)
    log.warning("master key rotated: %s -> %s, %d data keys", old.key_id, new.key_id,
                len(rows))
    return RotationPublic(old_master_key_id=old.key_id, new_master_key_id=new.key_id,
                          data_keys=len(rows), converted=converted,
                          key_file=str(box.key_file) if box.key_file else None)


def convert_v1(*, sessions: sessionmaker[Session], box: SecretBox) -> int:
    """Re-encrypt secrets written before envelope encryption (plain Fernet under the master
    key) with their organisation's data key, so a new master key can do without them."""
    from tenantry.access.models import User
    from tenantry.platforms.models import Platform

    count = 0
    with sessions() as session:
        for p in session.scalars(select(Platform).with_for_update()):
            if p.db_password and not p.db_password.startswith(V2):
                p.db_password = box.encrypt(box.decrypt(p.db_password), org=p.isv_id)
                count += 1
            cert = p.desired.cert
            if cert and cert.key and not cert.key.startswith(V2):
                desired = p.desired.model_copy(deep=True)  # assigned back: the ORM sees it
                assert desired.cert is not None
                desired.cert.key = box.encrypt(box.decrypt(cert.key), org=p.isv_id)
                p.desired = desired
                count += 1
        for u in session.scalars(select(User).where(User.totp_secret.is_not(None))
                                 .with_for_update()):
            if u.totp_secret and not u.totp_secret.startswith(V2):
                u.totp_secret = box.encrypt(box.decrypt(u.totp_secret))
                count += 1
        session.commit()
    return count


def data_key_summary(session: Session) -> list[dict[str, str | int]]:
    rows = session.execute(text("SELECT master_key_id, count(*) FROM data_keys "
                                "GROUP BY master_key_id ORDER BY 1")).all()
    return [{"master_key_id": r[0], "data_keys": int(r[1])} for r in rows]


# ---------------------------------------------------------------- site certificates


def _public(cert: SiteCertificate, isv: str, now: dt.datetime) -> SiteCertificatePublic:
    return SiteCertificatePublic(
        id=cert.id, isv=isv, domain=cert.domain, issuer=cert.issuer,
        fingerprint=cert.fingerprint, not_before=cert.not_before, not_after=cert.not_after,
        days_left=(cert.not_after - now).days, created_at=cert.created_at)


def upload_certificate(*, session: Session, principal: Principal, isv: str,
                       spec: SiteCertificateCreate, secrets: SecretBox) -> SiteCertificatePublic:
    """Store a validated certificate for one of the ISV's domains (replacing an older one)."""
    from tenantry.platforms.service import get_isv

    owner = get_isv(session, principal, isv, "admin")
    checked = check_site_cert(spec.domain, spec.certificate_pem,
                              spec.key_pem.get_secret_value())
    cert = session.scalar(select(SiteCertificate).where(
        SiteCertificate.isv_id == owner.id, SiteCertificate.domain == checked.domain))
    if cert is None:
        cert = SiteCertificate(id=new_id("sc"), isv_id=owner.id, domain=checked.domain)
        session.add(cert)
    cert.certificate_pem = spec.certificate_pem.strip() + "\n"
    cert.key = secrets.encrypt(spec.key_pem, org=owner.id)
    cert.issuer = checked.issuer
    cert.fingerprint = checked.fingerprint
    cert.not_before = checked.not_before
    cert.not_after = checked.not_after
    cert.expiry_notified_on = None
    cert.created_at = utcnow()
    session.commit()
    return _public(cert, owner.name, utcnow())


def list_certificates(*, session: Session, principal: Principal,
                      isv: str) -> list[SiteCertificatePublic]:
    from tenantry.platforms.service import get_isv

    owner = get_isv(session, principal, isv, "view")
    now = utcnow()
    return [_public(c, owner.name, now) for c in session.scalars(
        select(SiteCertificate).where(SiteCertificate.isv_id == owner.id)
        .order_by(SiteCertificate.domain))]


def delete_certificate(*, session: Session, principal: Principal, isv: str,
                       domain: str) -> None:
    from tenantry.platforms.service import get_isv

    owner = get_isv(session, principal, isv, "admin")
    cert = session.scalar(select(SiteCertificate).where(
        SiteCertificate.isv_id == owner.id, SiteCertificate.domain == check_domain(domain)))
    if cert is None:
        raise NotFound(f"{isv} has no certificate for {domain}", field="domain")
    session.delete(cert)
    session.commit()


def expiring(session: Session, within_days: int = 30,
             now: dt.datetime | None = None) -> list[SiteCertificate]:
    """Site certificates that expire within `within_days` (or have expired), soonest first."""
    now = now or utcnow()
    return list(session.scalars(
        select(SiteCertificate)
        .where(SiteCertificate.not_after < now + dt.timedelta(days=within_days))
        .order_by(SiteCertificate.not_after)))


def notify_expiring(*, session: Session, within_days: int = 30,
                    now: dt.datetime | None = None) -> int:
    """Emit CERT_EXPIRING once a day for each certificate close to (or past) its expiry."""
    now = now or utcnow()
    today = now.date()
    count = 0
    # SKIP LOCKED: two workers never report the same certificate twice.
    for cert in session.scalars(
            select(SiteCertificate)
            .where(SiteCertificate.not_after < now + dt.timedelta(days=within_days))
            .order_by(SiteCertificate.not_after).with_for_update(skip_locked=True)):
        if cert.expiry_notified_on == today:
            continue
        days = (cert.not_after - now).days
        when = (f"expires in {days} days" if cert.not_after > now
                else "has expired")
        emit(session, "CERT_EXPIRING",
             f"certificate for {cert.domain} {when} ({cert.not_after:%Y-%m-%d %H:%M} UTC)",
             isv_id=cert.isv_id)
        cert.expiry_notified_on = today
        count += 1
    session.commit()
    return count
