"""Checks on uploaded site certificates, case by case."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tenantry.access.keys.certs import check_site_cert, name_matches
from tenantry.core.errors import InvalidInput

NOW = dt.datetime.now(dt.UTC)


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()


def issue(cn: str, issuer: Issued | None = None, *, ca: bool = False,
          names: list[str] | None = None, start: dt.timedelta = dt.timedelta(days=-1),
          days: int = 90) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer.cert.subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW + start).not_valid_after(NOW + start + dt.timedelta(days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return Issued(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


ROOT = issue("Test Root", ca=True, days=3650)
INTER = issue("Test Intermediate", ROOT, ca=True, days=3650)
LEAF = issue("shop.example.com", INTER, names=["shop.example.com", "*.shop.example.com"])
OTHER_KEY = issue("x", names=["x.example.com"]).key_pem


def chain(*certs: Issued) -> str:
    return "".join(c.pem for c in certs)


GOOD = [
    ("leaf + intermediate", "shop.example.com", chain(LEAF, INTER), LEAF.key_pem),
    ("with the root", "shop.example.com", chain(LEAF, INTER, ROOT), LEAF.key_pem),
    ("wildcard", "eu.shop.example.com", chain(LEAF, INTER), LEAF.key_pem),
    ("case and trailing dot", "Shop.Example.com.", chain(LEAF, INTER), LEAF.key_pem),
    ("self-signed leaf", "a.example.com",
     issue("a", names=["a.example.com"]).pem, None),
]

BAD = [
    ("wrong order", "shop.example.com", chain(INTER, LEAF), LEAF.key_pem, "certificate_pem",
     "leaf"),
    ("missing link", "shop.example.com", chain(LEAF, ROOT), LEAF.key_pem, "certificate_pem",
     "not signed"),
    ("name", "shop.example.org", chain(LEAF, INTER), LEAF.key_pem, "domain", "not shop"),
    ("wildcard is one label", "a.b.shop.example.com", chain(LEAF, INTER), LEAF.key_pem,
     "domain", "not a.b"),
    ("wildcard is not the apex", "example.com",
     issue("w", INTER, names=["*.example.com"]).pem, None, "domain", "not example.com"),
    ("expired", "old.example.com",
     issue("old", INTER, names=["old.example.com"], start=dt.timedelta(days=-100), days=30).pem,
     None, "certificate_pem", "expired"),
    ("not yet valid", "new.example.com",
     issue("new", INTER, names=["new.example.com"], start=dt.timedelta(days=2)).pem,
     None, "certificate_pem", "not valid before"),
    ("key mismatch", "shop.example.com", chain(LEAF, INTER), OTHER_KEY, "key_pem", "match"),
    ("no SAN", "n.example.com", issue("n.example.com", INTER).pem, None, "certificate_pem",
     "subjectAltName"),
    ("not PEM", "shop.example.com", "hello", LEAF.key_pem, "certificate_pem", "PEM"),
    ("key not PEM", "shop.example.com", chain(LEAF, INTER), "nope", "key_pem", "PEM"),
    ("key in the chain", "shop.example.com", chain(LEAF) + LEAF.key_pem, LEAF.key_pem,
     "certificate_pem", "private key"),
    ("a CA as leaf", "shop.example.com", chain(INTER, ROOT), INTER.key_pem, "certificate_pem",
     "leaf"),
    ("bad domain", "not a domain", chain(LEAF, INTER), LEAF.key_pem, "domain", "domain name"),
]



@pytest.mark.parametrize("case", GOOD, ids=[c[0] for c in GOOD])
def test_accepted(case: tuple[str, str, str, str | None]) -> None:
    _, domain, pem, key = case
    if key is None:  # a certificate made inline: make it again, keeping its key
        leaf = issue("a", names=["a.example.com"])
        pem, key = leaf.pem, leaf.key_pem
    checked = check_site_cert(domain, pem, key)
    assert checked.domain == domain.lower().rstrip(".")
    assert checked.not_after > NOW


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_refused(case: tuple[str, str, str, str | None, str, str]) -> None:
    _, domain, pem, key, field, words = case
    if key is None:  # the key does not matter: these fail before the key is checked
        key = OTHER_KEY
    with pytest.raises(InvalidInput, match=words) as info:
        check_site_cert(domain, pem, key)
    assert info.value.field == field
    assert "PRIVATE KEY" not in info.value.message


def test_encrypted_key_is_refused() -> None:
    encrypted = LEAF.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw")).decode()
    with pytest.raises(InvalidInput, match="encrypted") as info:
        check_site_cert("shop.example.com", chain(LEAF, INTER), encrypted)
    assert info.value.field == "key_pem"


@pytest.mark.parametrize(("pattern", "name", "ok"), [
    ("a.example.com", "a.example.com", True),
    ("*.example.com", "a.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "a.b.example.com", False),
    ("a*.example.com", "ab.example.com", False),
])
def test_name_matches(pattern: str, name: str, ok: bool) -> None:
    assert name_matches(pattern, name) is ok
