"""Agents over mutual TLS: `up --agent-tls-listen` serves them with a certificate from
tenantry's CA and asks for theirs; an agent enrolls there with a CSR and then needs both its
certificate and its token, naming the same host."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import (
    TENANTRY,
    ControlPlaneProcess,
    free_port,
    make_isv,
    port_block,
    running_plane,
    short_tmp,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tls_plane() -> Iterator[tuple[ControlPlaneProcess, str]]:
    port = free_port()
    with running_plane("--agent-tls-listen", f"127.0.0.1:{port}") as cp:
        yield cp, f"https://127.0.0.1:{port}"


def csr_pem(name: str = "x") -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def tls(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert and key:
        context.load_cert_chain(str(cert), str(key))
    return context


def enroll_body(plane: ControlPlaneProcess, name: str, **extra: Any) -> dict[str, Any]:
    return {"token": plane.cli_json("host", "enroll-token")["token"], "name": name,
            "region": "mtls", "ingress_port": free_port(), **extra}


def test_agent_enrolls_and_works_over_mutual_tls(tls_plane: tuple[ControlPlaneProcess, str],
                                                 bundles: dict[str, Path]) -> None:
    plane, server = tls_plane
    ca = plane.data_dir / "ca.pem"
    root = short_tmp("tnm-")
    agent = None
    try:
        token = plane.cli_json("host", "enroll-token")["token"]
        agent = subprocess.Popen(
            [*TENANTRY, "agent", "--data-dir", str(root / "agent"), "--server", server,
             "--ca-file", str(ca), "--region", "mtls", "--name", "fenced-1",
             "--ingress-port", str(free_port()),
             "--port-range", "{}-{}".format(*port_block()), "--stop-services-on-exit"],
            env={**plane.env, "TENANTRY_ENROLL_TOKEN": token}, stdout=subprocess.DEVNULL,
            stderr=(root / "agent.log").open("wb"), start_new_session=True)
        wait_until(lambda: any(h["name"] == "fenced-1" and h["state"] == "online"
                               for h in plane.cli_json("host", "list")), 60,
                   "the agent to enroll over mutual TLS")
        creds = json.loads((root / "agent" / "agent.json").read_text())
        key, cert = root / "agent" / "agent-key.pem", root / "agent" / "agent-cert.pem"
        assert key.stat().st_mode & 0o777 == 0o600
        issued = x509.load_pem_x509_certificate(cert.read_bytes())
        assert issued.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
            creds["host_id"]

        # the whole path works: a platform placed on that host becomes ready
        isv = make_isv(plane, bundles)
        made = plane.cli_json("platform", "create", isv, "--tenant", "t1", "--app",
                              "bodyshop@1.0.0", "--region", "mtls", "--wait")
        assert (made["host"], made["state"]) == ("fenced-1", "ready")

        desired = "/api/v1/agent/desired?generation=0&wait=0"
        bearer = {"Authorization": f"Bearer {creds['token']}"}
        with httpx.Client(base_url=server, verify=tls(ca, cert, key)) as client:
            assert client.get(desired, headers=bearer).status_code == 200
        # the token alone opens nothing on this listener
        with httpx.Client(base_url=server, verify=tls(ca)) as client:
            refused = client.get(desired, headers=bearer)
            assert refused.status_code == 401 and "client certificate" in refused.text
        # another host's certificate with this host's token: refused
        other = httpx.post(f"{server}/api/v1/agent/enroll", verify=tls(ca),
                           json=enroll_body(plane, "fenced-2", csr=_csr_with_key(root)))
        assert other.status_code == 201, other.text
        (root / "other-cert.pem").write_text(other.json()["client_certificate"])
        with httpx.Client(base_url=server,
                          verify=tls(ca, root / "other-cert.pem", root / "other-key.pem")) as c:
            assert c.get(desired, headers=bearer).status_code == 401
            theirs = {"Authorization": f"Bearer {other.json()['agent_token']}"}
            assert c.get(desired, headers=theirs).status_code == 200
            # a lost machine: revoked, its certificate and token open nothing any more
            revoked = plane.cli_json("host", "revoke", "fenced-2")
            assert revoked["state"] == "revoked"
            assert c.get(desired, headers=theirs).status_code == 401
        assert any(e["kind"] == "HOST_REVOKED" for e in plane.cli_json("events", "--limit", "20"))
        # nothing new is placed on a revoked host
        again = plane.cli_json("platform", "create", isv, "--tenant", "t2", "--app",
                               "bodyshop@1.0.0", "--region", "mtls", "--wait")
        assert again["host"] == "fenced-1"
        plane.cli("platform", "destroy", again["id"], "--wait")
        # a certificate from another CA does not get through the handshake
        stranger = _stranger(root)
        with pytest.raises(httpx.HTTPError), httpx.Client(
                base_url=server, verify=tls(ca, *stranger)) as client:
            client.get(desired, headers=bearer)
        plane.cli("platform", "destroy", made["id"], "--wait")
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                agent.wait(60)
            if agent.poll() is None:
                agent.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_enrollment_over_tls_needs_a_good_csr(tls_plane: tuple[ControlPlaneProcess, str]
                                              ) -> None:
    plane, server = tls_plane
    ca = plane.data_dir / "ca.pem"
    body = enroll_body(plane, "fenced-3")
    for bad in (None, "not a csr", csr_pem().replace("A", "B", 5)):
        answer = httpx.post(f"{server}/api/v1/agent/enroll", verify=tls(ca),
                            json={**body, "csr": bad})
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["field"] == "csr"
    # nothing was spent: the same one-time token still enrolls, with a good CSR
    good = httpx.post(f"{server}/api/v1/agent/enroll", verify=tls(ca),
                      json={**body, "csr": csr_pem()})
    assert good.status_code == 201, good.text
    assert "BEGIN CERTIFICATE" in good.json()["client_certificate"]


def _csr_with_key(root: Path) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    (root / "other-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anything")]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _stranger(root: Path) -> tuple[Path, Path]:
    """A self-signed client certificate: no CA of tenantry's behind it."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=stranger",
                    "-keyout", str(root / "stranger-key.pem"),
                    "-out", str(root / "stranger.pem")], check=True, capture_output=True)
    return root / "stranger.pem", root / "stranger-key.pem"
