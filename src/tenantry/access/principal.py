"""Who is asking, and the one place that narrows queries to what they may see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select

from tenantry.core.errors import NotAllowed

PROVIDER_ROLES = frozenset({"provider-admin", "provider-operator"})
ISV_ROLES = frozenset({"isv-admin", "isv-operator", "isv-viewer"})
ROLES = PROVIDER_ROLES | ISV_ROLES

# What each role may do; "view" is implied by every other action.
_ACTIONS: dict[str, frozenset[str]] = {
    "provider-admin": frozenset({"view", "operate", "admin", "provider"}),
    "provider-operator": frozenset({"view", "operate", "provider"}),
    "isv-admin": frozenset({"view", "operate", "admin"}),
    "isv-operator": frozenset({"view", "operate"}),
    "isv-viewer": frozenset({"view"}),
}

T = TypeVar("T", bound=Select[Any])


@dataclass(frozen=True)
class Principal:
    user_id: str
    username: str
    role: str
    isv_id: str | None = None
    platform_id: str | None = None  # a token bound to one platform acts on nothing else

    @property
    def is_provider(self) -> bool:
        return self.role in PROVIDER_ROLES

    def require(self, action: str) -> None:
        if action not in _ACTIONS.get(self.role, frozenset()):
            raise NotAllowed(f"role {self.role} may not {action}")
        if self.platform_id is not None and action in ("admin", "provider"):
            raise NotAllowed("a platform-scoped token may not do that")


def role_rank(role: str) -> int:
    """Within a side (provider or ISV), how much a role may do."""
    return {"isv-viewer": 0, "isv-operator": 1, "isv-admin": 2,
            "provider-operator": 1, "provider-admin": 2}[role]


def scoped(query: T, principal: Principal, action: str, isv_column: Any,
           platform_column: Any = None) -> T:
    """Restrict a select to the rows the principal may act on.

    Provider roles see every ISV; ISV roles see only their own; a platform-scoped token
    sees only its platform (given `platform_column`). Rows outside the scope simply do not
    exist for the caller (a direct id answers 404, not 403).
    """
    principal.require(action)
    if principal.platform_id is not None and platform_column is not None:
        query = query.where(platform_column == principal.platform_id)
    if principal.is_provider:
        return query
    return query.where(isv_column == principal.isv_id)
