"""Checks on a certificate an ISV uploads for a custom domain: pure functions, no store.

Rules: PEM certificates, leaf first and then each issuer in order, each signed by the next
(a self-signed root at the end is allowed, and must verify itself); every issuer a CA; the
leaf's subjectAltName covers the domain (a wildcard stands for exactly one label); every
certificate valid now; the key unencrypted and matching the leaf's public key.
Which roots to trust is the browser's business, so a private PKI is accepted.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization

from tenantry.core.errors import InvalidInput

MAX_PEM = 64 * 1024
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class CheckedCert:
    domain: str
    issuer: str
    fingerprint: str
    not_before: dt.datetime
    not_after: dt.datetime


def check_domain(domain: str) -> str:
    name = domain.strip().lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(x) for x in labels):
        raise InvalidInput(f"{domain!r} is not a domain name (e.g. shop.example.com)",
                           field="domain")
    return name


def name_matches(pattern: str, domain: str) -> bool:
    """RFC 6125: exact, or `*.rest` standing for one whole leftmost label."""
    pattern = pattern.lower().rstrip(".")
    if pattern == domain:
        return True
    if not pattern.startswith("*."):
        return False
    first, _, rest = domain.partition(".")
    return bool(first) and rest == pattern[2:] and "*" not in rest


def check_site_cert(domain: str, certificate_pem: str, key_pem: str, *,
                    now: dt.datetime | None = None) -> CheckedCert:
    now = now or dt.datetime.now(dt.UTC)
    name = check_domain(domain)
    chain = _parse_chain(certificate_pem)
    leaf = chain[0]
    _check_order(chain)
    _check_names(leaf, name)
    for position, cert in enumerate(chain):
        what = "the certificate" if position == 0 else f"chain certificate {position + 1}"
        if now < cert.not_valid_before_utc:
            raise InvalidInput(f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}",
                               field="certificate_pem")
        if now > cert.not_valid_after_utc:
            raise InvalidInput(f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d}",
                               field="certificate_pem")
    _check_key(leaf, key_pem)
    return CheckedCert(domain=name, issuer=leaf.issuer.rfc4514_string(),
                       fingerprint=leaf.fingerprint(hashes.SHA256()).hex(),
                       not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc)


def _parse_chain(pem: str) -> list[x509.Certificate]:
    if len(pem) > MAX_PEM:
        raise InvalidInput("certificate_pem is too large", field="certificate_pem")
    if "PRIVATE KEY" in pem:
        raise InvalidInput("certificate_pem holds a private key; send it as key_pem",
                           field="certificate_pem")
    try:
        chain = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        raise InvalidInput("certificate_pem is not a PEM certificate chain",
                           field="certificate_pem") from None
    if not chain:
        raise InvalidInput("certificate_pem holds no certificate", field="certificate_pem")
    return chain


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _check_order(chain: list[x509.Certificate]) -> None:
    if _is_ca(chain[0]):
        raise InvalidInput("the first certificate must be the site's (leaf) certificate, "
                           "not a CA", field="certificate_pem")
    pairs = list(zip(chain, chain[1:], strict=False))
    if chain[-1].issuer == chain[-1].subject and len(chain) > 1:
        pairs.append((chain[-1], chain[-1]))  # a root at the end must verify itself
    for position, (cert, issuer) in enumerate(pairs, start=1):
        if not _is_ca(issuer):
            raise InvalidInput(f"chain certificate {position + 1} is not a CA",
                               field="certificate_pem")
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise InvalidInput(
                f"certificate {position} is not signed by the certificate after it "
                "(give the leaf first, then each issuer in order)",
                field="certificate_pem") from None


def _check_names(leaf: x509.Certificate, domain: str) -> None:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise InvalidInput("the certificate has no subjectAltName, so it names no domain",
                           field="certificate_pem") from None
    names = san.get_values_for_type(x509.DNSName)
    if not any(name_matches(n, domain) for n in names):
        raise InvalidInput(f"the certificate is for {', '.join(names) or 'no DNS name'}, "
                           f"not {domain}", field="domain")


def _check_key(leaf: x509.Certificate, key_pem: str) -> None:
    if len(key_pem) > MAX_PEM:
        raise InvalidInput("key_pem is too large", field="key_pem")
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except TypeError:
        raise InvalidInput("key_pem is encrypted; upload it without a passphrase (it is "
                           "stored encrypted)", field="key_pem") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidInput("key_pem is not a PEM private key", field="key_pem") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise InvalidInput("key_pem does not match the certificate's public key",
                           field="key_pem")
