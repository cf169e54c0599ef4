"""Secrets at rest: envelope encryption under the master key.

Every secret is encrypted with a data key of the organisation that owns it (an ISV id, or
"provider" for the provider's own secrets); the data keys are stored wrapped (encrypted) by
the master key, which comes from `TENANTRY_MASTER_KEY` or from `DATA_DIR/master.key`
(mode 0600, made on first start). Rotating the master key therefore re-wraps a few data keys
and never touches the secrets themselves (`tenantry secrets rotate-master`).

Ciphertexts read `v2:<data key id>:<Fernet token under the data key>`. Plain Fernet tokens
under the master key ("v1", written before envelope encryption) still decrypt; rotation
converts them first.

Secret values travel inside the program as `SecretStr`, whose repr is '**********', so no
log line or traceback shows one; unwrapped data keys live only in a process's memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from tenantry.core.errors import InvalidInput, Unavailable

PROVIDER = "provider"
V2 = "v2:"


def write_private(path: Path, data: bytes) -> None:
    """Write a file that only its owner may read, atomically."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_private(path: Path, *, field: str = "master_key") -> SecretStr:
    if path.stat().st_mode & 0o077:
        raise InvalidInput(f"{path} must be readable by its owner only (chmod 600)", field=field)
    return SecretStr(path.read_text().strip())


class MasterKey:
    """The key that wraps data keys; `key_id` is a fingerprint, safe to store and show."""

    def __init__(self, key: SecretStr) -> None:
        raw = key.get_secret_value().encode()
        try:
            self._fernet = Fernet(raw)
            self._bytes = base64.urlsafe_b64decode(raw)
        except (ValueError, TypeError):
            raise InvalidInput("the master key is not a valid key", field="master_key") from None
        digest = hashlib.sha256(b"tenantry master key\0" + self._bytes).hexdigest()
        self.key_id = f"mk-{digest[:16]}"

    def __repr__(self) -> str:
        return f"MasterKey({self.key_id}, **********)"

    @staticmethod
    def generate() -> SecretStr:
        return SecretStr(Fernet.generate_key().decode())

    def wrap(self, data_key: bytes) -> str:
        return self._fernet.encrypt(data_key).decode()

    def unwrap(self, wrapped: str) -> bytes:
        return self._fernet.decrypt(wrapped.encode())

    def encrypt_v1(self, plain: bytes) -> str:
        return self._fernet.encrypt(plain).decode()

    def decrypt_v1(self, token: str) -> bytes:
        return self._fernet.decrypt(token.encode())

    def hkdf(self, purpose: str) -> bytes:
        return _hkdf(self._bytes, purpose)


def _hkdf(material: bytes, purpose: str) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"tenantry",
                info=purpose.encode()).derive(material)


@dataclass(frozen=True)
class WrappedKey:
    id: str
    org: str
    wrapped: str
    master_key_id: str

    def __repr__(self) -> str:
        return f"WrappedKey({self.id}, org={self.org}, master={self.master_key_id})"


class StaleMasterKey(Exception):
    """The store's data keys are wrapped by a newer master key than the caller's."""

    def __init__(self, master_key_id: str) -> None:
        super().__init__(master_key_id)
        self.master_key_id = master_key_id


class KeyStore(Protocol):
    """Where wrapped data keys live: the `data_keys` table, or a dict in unit tests."""

    def get(self, key_id: str) -> WrappedKey | None: ...

    def for_org(self, org: str) -> WrappedKey | None: ...

    def add(self, key: WrappedKey) -> WrappedKey:
        """Store a new org's data key, or return the one another process stored first.

        Raises StaleMasterKey when stored keys are wrapped by another master key.
        """
        ...


class MemoryKeyStore:
    """A KeyStore in a dict, for tests."""

    def __init__(self) -> None:
        self.keys: dict[str, WrappedKey] = {}

    def get(self, key_id: str) -> WrappedKey | None:
        return self.keys.get(key_id)

    def for_org(self, org: str) -> WrappedKey | None:
        return next((k for k in self.keys.values() if k.org == org), None)

    def add(self, key: WrappedKey) -> WrappedKey:
        other = {k.master_key_id for k in self.keys.values()} - {key.master_key_id}
        if other:
            raise StaleMasterKey(other.pop())
        existing = self.for_org(key.org)
        if existing is not None:
            return existing
        self.keys[key.id] = key
        return key


class SecretBox:
    """Encrypts and decrypts secrets for every caller; holds unwrapped data keys in memory.

    A box without a store (`bind` not called) writes v1 tokens under the master key; the
    runtime always binds one.
    """

    def __init__(self, key: SecretStr, *, key_file: Path | None = None,
                 store: KeyStore | None = None) -> None:
        self._master = MasterKey(key)
        self._key_file = key_file
        self._store = store
        self._lock = threading.Lock()
        self._by_id: dict[str, Fernet] = {}
        self._by_org: dict[str, str] = {}
        self._raw: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return "SecretBox(**********)"

    @classmethod
    def from_data_dir(cls, data_dir: Path, env_key: SecretStr | None = None,
                      store: KeyStore | None = None) -> SecretBox:
        if env_key is not None:
            return cls(env_key, store=store)
        path = data_dir / "master.key"
        if not path.exists():
            write_private(path, MasterKey.generate().get_secret_value().encode())
        return cls(read_private(path), key_file=path, store=store)

    def bind(self, store: KeyStore) -> None:
        self._store = store

    @property
    def master(self) -> MasterKey:
        return self._master

    @property
    def key_file(self) -> Path | None:
        return self._key_file

    # ------------------------------------------------------------------ the callers' API

    def encrypt(self, value: SecretStr | str, *, org: str | None = None) -> str:
        plain = value.get_secret_value() if isinstance(value, SecretStr) else value
        if self._store is None:
            return self._master.encrypt_v1(plain.encode())
        key_id, fernet = self._org_key(org or PROVIDER)
        return f"{V2}{key_id}:{fernet.encrypt(plain.encode()).decode()}"

    def decrypt(self, token: str) -> SecretStr:
        try:
            if token.startswith(V2):
                _, key_id, body = token.split(":", 2)
                return SecretStr(self._key(key_id).decrypt(body.encode()).decode())
            return SecretStr(self._master.decrypt_v1(token).decode())
        except (InvalidToken, ValueError):
            raise Unavailable("a stored secret cannot be decrypted with this master key") from None

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose (audit MACs, CSRF tokens ...).

        With a store it comes from the provider's data key, so it survives master-key
        rotation; without one, from the master key.
        """
        if self._store is None:
            return self._master.hkdf(purpose)
        key_id, _ = self._org_key(PROVIDER)
        return _hkdf(self._raw[key_id], purpose)

    # ------------------------------------------------------------------ data keys

    def _org_key(self, org: str) -> tuple[str, Fernet]:
        with self._lock:
            key_id = self._by_org.get(org)
            if key_id is not None:
                return key_id, self._by_id[key_id]
        assert self._store is not None
        stored = self._store.for_org(org)
        if stored is None:
            stored = self._create(org)
        fernet = self._key(stored.id, stored)
        with self._lock:
            self._by_org[org] = stored.id
        return stored.id, fernet

    def _create(self, org: str) -> WrappedKey:
        assert self._store is not None
        raw = Fernet.generate_key()
        for attempt in (1, 2):
            key = WrappedKey(id=f"dk{secrets.token_hex(8)}", org=org,
                             wrapped=self._master.wrap(raw), master_key_id=self._master.key_id)
            try:
                return self._store.add(key)
            except StaleMasterKey as exc:
                if attempt == 2 or not self._reload_master(exc.master_key_id):
                    break
        raise Unavailable("the master key was rotated; restart this process with the new key")

    def _key(self, key_id: str, stored: WrappedKey | None = None) -> Fernet:
        with self._lock:
            cached = self._by_id.get(key_id)
        if cached is not None:
            return cached
        if stored is None:
            if self._store is None:
                raise Unavailable("no key store for envelope-encrypted secrets")
            stored = self._store.get(key_id)
            if stored is None:
                raise Unavailable(f"data key {key_id} does not exist")
        # Rotated under us: the new key is in the key file (or master.key.next if the
        # rotation stopped between its commit and the rename).
        if (stored.master_key_id != self._master.key_id
                and not self._reload_master(stored.master_key_id)):
            raise Unavailable(f"data key {key_id} is wrapped by master key "
                              f"{stored.master_key_id}; restart with that key")
        try:
            raw = self._master.unwrap(stored.wrapped)
        except InvalidToken:
            raise Unavailable(f"data key {key_id} cannot be unwrapped with this master key "
                              f"({self._master.key_id})") from None
        fernet = Fernet(raw)
        with self._lock:
            self._by_id[key_id] = fernet
            self._raw[key_id] = raw
        return fernet

    def _reload_master(self, wanted: str | None) -> bool:
        """Read the key file again after a rotation; True if the master key changed."""
        if self._key_file is None:
            return False
        pending = self._key_file.with_name(self._key_file.name + ".next")
        if pending.exists():
            candidate = MasterKey(read_private(pending))
            if wanted is not None and candidate.key_id == wanted:
                os.replace(pending, self._key_file)
                self._master = candidate
                return True
        candidate = MasterKey(read_private(self._key_file))
        if candidate.key_id == self._master.key_id:
            return False
        self._master = candidate
        return wanted is None or candidate.key_id == wanted


def new_password(nbytes: int = 24) -> SecretStr:
    return SecretStr(base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).decode().rstrip("="))


def new_token(prefix: str) -> SecretStr:
    return SecretStr(f"{prefix}_{secrets.token_urlsafe(32)}")


def token_hash(token: str) -> str:
    """Tokens are long random strings, so a plain SHA-256 is a safe way to store them."""
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
