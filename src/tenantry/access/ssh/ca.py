"""tenantry's SSH user certificate authority: an Ed25519 key that signs short-lived certificates.

The key lives in `DATA_DIR/ssh-ca-key` (OpenSSH private key format, mode 0600) until the
envelope-encrypted key store takes it over. Revocation lists (KRLs) are built with
`ssh-keygen -k` so that sshd reads exactly the format its own tools write.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    SSHCertificateBuilder,
    SSHCertificateType,
)

from tenantry.core.errors import InvalidInput, Unavailable

KEY_FILE = "ssh-ca-key"
CA_COMMENT = "tenantry-user-ca"

UserKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def parse_user_key(text: str) -> UserKey:
    """An OpenSSH public key line (`ssh-ed25519 AAAA... comment`); certificates are refused."""
    line = text.strip()
    if "-cert-v01@openssh.com" in line.split(" ", 1)[0]:
        raise InvalidInput("give the plain public key, not a certificate", field="public_key")
    try:
        key = serialization.load_ssh_public_key(line.encode())
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidInput("public_key is not an OpenSSH public key line",
                           field="public_key") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise InvalidInput("RSA keys must have at least 2048 bits", field="public_key")
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
                      | rsa.RSAPublicKey):
        raise InvalidInput("public_key must be Ed25519, ECDSA or RSA", field="public_key")
    return key


class SshCertificateAuthority:
    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key

    def __repr__(self) -> str:
        return f"SshCertificateAuthority({self.public_key_line()!r})"

    @classmethod
    def generate(cls) -> SshCertificateAuthority:
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, data_dir: Path) -> SshCertificateAuthority:
        path = data_dir / KEY_FILE
        if not path.exists():
            ca = cls.generate()
            pem = ca._key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.OpenSSH,
                                        serialization.NoEncryption())
            data_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process won the race: use its key
                return cls.load_or_create(data_dir)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            return ca
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise Unavailable(f"{path} is not an Ed25519 key")
        return cls(key)

    def public_key_line(self) -> str:
        raw = self._key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                  serialization.PublicFormat.OpenSSH)
        return f"{raw.decode()} {CA_COMMENT}"

    def sign(self, *, public_key: str, serial: int, key_id: str, principals: Iterable[str],
             valid_after: dt.datetime, valid_before: dt.datetime,
             extensions: Iterable[str] = ()) -> str:
        """A user certificate line (`ssh-ed25519-cert-v01@openssh.com AAAA...`)."""
        builder = (SSHCertificateBuilder()
                   .public_key(parse_user_key(public_key))
                   .serial(serial)
                   .type(SSHCertificateType.USER)
                   .key_id(key_id.encode())
                   .valid_principals([p.encode() for p in principals])
                   .valid_after(int(valid_after.timestamp()))
                   .valid_before(int(valid_before.timestamp())))
        for name in sorted(set(extensions)):
            builder = builder.add_extension(name.encode(), b"")
        return builder.sign(self._key).public_bytes().decode()

    def krl(self, serials: Iterable[int]) -> bytes:
        """A KRL revoking these serials of this CA, written by `ssh-keygen -k`."""
        with tempfile.TemporaryDirectory(prefix="tnt-krl-") as tmp:
            root = Path(tmp)
            (root / "ca.pub").write_text(self.public_key_line() + "\n")
            (root / "spec").write_text("".join(f"serial: {s}\n" for s in sorted(set(serials))))
            done = subprocess.run(["ssh-keygen", "-q", "-k", "-f", str(root / "krl"),
                                   "-s", str(root / "ca.pub"), str(root / "spec")],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise Unavailable(f"ssh-keygen -k failed: {done.stderr.strip()}")
            return (root / "krl").read_bytes()
