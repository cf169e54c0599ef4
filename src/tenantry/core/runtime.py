"""What a control-plane process (API or worker) holds: settings, the store, keys and the CA.

Whatever a domain needs once per process (the audit keys, an offsite store, a group
appender) lives on the runtime too, made on first use by `Runtime.shared`, never in a
module global; a session made by the runtime knows it (`runtime_of(session)`).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tenantry.core.ca import CertificateAuthority
from tenantry.core.config import Settings
from tenantry.core.crypto import SecretBox
from tenantry.core.db import make_engine, make_sessionmaker
from tenantry.core.errors import Unavailable
from tenantry.core.keystore import SqlKeyStore
from tenantry.core.pgserver import ControlPlaneDatabase

T = TypeVar("T")


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    secrets: SecretBox = field(repr=False)
    _ca: CertificateAuthority | None = field(default=None, repr=False)
    _shared: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def shared(self, key: str, make: Callable[[], T]) -> T:
        """The runtime's one object under `key` ("audit.keys", say), made on first use."""
        with self._lock:
            if key not in self._shared:
                self._shared[key] = make()
            return cast(T, self._shared[key])

    @property
    def ca(self) -> CertificateAuthority:
        """Loaded on first use: its key's passphrase comes from a data key in the store."""
        if self._ca is None:
            passphrase = base64.b64encode(self.secrets.derive("x509-ca-key"))
            self._ca = CertificateAuthority.load_or_create(self.settings.data_dir, passphrase)
        return self._ca

    @property
    def bundle_dir(self) -> Path:
        return self.settings.data_dir / "bundles"


def database_url(settings: Settings) -> str:
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return ControlPlaneDatabase(settings.data_dir).url


def make_runtime(settings: Settings, *, pool_size: int = 10) -> Runtime:
    engine = make_engine(database_url(settings), pool_size=pool_size, max_overflow=10)
    (settings.data_dir / "bundles").mkdir(parents=True, exist_ok=True)
    sessions = make_sessionmaker(engine)
    # Secrets are encrypted with per-organisation data keys kept in the store, wrapped by
    # the master key; the box unwraps each once and keeps it in memory.
    box = SecretBox.from_data_dir(settings.data_dir, settings.master_key,
                                  store=SqlKeyStore(sessions))
    runtime = Runtime(settings=settings, engine=engine, sessions=sessions, secrets=box)
    sessions.configure(info={RUNTIME_KEY: runtime})
    return runtime


RUNTIME_KEY = "tenantry.runtime"


def runtime_of(session: Session) -> Runtime:
    """The runtime whose session this is (its keys, settings and shared objects)."""
    runtime = session.info.get(RUNTIME_KEY)
    if not isinstance(runtime, Runtime):
        raise Unavailable("this session was not made by a tenantry runtime (make_runtime)")
    return runtime
