"""Client certificates from CSRs: only the key is taken from the request."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tenantry.core.ca import CertificateAuthority
from tenantry.core.errors import InvalidInput


def csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, name: str = "admin") -> str:
    built = (x509.CertificateSigningRequestBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .sign(key, hashes.SHA256()))
    return built.public_bytes(serialization.Encoding.PEM).decode()


def test_client_certificate_names_the_host_whatever_the_csr_asks(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = x509.load_pem_x509_certificate(
        ca.sign_client_csr(csr(key, "provider-admin"), "h0123456789").encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "h0123456789"
    assert cert.public_key() == key.public_key()
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize("bad", ["", "-----BEGIN CERTIFICATE REQUEST-----\nx\n",
                                 "weak-rsa"])
def test_bad_csrs_are_refused(tmp_path: Path, bad: str) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    if bad == "weak-rsa":
        bad = csr(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505
    with pytest.raises(InvalidInput) as refused:
        ca.sign_client_csr(bad, "h1")
    assert refused.value.field == "csr"
