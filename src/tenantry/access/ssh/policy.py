"""Who may get which SSH principals on a host: pure functions of role and service level.

Principals are role names bound to one host, `<role-principal>@<host>`, so a certificate
issued for one host opens no other. Each host has two login accounts, and an account
accepts the principals listed in its AuthorizedPrincipalsFile:

    account       accepts                                        sudo
    tnt-admin     tenantry-provider-admin@HOST                   everything
    tnt-operator  tenantry-provider-operator@HOST, and on a      the listed service commands
                  host with hands-on platforms of ISV X:
                  tenantry-isv-X-operator@HOST

ISV admins and operators get `tenantry-isv-<isv>-operator@HOST` only when their ISV has a
hands-on platform on the host; on hands-off hosts only provider roles get certificates.
ISV viewers never do. Agent and port forwarding are allowed to provider admins only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tenantry.core.errors import NotAllowed

ADMIN_ACCOUNT = "tnt-admin"
OPERATOR_ACCOUNT = "tnt-operator"
ACCOUNTS = (ADMIN_ACCOUNT, OPERATOR_ACCOUNT)

DEFAULT_TTL = 900
MAX_TTL = {"provider-admin": 3600, "isv-admin": 3600}

_BASE_EXTENSIONS = frozenset({"permit-pty"})
_FORWARDING = frozenset({"permit-agent-forwarding", "permit-port-forwarding"})


@dataclass(frozen=True)
class CertGrant:
    principals: tuple[str, ...]
    extensions: frozenset[str]
    max_ttl: int


def isv_principal(isv: str, host: str) -> str:
    return f"tenantry-isv-{isv}-operator@{host}"


def grant(*, role: str, isv: str | None, host: str, hands_on_isvs: Iterable[str]) -> CertGrant:
    """What a certificate for `host` may carry for a user of `role` (of ISV `isv`)."""
    max_ttl = MAX_TTL.get(role, DEFAULT_TTL)
    if role == "provider-admin":
        return CertGrant((f"tenantry-provider-admin@{host}",), _BASE_EXTENSIONS | _FORWARDING,
                         max_ttl)
    if role == "provider-operator":
        return CertGrant((f"tenantry-provider-operator@{host}",), _BASE_EXTENSIONS, max_ttl)
    if role in ("isv-admin", "isv-operator") and isv is not None:
        if isv not in set(hands_on_isvs):
            raise NotAllowed(f"host {host} runs no hands-on platform of ISV {isv}: only the "
                             "provider may log in to it")
        return CertGrant((isv_principal(isv, host),), _BASE_EXTENSIONS, max_ttl)
    raise NotAllowed(f"role {role} may not log in to hosts")


def host_accounts(*, host: str, hands_on_isvs: Iterable[str]) -> dict[str, list[str]]:
    """Login account → the principals it accepts, for the host's AuthorizedPrincipalsFiles."""
    return {
        ADMIN_ACCOUNT: [f"tenantry-provider-admin@{host}"],
        OPERATOR_ACCOUNT: [f"tenantry-provider-operator@{host}",
                           *(isv_principal(i, host) for i in sorted(set(hands_on_isvs)))],
    }
