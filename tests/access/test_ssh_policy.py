"""Who gets which principals: role and service level in, principals and extensions out."""

from __future__ import annotations

import pytest

from tenantry.access.ssh import policy
from tenantry.access.ssh.cli import cert_path, parse_ttl
from tenantry.core.errors import InvalidInput, NotAllowed

CASES = [
    # role, isv, hands-on ISVs on host, principals (None: refused), forwarding, max ttl
    ("provider-admin", None, [], ["tenantry-provider-admin@h1"], True, 3600),
    ("provider-operator", None, [], ["tenantry-provider-operator@h1"], False, 900),
    ("isv-admin", "acme", ["acme"], ["tenantry-isv-acme-operator@h1"], False, 3600),
    ("isv-operator", "acme", ["acme"], ["tenantry-isv-acme-operator@h1"], False, 900),
    ("isv-operator", "acme", [], None, False, 0),            # hands-off host
    ("isv-operator", "acme", ["other"], None, False, 0),     # another ISV's hands-on host
    ("isv-viewer", "acme", ["acme"], None, False, 0),
]


@pytest.mark.parametrize(("role", "isv", "hands_on", "principals", "forwarding", "ttl"), CASES)
def test_grant(role: str, isv: str | None, hands_on: list[str], principals: list[str] | None,
               forwarding: bool, ttl: int) -> None:
    if principals is None:
        with pytest.raises(NotAllowed):
            policy.grant(role=role, isv=isv, host="h1", hands_on_isvs=hands_on)
        return
    grant = policy.grant(role=role, isv=isv, host="h1", hands_on_isvs=hands_on)
    assert list(grant.principals) == principals
    assert "permit-pty" in grant.extensions
    assert ("permit-port-forwarding" in grant.extensions) is forwarding
    assert ("permit-agent-forwarding" in grant.extensions) is forwarding
    assert "permit-X11-forwarding" not in grant.extensions
    assert grant.max_ttl == ttl


def test_every_granted_principal_has_an_account() -> None:
    accepted = {p for ps in policy.host_accounts(host="h1", hands_on_isvs=["acme"]).values()
                for p in ps}
    for role, _isv, _hands_on, principals, _, _ in CASES:
        if principals:
            assert set(principals) <= accepted, role
    assert policy.host_accounts(host="h1", hands_on_isvs=[])["tnt-operator"] == [
        "tenantry-provider-operator@h1"]


@pytest.mark.parametrize(("text", "seconds"), [("15m", 900), ("900", 900), ("30s", 30),
                                               ("1h", 3600)])
def test_parse_ttl(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0m", "15 minutes", "-5m", "1d"])
def test_parse_ttl_refuses(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_ttl(text)


def test_cert_written_where_ssh_looks() -> None:
    from pathlib import Path
    assert cert_path(Path("/k/id_ed25519.pub")) == Path("/k/id_ed25519-cert.pub")
