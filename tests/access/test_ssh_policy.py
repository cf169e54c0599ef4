"""Who gets which principals: role and service level in, principals and extensions out."""

from __future__ import annotations

import pytest

from tenantry.access.ssh import policy
from tenantry.access.ssh.cli import cert_path, parse_ttl
from tenantry.core.errors import InvalidInput, NotAllowed

ON = policy.PlatformOnHost  # (id, isv, hands_on, support_granted)
ACME_ON = ON("p-acme", "acme", hands_on=True)
ACME_OFF = ON("p-acme-off", "acme", hands_on=False)
OTHER_ON = ON("p-other", "other", hands_on=True)
OTHER_SUPPORT = ON("p-help", "other", hands_on=True, support_granted=True)

CASES = [
    # role, isv, platforms on host, rights (None: refused: no certificate), forwarding, ttl
    ("provider-admin", None, [], ("all", ()), True, 3600),
    ("provider-admin", None, [ACME_ON, OTHER_ON], ("all", ("p-acme", "p-other")), True, 3600),
    ("provider-operator", None, [], ("service", ()), False, 900),
    # hands-off platforms are the provider's to run; hands-on ones need a support grant
    ("provider-operator", None, [ACME_OFF, ACME_ON, OTHER_SUPPORT],
     ("service", ("p-acme-off", "p-help")), False, 900),
    ("isv-admin", "acme", [ACME_ON, OTHER_ON], (None, ("p-acme",)), False, 3600),
    ("isv-operator", "acme", [ACME_ON, ACME_OFF], (None, ("p-acme",)), False, 900),
    ("isv-operator", "acme", [ACME_OFF], None, False, 0),           # hands-off host
    ("isv-operator", "acme", [OTHER_ON, OTHER_SUPPORT], None, False, 0),  # another ISV's
    ("isv-viewer", "acme", [ACME_ON], None, False, 0),
]


@pytest.mark.parametrize(("role", "isv", "here", "rights", "forwarding", "ttl"), CASES)
def test_grant_and_rights(role: str, isv: str | None, here: list[policy.PlatformOnHost],
                          rights: tuple[str | None, tuple[str, ...]] | None, forwarding: bool,
                          ttl: int) -> None:
    if rights is None:
        with pytest.raises(NotAllowed):
            policy.grant(username="ann", role=role, isv=isv, host="h1", platforms=here)
        with pytest.raises(NotAllowed):
            policy.rights(role=role, isv=isv, platforms=here)
        return
    grant = policy.grant(username="ann", role=role, isv=isv, host="h1", platforms=here)
    assert list(grant.principals) == ["ann@h1"]  # the person, on this host only
    assert "permit-pty" in grant.extensions
    assert ("permit-port-forwarding" in grant.extensions) is forwarding
    assert ("permit-agent-forwarding" in grant.extensions) is forwarding
    assert "permit-X11-forwarding" not in grant.extensions
    assert grant.max_ttl == ttl
    got = policy.rights(role=role, isv=isv, platforms=here)
    assert (got.root, got.platforms) == rights


def test_login_accounts_are_personal_and_fit_unix() -> None:
    assert policy.login_account("ann") == "t-ann"
    long_a, long_b = "a" * 35 + "x", "a" * 35 + "y"
    assert len(policy.login_account(long_a)) <= 32
    assert policy.login_account(long_a) != policy.login_account(long_b)


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
