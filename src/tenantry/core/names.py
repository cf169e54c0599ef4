"""Names and ids. Every user-visible name is a DNS label, so it can become a host name."""

from __future__ import annotations

import re
import secrets

from tenantry.core.errors import InvalidInput

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")


def check_name(value: object, *, field: str) -> str:
    if not isinstance(value, str) or not _LABEL.fullmatch(value):
        shown = value if isinstance(value, str) and len(value) <= 60 else "value"
        raise InvalidInput(
            f"{field} {shown!r} is not a DNS label: 1-40 of a-z, 0-9 and '-', "
            "not starting or ending with '-'",
            field=field,
        )
    return value


def check_version(value: object, *, field: str = "version") -> str:
    if not isinstance(value, str) or len(value) > 40 or not _VERSION.fullmatch(value):
        raise InvalidInput(f"{field} must look like 1.2.3", field=field)
    return value


def parse_app_ref(value: str, *, field: str = "app") -> tuple[str, str]:
    """`APP@VERSION` → (app, version)."""
    app, sep, version = value.partition("@")
    if not sep:
        raise InvalidInput(f"{field} must be APP@VERSION, e.g. bodyshop@1.0.0", field=field)
    return check_name(app, field=field), check_version(version, field=field)


def new_id(prefix: str) -> str:
    """Short, unguessable ids: readable in logs and safe as Unix user and file names."""
    return f"{prefix}{secrets.token_hex(5)}"
