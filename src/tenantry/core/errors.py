"""One error tree for the whole library, translated at the edges.

    TenantryError
    ├── InvalidInput   the caller's input is wrong     → HTTP 422, CLI exit 2
    ├── NotFound       the named thing does not exist  → HTTP 404, CLI exit 3
    ├── Conflict       it exists already / wrong state → HTTP 409, CLI exit 2
    ├── NotAllowed     the caller may not do this      → HTTP 403, CLI exit 4
    │   └── Unauthenticated  no valid credentials    → HTTP 401, CLI exit 4
    └── Unavailable    a part we depend on failed      → HTTP 503, CLI exit 1

The API maps these in `tenantry.api.errors`, the CLI in `tenantry.cli.output`; nothing
else decides a status code or an exit code.
"""

from __future__ import annotations


class TenantryError(Exception):
    code = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": self.field}


class InvalidInput(TenantryError):
    code = "invalid_input"


class NotFound(TenantryError):
    code = "not_found"


class Conflict(TenantryError):
    code = "conflict"


class NotAllowed(TenantryError):
    code = "not_allowed"


class Unauthenticated(NotAllowed):
    code = "unauthenticated"


class Unavailable(TenantryError):
    code = "unavailable"
