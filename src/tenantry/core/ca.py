"""tenantry's own X.509 certificate authority: ingress certificates, the control plane's
agent listener, and the agents' client certificates (mutual TLS).

Clients trust `DATA_DIR/ca.pem`; the key stays in `DATA_DIR/ca-key.pem` (mode 0600),
encrypted (PKCS#8) with a passphrase the runtime derives from the provider's data key, so a
copy of the data dir without the master key does not give the CA away. A plaintext key from
before is encrypted when it is first loaded with a passphrase.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tenantry.core.crypto import write_private
from tenantry.core.errors import InvalidInput, Unavailable


def _key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase
        else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption)


def _san(name: str) -> x509.GeneralName:
    """An IP address as an IP SAN (clients check those for https://127.0.0.1:...)."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@dataclass(frozen=True)
class IssuedCert:
    cert_pem: str
    key_pem: str
    not_after: dt.datetime

    def __repr__(self) -> str:
        return f"IssuedCert(not_after={self.not_after.isoformat()}, key=**********)"


class CertificateAuthority:
    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self._cert = cert
        self._key = key

    def __repr__(self) -> str:
        return f"CertificateAuthority({self._cert.subject.rfc4514_string()})"

    @property
    def cert_pem(self) -> str:
        return self._cert.public_bytes(serialization.Encoding.PEM).decode()

    @classmethod
    def load_or_create(cls, data_dir: Path,
                       passphrase: bytes | None = None) -> CertificateAuthority:
        """The API and the worker may both get here first: a lock file makes one CA."""
        lock = os.open(data_dir / ".ca.lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return cls._load_or_create(data_dir, passphrase)
        finally:
            os.close(lock)

    @classmethod
    def _load_or_create(cls, data_dir: Path, passphrase: bytes | None) -> CertificateAuthority:
        cert_path, key_path = data_dir / "ca.pem", data_dir / "ca-key.pem"
        if cert_path.exists() and key_path.exists():
            pem = key_path.read_bytes()
            encrypted = b"ENCRYPTED PRIVATE KEY" in pem
            if encrypted and passphrase is None:
                raise Unavailable(f"{key_path} is encrypted; load it through the runtime")
            loaded = serialization.load_pem_private_key(
                pem, password=passphrase if encrypted else None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise Unavailable(f"{key_path} is not an EC private key")
            if passphrase is not None and not encrypted:
                write_private(key_path, _key_pem(loaded, passphrase))
            return cls(x509.load_pem_x509_certificate(cert_path.read_bytes()), loaded)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tenantry local CA"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tenantry")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(key_path, _key_pem(key, passphrase))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        cert_path.chmod(0o644)
        return cls(cert, key)

    def issue_server_cert(self, hostnames: list[str], *, days: int = 90) -> IssuedCert:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        not_after = now + dt.timedelta(days=days)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in hostnames]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM).decode() + self.cert_pem
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        return IssuedCert(cert_pem=chain, key_pem=key_pem, not_after=not_after)

    def sign_client_csr(self, csr_pem: str, common_name: str, *, days: int = 365) -> str:
        """A client certificate for `common_name` (an agent's host id) on the CSR's key.

        Only the key is taken from the request: its subject and extensions are ignored, so
        a CSR cannot ask for more than a client certificate of that one name.
        """
        public = check_csr(csr_pem)
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode()


def check_csr(csr_pem: str) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """The public key of a well-formed, self-signed CSR with an acceptable key."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise InvalidInput("csr is not a PEM certificate signing request",
                           field="csr") from None
    if not csr.is_signature_valid:
        raise InvalidInput("csr is not signed by its own key", field="csr")
    public = csr.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey) or (
            isinstance(public, rsa.RSAPublicKey) and public.key_size >= 2048):
        return public
    raise InvalidInput("csr must carry an EC key or an RSA key of 2048 bits or more",
                       field="csr")
