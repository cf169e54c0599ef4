"""What a control-plane process (API or worker) holds: settings, the store, keys and the CA."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tenantry.core.ca import CertificateAuthority
from tenantry.core.config import Settings
from tenantry.core.crypto import SecretBox
from tenantry.core.db import make_engine, make_sessionmaker
from tenantry.core.pgserver import ControlPlaneDatabase


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    secrets: SecretBox = field(repr=False)
    _ca: CertificateAuthority | None = field(default=None, repr=False)

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
    from tenantry.access.keys.store import SqlKeyStore

    engine = make_engine(database_url(settings), pool_size=pool_size, max_overflow=10)
    (settings.data_dir / "bundles").mkdir(parents=True, exist_ok=True)
    sessions = make_sessionmaker(engine)
    # Secrets are encrypted with per-organisation data keys kept in the store, wrapped by
    # the master key; the box unwraps each once and keeps it in memory.
    box = SecretBox.from_data_dir(settings.data_dir, settings.master_key,
                                  store=SqlKeyStore(sessions))
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        secrets=box,
    )
