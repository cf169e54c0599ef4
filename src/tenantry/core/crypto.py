"""Secrets at rest: everything secret is stored encrypted under the master key.

The master key comes from `TENANTRY_MASTER_KEY` or from `DATA_DIR/master.key` (mode 0600,
made on first start). Secret values travel inside the program as `SecretStr`, whose repr
is '**********', so no log line or traceback shows one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from tenantry.core.errors import InvalidInput, Unavailable


def write_private(path: Path, data: bytes) -> None:
    """Write a file that only its owner may read, atomically."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class SecretBox:
    def __init__(self, key: SecretStr) -> None:
        try:
            self._fernet = Fernet(key.get_secret_value().encode())
            self._master_bytes = base64.urlsafe_b64decode(key.get_secret_value().encode())
        except (ValueError, TypeError):
            raise InvalidInput("the master key is not a valid key", field="master_key") from None

    def __repr__(self) -> str:
        return "SecretBox(**********)"

    @classmethod
    def from_data_dir(cls, data_dir: Path, env_key: SecretStr | None = None) -> SecretBox:
        if env_key is not None:
            return cls(env_key)
        path = data_dir / "master.key"
        if not path.exists():
            write_private(path, Fernet.generate_key())
        if path.stat().st_mode & 0o077:
            raise InvalidInput(f"{path} must be readable by its owner only (chmod 600)",
                               field="master_key")
        return cls(SecretStr(path.read_text().strip()))

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose (audit MACs, CSRF tokens ...), bound to the master key."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        master = self._master_bytes
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"tenantry",
                    info=purpose.encode()).derive(master)

    def encrypt(self, value: SecretStr | str) -> str:
        plain = value.get_secret_value() if isinstance(value, SecretStr) else value
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> SecretStr:
        try:
            return SecretStr(self._fernet.decrypt(token.encode()).decode())
        except InvalidToken:
            raise Unavailable("a stored secret cannot be decrypted with this master key") from None


def new_password(nbytes: int = 24) -> SecretStr:
    return SecretStr(base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).decode().rstrip("="))


def new_token(prefix: str) -> SecretStr:
    return SecretStr(f"{prefix}_{secrets.token_urlsafe(32)}")


def token_hash(token: str) -> str:
    """Tokens are long random strings, so a plain SHA-256 is a safe way to store them."""
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
