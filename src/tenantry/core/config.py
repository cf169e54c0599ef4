"""Typed settings, built by a factory: the server, the agent and the CLI each load their own."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tenantry.core.errors import InvalidInput


def default_data_dir() -> Path:
    """`$TENANTRY_DATA_DIR`, else `~/.local/share/tenantry`.

    For root the default is `/var/lib/tenantry`: tenantry runs its databases as unprivileged
    Unix users, and those cannot enter `/root`.
    """
    env = os.environ.get("TENANTRY_DATA_DIR")
    if env:
        return Path(env).expanduser().absolute()
    if os.geteuid() == 0:
        return Path("/var/lib/tenantry")
    return Path.home() / ".local" / "share" / "tenantry"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TENANTRY_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: SecretStr | None = None
    listen: str = "127.0.0.1:8080"
    ingress_port: int = 8443
    domain: str = "localhost"
    master_key: SecretStr | None = None

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("ingress_port")
    @classmethod
    def _port_range(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError("must be a TCP port between 1 and 65535")
        return value


def parse_listen(value: str, *, field: str = "listen") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidInput(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:8080)", field=field)
    return host, int(port)


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment plus explicit overrides (None means 'not given')."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        errors: list[dict[str, Any]] = getattr(exc, "errors", lambda: [])()
        if errors:
            first = errors[0]
            field = ".".join(str(p) for p in first.get("loc", ())) or None
            raise InvalidInput(str(first.get("msg", exc)), field=field) from None
        raise InvalidInput(str(exc)) from None
