"""Who may log in to a host, as which account, with which sudo: pure functions.

Every person logs in as their own Unix account on the host, `t-<username>`, which the agent
creates when they first hold a certificate for it; there are no shared logins, so sshd's
and sudo's logs name the person. A certificate carries one principal, `<username>@<host>`,
so it opens that person's account on that one host and nothing else.

What the account may do with sudo follows the person's current role, re-read on every
agent poll (a demotion or a disabled user takes effect within a poll):

    role                 may log in to                         sudo
    provider-admin       every host                            everything
    provider-operator    every host                            the listed service commands
                                                               as root; as the Unix user of
                                                               every hands-off platform, and
                                                               of a hands-on platform while
                                                               its ISV grants support access
    isv-admin,           hosts with a hands-on platform of     as the Unix user of their
    isv-operator         their ISV                             ISV's hands-on platforms
    isv-viewer           none

Agent and port forwarding are allowed to provider admins only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from tenantry.core.errors import NotAllowed

LOGIN_GROUP = "tnt-login"  # sshd lets in members of this group only
DEFAULT_TTL = 900
MAX_TTL = {"provider-admin": 3600, "isv-admin": 3600}

_BASE_EXTENSIONS = frozenset({"permit-pty"})
_FORWARDING = frozenset({"permit-agent-forwarding", "permit-port-forwarding"})


@dataclass(frozen=True)
class CertGrant:
    principals: tuple[str, ...]
    extensions: frozenset[str]
    max_ttl: int


@dataclass(frozen=True)
class PlatformOnHost:
    id: str
    isv: str
    hands_on: bool
    support_granted: bool = False  # an unexpired support grant of its ISV


@dataclass(frozen=True)
class HostRights:
    """What one person's account on one host may do."""
    root: str | None  # "all", "service" (the operator commands) or None
    platforms: tuple[str, ...]  # platform ids whose Unix user they may become


def login_account(username: str) -> str:
    """The person's Unix account: `t-<username>`, shortened with a hash past 32 characters."""
    account = f"t-{username}"
    if len(account) <= 32:
        return account
    digest = hashlib.sha256(username.encode()).hexdigest()[:8]
    return f"t-{username[:21]}-{digest}"


def principal(username: str, host: str) -> str:
    return f"{username}@{host}"


def rights(*, role: str, isv: str | None, platforms: Iterable[PlatformOnHost]) -> HostRights:
    """What a user of `role` (of ISV `isv`) may do on a host carrying `platforms`."""
    here = list(platforms)
    if role == "provider-admin":
        return HostRights("all", tuple(sorted(p.id for p in here)))
    if role == "provider-operator":
        return HostRights("service", tuple(sorted(
            p.id for p in here if not p.hands_on or p.support_granted)))
    if role in ("isv-admin", "isv-operator") and isv is not None:
        mine = tuple(sorted(p.id for p in here if p.hands_on and p.isv == isv))
        if not mine:
            raise NotAllowed(f"this host runs no hands-on platform of ISV {isv}: only the "
                             "provider may log in to it")
        return HostRights(None, mine)
    raise NotAllowed(f"role {role} may not log in to hosts")


def grant(*, username: str, role: str, isv: str | None, host: str,
          platforms: Iterable[PlatformOnHost]) -> CertGrant:
    """What a certificate for `host` may carry; raises NotAllowed when none may be issued."""
    rights(role=role, isv=isv, platforms=platforms)
    extensions = _BASE_EXTENSIONS | (_FORWARDING if role == "provider-admin" else frozenset())
    return CertGrant((principal(username, host),), extensions, MAX_TTL.get(role, DEFAULT_TTL))
