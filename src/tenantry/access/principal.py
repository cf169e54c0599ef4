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

    @property
    def is_provider(self) -> bool:
        return self.role in PROVIDER_ROLES

    def require(self, action: str) -> None:
        if action not in _ACTIONS.get(self.role, frozenset()):
            raise NotAllowed(f"role {self.role} may not {action}")


def scoped(query: T, principal: Principal, action: str, isv_column: Any) -> T:
    """Restrict a select to the rows the principal may act on.

    Provider roles see every ISV; ISV roles see only their own. Rows outside the scope
    simply do not exist for the caller (a direct id answers 404, not 403).
    """
    principal.require(action)
    if principal.is_provider:
        return query
    return query.where(isv_column == principal.isv_id)
