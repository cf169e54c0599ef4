"""Typed settings, built by a factory: the server, the agent and the CLI each load their own."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from tenantry.core.errors import InvalidInput, field_errors
from tenantry.core.notify import business_hours, sms_endpoint, smtp_endpoint
from tenantry.core.objectstore import S3Location, check_endpoint, parse_store_url


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


MAX_API_PROCESSES = 16


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TENANTRY_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: SecretStr | None = None
    listen: str = "127.0.0.1:8080"
    agent_tls_listen: str | None = None  # agents over mutual TLS (see api.agent_tls)
    # API processes `up` runs on `listen` (and `agent_tls_listen`), sharing its sockets: each
    # has a GIL of its own. One serves a small fleet; docs/scaling.md says when to add more.
    api_processes: int = 1
    ingress_port: int = 8443
    port_range: str = "20000-29999"  # ports the local host hands to platforms, MIN-MAX
    # How long `up` waits for each part it needs (the local agent online, say) before it
    # says which part did not come up; it keeps running either way.
    startup_timeout: float = 60.0
    # A child of `up` (API, worker, agent) that runs but has not beat for this many seconds
    # is frozen (stopped, wedged) and is killed, and so started again; the control plane's
    # PostgreSQL gets 3 s more. 0: never (to attach a debugger that stops the process).
    frozen_after: float = 5.0
    domain: str = "localhost"
    master_key: SecretStr | None = None
    # Where signed audit heads are shipped (tenantry.core.objectstore): s3://BUCKET[/PREFIX]
    # on `offsite_endpoint` (any S3-compatible server; AWS when unset), or a directory;
    # unset means DATA_DIR/offsite, which is on this machine and so not offsite at all.
    offsite_url: str | None = None
    offsite_endpoint: str | None = None
    offsite_region: str = "us-east-1"
    offsite_access_key_id: str | None = None
    offsite_secret_access_key: SecretStr | None = None
    offsite_lock_days: int = 365  # COMPLIANCE retention of each shipped object; 0: none
    # How long ended jobs (with their steps) and events are kept; 0 keeps them for ever.
    job_retention_days: int = 90
    event_retention_days: int = 90
    # Notification channels (tenantry.monitoring.channels); see parse_smtp_url and
    # parse_sms_url below. Unset: notifications wait in the outbox, shown in the portal.
    # The URLs hold credentials, so they are secrets as a whole.
    smtp_url: SecretStr | None = None
    smtp_from: str | None = None
    smtp_ca_file: Path | None = None  # a private CA the SMTP server's certificate chains to
    sms_url: SecretStr | None = None
    sms_token: SecretStr | None = None  # bearer token of a webhook gateway (or in its URL)
    sms_ca_file: Path | None = None
    # When the NOC hears of hands-on platforms (and contacts kept to business hours hear).
    business_hours: str = "Mon-Fri 08:00-18:00"
    business_timezone: str = "UTC"
    # `up` runs the monitoring stack (Prometheus, Alertmanager, exporters); off: it does not.
    monitoring: bool = True
    # Where platforms' backups go (pgBackRest and restic): s3://BUCKET[/PREFIX] on
    # `backup_endpoint` (https only: pgBackRest speaks nothing else), or a directory; unset
    # means DATA_DIR/backups on each host, which is no offsite copy (the demo's default).
    backup_url: str | None = None
    backup_endpoint: str | None = None
    backup_region: str = "us-east-1"
    backup_access_key_id: str | None = None
    backup_secret_access_key: SecretStr | None = None
    backup_ca_file: Path | None = None  # a private CA the endpoint's certificate chains to
    backup_archive_timeout: int = 10  # seconds; the longest a commit waits to be archived
    # days a destroyed platform's repository is kept after its last write; 0: for ever
    backup_keep_destroyed_days: int = 30

    @field_validator("smtp_url", "smtp_from", "smtp_ca_file", "sms_url", "sms_token",
                     "sms_ca_file", mode="before")
    @classmethod
    def _empty_channel_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _channels(self) -> Settings:
        # InvalidInput rather than ValueError: pydantic's error would quote the input, and
        # the input is a URL with a password in it.
        smtp_endpoint(self)
        sms_endpoint(self)
        business_hours(self)
        return self

    @field_validator("offsite_url", "offsite_endpoint", "offsite_access_key_id",
                     "offsite_secret_access_key", "backup_url", "backup_endpoint",
                     "backup_access_key_id", "backup_secret_access_key", "backup_ca_file",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("offsite_url", "backup_url")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_store_url(value)
        return value

    @field_validator("offsite_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_endpoint(value)

    @field_validator("backup_endpoint")
    @classmethod
    def _backup_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        check_endpoint(value)
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL: pgBackRest reaches S3 over TLS only "
                             "(put a TLS proxy before a plain-HTTP server)")
        return value.rstrip("/")

    @field_validator("backup_ca_file")
    @classmethod
    def _backup_ca_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @field_validator("backup_archive_timeout")
    @classmethod
    def _archive_timeout(cls, value: int) -> int:
        if not 1 <= value <= 3600:
            raise ValueError("must be a number of seconds between 1 and 3600")
        return value

    @field_validator("offsite_region", "backup_region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", value):
            raise ValueError("must be a region name such as us-east-1")
        return value

    @field_validator("offsite_lock_days", "job_retention_days", "event_retention_days",
                     "backup_keep_destroyed_days")
    @classmethod
    def _lock_days(cls, value: int) -> int:
        if not 0 <= value <= 36500:
            raise ValueError("must be a number of days between 0 and 36500")
        return value

    @model_validator(mode="after")
    def _offsite_consistent(self) -> Settings:
        # Raised as InvalidInput (not ValueError) so that it names the field to fix.
        s3 = self.offsite_url is not None and isinstance(parse_store_url(self.offsite_url),
                                                         S3Location)
        if not s3:
            for name in ("offsite_endpoint", "offsite_access_key_id",
                         "offsite_secret_access_key"):
                if getattr(self, name) is not None:
                    raise InvalidInput(f"{name} is set but offsite_url is not an s3:// URL",
                                       field=name)
        if (self.offsite_access_key_id is None) != (self.offsite_secret_access_key is None):
            missing = ("offsite_access_key_id" if self.offsite_access_key_id is None
                       else "offsite_secret_access_key")
            raise InvalidInput("offsite_access_key_id and offsite_secret_access_key go "
                               "together", field=missing)
        return self

    @model_validator(mode="after")
    def _backup_consistent(self) -> Settings:
        s3 = self.backup_url is not None and isinstance(parse_store_url(self.backup_url),
                                                        S3Location)
        if not s3:
            for name in ("backup_endpoint", "backup_access_key_id",
                         "backup_secret_access_key", "backup_ca_file"):
                if getattr(self, name) is not None:
                    raise InvalidInput(f"{name} is set but backup_url is not an s3:// URL",
                                       field=name)
        elif self.backup_access_key_id is None or self.backup_secret_access_key is None:
            missing = ("backup_access_key_id" if self.backup_access_key_id is None
                       else "backup_secret_access_key")
            raise InvalidInput("an s3:// backup_url needs backup_access_key_id and "
                               "backup_secret_access_key", field=missing)
        return self

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("agent_tls_listen")
    @classmethod
    def _agent_listen_is_host_port(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value, field="agent_tls_listen")
        return value

    @field_validator("ingress_port")
    @classmethod
    def _tcp_port(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError("must be a TCP port between 1 and 65535")
        return value

    @field_validator("port_range")
    @classmethod
    def _port_range(cls, value: str) -> str:
        parse_port_range(value)
        return value

    @field_validator("frozen_after")
    @classmethod
    def _frozen_after(cls, value: float) -> float:
        if value != 0 and not 2 <= value <= 3600:
            raise ValueError("must be 0 (never) or a number of seconds between 2 and 3600")
        return value

    @field_validator("api_processes")
    @classmethod
    def _api_processes(cls, value: int) -> int:
        if not 1 <= value <= MAX_API_PROCESSES:
            raise ValueError(f"must be a whole number between 1 and {MAX_API_PROCESSES}")
        return value

    @field_validator("startup_timeout")
    @classmethod
    def _startup_timeout(cls, value: float) -> float:
        if not 1 <= value <= 3600:
            raise ValueError("must be a number of seconds between 1 and 3600")
        return value

    @property
    def ports(self) -> tuple[int, int]:
        """`port_range` as (lowest, highest)."""
        return parse_port_range(self.port_range)


def parse_listen(value: str, *, field: str = "listen") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidInput(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:8080)", field=field)
    return host, int(port)


def parse_port_range(value: str) -> tuple[int, int]:
    low, sep, high = value.partition("-")
    if not sep or not low.isdigit() or not high.isdigit() or not (
            1024 <= int(low) < int(high) <= 65535):
        raise InvalidInput("port range must be MIN-MAX within 1024-65535, e.g. 20000-29999",
                           field="port_range")
    return int(low), int(high)


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment plus explicit overrides (None means 'not given')."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        field, message = next(iter(field_errors(exc).items()))
        raise InvalidInput(message, field=None if field == "_form" else field) from None
