"""Data keys in PostgreSQL: per-ISV keys, master-key rotation, site certificates and expiry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import select, text

from tenantry.access.keys import service
from tenantry.access.keys.models import SiteCertificate
from tenantry.access.keys.schemas import SiteCertificateCreate
from tenantry.access.principal import Principal
from tenantry.core.config import load_settings
from tenantry.core.crypto import MasterKey, SecretBox
from tenantry.core.errors import InvalidInput, NotFound
from tenantry.core.keystore import DataKey
from tenantry.core.models import Event
from tenantry.core.runtime import Runtime, make_runtime
from tenantry.platforms.models import Isv
from tests.access.test_keys_certs import INTER, LEAF, chain, issue
from tests.conftest import store_runtime

pytestmark = pytest.mark.slow

ADMIN = Principal(user_id="u0", username="root", role="provider-admin")
ISV_ADMIN = Principal(user_id="u1", username="ann", role="isv-admin", isv_id="i-acme")
OTHER_ADMIN = Principal(user_id="u2", username="bob", role="isv-admin", isv_id="i-other")


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    with store_runtime("tntk-") as rt:
        with rt.sessions() as session:
            session.add_all([Isv(id="i-acme", name="acme"), Isv(id="i-other", name="other")])
            session.commit()
        yield rt


def test_rotation_rewraps_keys_and_keeps_everyone_working(runtime: Runtime) -> None:
    box = runtime.secrets
    acme, provider = box.encrypt("pw-acme", org="i-acme"), box.encrypt("pw-provider")
    legacy = box.master.encrypt_v1(b"pw-v1")
    derived = box.derive("audit-mac")
    ca_pem = runtime.ca.cert_pem
    assert b"ENCRYPTED PRIVATE KEY" in (runtime.settings.data_dir / "ca-key.pem").read_bytes()
    old_id = box.master.key_id
    with runtime.sessions() as session:
        assert {k.org for k in session.scalars(select(DataKey))} >= {"i-acme", "provider"}
        session.execute(text("UPDATE data_keys SET rotated_at = NULL"))
        session.commit()

    # a second process, as the CLI is, rotates; this one keeps running
    cli = make_runtime(load_settings(data_dir=runtime.settings.data_dir), pool_size=1)
    new_key = MasterKey.generate()
    result = service.rotate_master(sessions=cli.sessions, box=cli.secrets, new_key=new_key)
    cli.engine.dispose()
    new_id = MasterKey(new_key).key_id
    assert (result.old_master_key_id, result.new_master_key_id) == (old_id, new_id)
    assert result.data_keys >= 2
    key_file = runtime.settings.data_dir / "master.key"
    assert key_file.read_text().strip() == new_key.get_secret_value()
    assert key_file.stat().st_mode & 0o777 == 0o600
    with runtime.sessions() as session:
        rows = session.scalars(select(DataKey)).all()
        assert {r.master_key_id for r in rows} == {new_id}
        assert all(r.rotated_at is not None for r in rows)

    assert box.decrypt(acme).get_secret_value() == "pw-acme"  # cached data key
    assert box.decrypt(legacy).get_secret_value() == "pw-v1"  # still under the old master
    box.encrypt("new ISV", org="i-new")  # a new key, wrapped after re-reading master.key
    fresh = make_runtime(load_settings(data_dir=runtime.settings.data_dir), pool_size=1)
    try:
        assert fresh.secrets.master.key_id == new_id
        assert fresh.secrets.decrypt(provider).get_secret_value() == "pw-provider"
        assert fresh.secrets.derive("audit-mac") == derived
        assert fresh.ca.cert_pem == ca_pem
        with pytest.raises(InvalidInput):
            service.rotate_master(sessions=fresh.sessions, box=fresh.secrets, new_key=new_key)
    finally:
        fresh.engine.dispose()


def _upload(runtime: Runtime, principal: Principal, isv: str = "acme") -> str:
    spec = SiteCertificateCreate(domain="shop.example.com",
                                 certificate_pem=chain(LEAF, INTER),
                                 key_pem=SecretStr(LEAF.key_pem))
    with runtime.sessions() as session:
        return service.upload_certificate(session=session, principal=principal, isv=isv,
                                          spec=spec, secrets=runtime.secrets).id


def test_certificates_are_scoped_and_their_keys_encrypted(runtime: Runtime) -> None:
    cert_id = _upload(runtime, ISV_ADMIN)
    assert _upload(runtime, ADMIN) == cert_id  # the same domain again replaces it
    with runtime.sessions() as session:
        with pytest.raises(NotFound):
            _upload(runtime, OTHER_ADMIN)
        row = session.get(SiteCertificate, cert_id)
        assert row is not None and row.key.startswith("v2:")
        assert LEAF.key_pem not in row.key
        assert runtime.secrets.decrypt(row.key).get_secret_value() == LEAF.key_pem
        (listed,) = service.list_certificates(session=session, principal=ISV_ADMIN, isv="acme")
        assert listed.domain == "shop.example.com" and 88 <= listed.days_left <= 90
        assert service.list_certificates(session=session, principal=OTHER_ADMIN,
                                         isv="other") == []


def test_expiring_certificates_are_reported_once_a_day(runtime: Runtime) -> None:
    soon = issue("soon", INTER, names=["soon.example.com"], days=10)
    with runtime.sessions() as session:
        service.upload_certificate(
            session=session, principal=ADMIN, isv="other",
            spec=SiteCertificateCreate(domain="soon.example.com", certificate_pem=soon.pem,
                                       key_pem=SecretStr(soon.key_pem)),
            secrets=runtime.secrets)
        assert [c.domain for c in service.expiring(session)] == ["soon.example.com"]
        now = dt.datetime.now(dt.UTC)
        assert service.notify_expiring(session=session, now=now) == 1
        assert service.notify_expiring(session=session, now=now) == 0
        assert service.notify_expiring(session=session, now=now + dt.timedelta(days=1)) == 1
        events = session.scalars(select(Event).where(Event.kind == "CERT_EXPIRING")).all()
        assert len(events) == 2 and events[0].isv_id == "i-other"
        assert "soon.example.com" in events[0].message


def test_box_without_store_is_unaffected(runtime: Runtime) -> None:
    legacy = SecretBox.from_data_dir(runtime.settings.data_dir)
    assert not legacy.encrypt("x").startswith("v2:")
