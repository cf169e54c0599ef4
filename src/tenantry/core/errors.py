"""One error tree for the whole library, translated at the edges.

    TenantryError
    ├── InvalidInput   the caller's input is wrong     → HTTP 422, CLI exit 2
    ├── NotFound       the named thing does not exist  → HTTP 404, CLI exit 3
    ├── Conflict       it exists already / wrong state → HTTP 409, CLI exit 2
    ├── NotAllowed     the caller may not do this      → HTTP 403, CLI exit 4
    │   ├── Unauthenticated  no valid credentials    → HTTP 401, CLI exit 4
    │   └── (access.throttle.TooManyAttempts)        → HTTP 429, CLI exit 4
    └── Unavailable    a part we depend on failed      → HTTP 503, CLI exit 1

Each class carries its HTTP status and CLI exit code; the API (`tenantry.api.errors`), the
portal and the CLI read them there, and nothing else decides one. `field_errors` turns a
pydantic ValidationError into the same {field: message} every edge shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError


class TenantryError(Exception):
    code = "error"
    status = 400
    exit_code = 1

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": self.field}


class InvalidInput(TenantryError):
    code, status, exit_code = "invalid_input", 422, 2


class NotFound(TenantryError):
    code, status, exit_code = "not_found", 404, 3


class Conflict(TenantryError):
    code, status, exit_code = "conflict", 409, 2


class NotAllowed(TenantryError):
    code, status, exit_code = "not_allowed", 403, 4


class Unauthenticated(NotAllowed):
    code, status = "unauthenticated", 401


class Unavailable(TenantryError):
    code, status, exit_code = "unavailable", 503, 1


def error_for_status(status: int) -> type[TenantryError]:
    """The error class an HTTP status stands for (a client reading the API's answers)."""
    known: dict[int, type[TenantryError]] = {
        cls.status: cls for cls in (InvalidInput, NotFound, Conflict, NotAllowed,
                                    Unauthenticated, Unavailable)}
    known[400] = InvalidInput  # an unreadable body is the caller's input too
    if status == 429:
        return NotAllowed
    return known.get(status, Unavailable)


_WHERE = frozenset({"body", "query", "path", "header", "cookie", "form"})


def invalid_input(exc: ValidationError) -> InvalidInput:
    """The first field a ValidationError names, as InvalidInput: for what is validated
    outside FastAPI's request parsing (a plan file, an override from the CLI)."""
    field, message = next(iter(field_errors(exc).items()), ("_form", "invalid"))
    if field == "_form":
        return InvalidInput(message)
    return InvalidInput(f"{field}: {message}", field=field)


def field_errors(errors: ValidationError | Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """{field: message} of a pydantic ValidationError (or FastAPI's list of its errors), the
    first message of each field; "_form" for what names no field."""
    if isinstance(errors, ValidationError):
        errors = errors.errors()
    found: dict[str, str] = {}
    for error in errors:
        field = ".".join(str(p) for p in error.get("loc", ()) if p not in _WHERE) or "_form"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        found.setdefault(field, message)
    return found
