"""Issuing and revoking against a real PostgreSQL: certificates, scope, TTL, KRL, audit."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_ssh_public_identity
from sqlalchemy import text

from tenantry.access.audit import service as audit
from tenantry.access.models import User
from tenantry.access.principal import Principal
from tenantry.access.ssh import service
from tenantry.access.ssh.ca import SshCertificateAuthority
from tenantry.access.ssh.schemas import SshCertCreate
from tenantry.core.errors import InvalidInput, NotAllowed, NotFound
from tenantry.core.runtime import Runtime
from tenantry.platforms.models import Host, Isv, Region
from tests.conftest import store_runtime

pytestmark = pytest.mark.slow

ADMIN = Principal(user_id="u-admin", username="ada", role="provider-admin")
OPERATOR = Principal(user_id="u-op", username="otto", role="provider-operator")
ISV_OP = Principal(user_id="u-isv", username="ivy", role="isv-operator", isv_id="i-acme")


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    with store_runtime("tnts-") as rt:
        audit.keys_of(rt)
        with rt.sessions() as session:
            session.add(Isv(id="i-acme", name="acme"))
            session.add(Region(id="g-local", name="local"))
            session.flush()
            session.add(Host(id="h-1", name="h1", region_id="g-local", ingress_port=443,
                             agent_token_hash="x" * 64))
            for p in (ADMIN, OPERATOR, ISV_OP):
                session.add(User(id=p.user_id, username=p.username, password_hash="-",  # noqa: S106
                                 role=p.role, isv_id=p.isv_id))
            session.commit()
        yield rt


@pytest.fixture
def ca(tmp_path: Path) -> SshCertificateAuthority:
    return SshCertificateAuthority.load_or_create(tmp_path)


@pytest.fixture(scope="module")
def user_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("k") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True)
    return path.with_suffix(".pub").read_text()


def spec(key: str, **kw: object) -> SshCertCreate:
    return SshCertCreate.model_validate({"host": "h1", "public_key": key,
                                         "reason": "INC-42 disk full", **kw})


def test_ca_key_file_is_private_and_stable(tmp_path: Path) -> None:
    first = SshCertificateAuthority.load_or_create(tmp_path)
    assert (tmp_path / "ssh-ca-key").stat().st_mode & 0o777 == 0o600
    assert SshCertificateAuthority.load_or_create(tmp_path).public_key_line() == \
        first.public_key_line()


def test_issue_for_provider_operator(runtime: Runtime, ca: SshCertificateAuthority,
                                     user_key: str) -> None:
    with runtime.sessions() as session:
        issued = service.issue_certificate(session=session, principal=OPERATOR, ca=ca,
                                           spec=spec(user_key))
    cert = load_ssh_public_identity(issued.certificate.encode())
    assert not isinstance(cert, type(None)) and hasattr(cert, "serial")
    assert cert.serial == issued.serial
    assert cert.valid_principals == [b"otto@h1"]
    assert cert.key_id == f"otto/{issued.serial}".encode()
    assert set(cert.extensions) == {b"permit-pty"}
    assert cert.valid_before - cert.valid_after == 900 + 60
    cert.verify_cert_signature()
    assert issued.valid_before - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=900)
    with runtime.engine.connect() as conn:
        audited = conn.execute(text("SELECT count(*) FROM audit_entries WHERE "
                                    "action = 'ssh.cert.issue' AND actor = 'otto'")).scalar()
    assert audited == 1


def test_ttl_limits_by_role(runtime: Runtime, ca: SshCertificateAuthority,
                            user_key: str) -> None:
    with runtime.sessions() as session:
        with pytest.raises(InvalidInput):
            service.issue_certificate(session=session, principal=OPERATOR, ca=ca,
                                      spec=spec(user_key, ttl_seconds=1800))
        issued = service.issue_certificate(session=session, principal=ADMIN, ca=ca,
                                           spec=spec(user_key, ttl_seconds=3600))
    assert issued.principals == ["ada@h1"]


def test_refusals(runtime: Runtime, ca: SshCertificateAuthority, user_key: str) -> None:
    with runtime.sessions() as session:
        with pytest.raises(NotFound):  # no platform of acme on h1: the host does not exist
            service.issue_certificate(session=session, principal=ISV_OP, ca=ca,
                                      spec=spec(user_key))
        with pytest.raises(NotFound):
            service.issue_certificate(session=session, principal=ADMIN, ca=ca,
                                      spec=spec(user_key, host="nope"))
        with pytest.raises(InvalidInput):
            service.issue_certificate(session=session, principal=ADMIN, ca=ca,
                                      spec=spec("ssh-ed25519 AAAAnotakey x"))
        with pytest.raises(InvalidInput):
            service.issue_certificate(session=session, principal=ADMIN, ca=ca,
                                      spec=spec(user_key, reason="   x   "))
    with pytest.raises(ValueError):
        spec(user_key, reason="no")


def test_revoke_and_krl(runtime: Runtime, ca: SshCertificateAuthority, user_key: str,
                        tmp_path: Path) -> None:
    with runtime.sessions() as session:
        issued = service.issue_certificate(session=session, principal=OPERATOR, ca=ca,
                                           spec=spec(user_key))
        gen = session.scalar(text("SELECT generation FROM hosts WHERE id = 'h-1'"))
        with pytest.raises(NotAllowed):  # another operator's certificate
            service.revoke_certificate(
                session=session, serial=issued.serial,
                principal=Principal(user_id="u-x", username="x", role="provider-operator"))
        revoked = service.revoke_certificate(session=session, principal=OPERATOR,
                                             serial=issued.serial)
        assert revoked.revoked_at is not None
        assert session.scalar(text("SELECT generation FROM hosts WHERE id = 'h-1'")) == gen + 1
        assert issued.serial in service.revoked_serials(session=session)
        host = session.get(Host, "h-1")
        assert host is not None
        config = service.host_config(session=session, host=host, ca=ca)
        assert issued.serial in config.revoked_serials
        krl = service.krl(session=session, ca=ca)
    (tmp_path / "krl").write_bytes(krl)
    (tmp_path / "cert.pub").write_text(issued.certificate + "\n")
    # ssh-keygen -Q: exit 1 when the key is revoked by the KRL
    done = subprocess.run(["ssh-keygen", "-Q", "-f", str(tmp_path / "krl"),
                           str(tmp_path / "cert.pub")], capture_output=True, text=True)
    assert done.returncode == 1 and "REVOKED" in done.stdout


def test_host_config_lists_people_with_live_certificates(
        runtime: Runtime, ca: SshCertificateAuthority, user_key: str) -> None:
    with runtime.sessions() as session:
        for who in (ADMIN, OPERATOR):
            service.issue_certificate(session=session, principal=who, ca=ca,
                                      spec=spec(user_key))
        host = session.get(Host, "h-1")
        assert host is not None
        people = {p.username: p for p in
                  service.host_config(session=session, host=host, ca=ca).people}
        assert people["ada"].account == "t-ada" and people["ada"].root == "all"
        assert people["ada"].principals == ["ada@h1"]
        assert people["otto"].account == "t-otto" and people["otto"].root == "service"
        assert people["otto"].platforms == []  # no platform here, so nobody to become
        assert "ivy" not in people  # never got a certificate for h1
        # a disabled user loses the host at the agent's next poll, certificate or not
        session.execute(text("UPDATE users SET disabled = true WHERE id = 'u-op'"))
        session.commit()
        try:
            after = service.host_config(session=session, host=host, ca=ca)
            assert [p.username for p in after.people] == ["ada"]
            assert "t-otto" in after.cut_off and "t-ada" not in after.cut_off
        finally:
            session.execute(text("UPDATE users SET disabled = false WHERE id = 'u-op'"))
            session.commit()


def test_host_events_name_the_person_by_their_account(
        runtime: Runtime, ca: SshCertificateAuthority, user_key: str) -> None:
    with runtime.sessions() as session:
        service.issue_certificate(session=session, principal=OPERATOR, ca=ca,
                                  spec=spec(user_key))
        host = session.get(Host, "h-1")
        assert host is not None
        count = service.record_host_events(session=session, host=host, events=[
            {"action": "host.sudo", "actor": None, "account": "t-otto", "runas": "root",
             "command": "/usr/bin/supervisorctl status"},
            {"action": "ssh.login", "actor": "otto", "account": "t-otto", "serial": 1},
            {"action": "rm -rf", "actor": "x"}])
        assert count == 2
    with runtime.engine.connect() as conn:
        rows = conn.execute(text("SELECT actor, action FROM audit_entries WHERE "
                                 "source = 'agent' ORDER BY id")).all()
    assert [tuple(r) for r in rows][-2:] == [("otto", "host.sudo"), ("otto", "ssh.login")]
