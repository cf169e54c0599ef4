"""The agent's side of the control-plane API (outbound HTTP(S) only)."""

from __future__ import annotations

import json
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tenantry.core.crypto import write_private
from tenantry.core.errors import InvalidInput, NotAllowed, Unavailable
from tenantry.platforms.contract import (
    KEEP_ALIVE,
    PACE_HEADER,
    DesiredHost,
    HostReport,
    quiet_pace,
)


@dataclass(frozen=True)
class Credentials:
    server: str
    host_id: str
    token: str
    # mutual TLS (an https server): the client certificate and key, and the CA to trust
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None

    def __repr__(self) -> str:
        return (f"Credentials(server={self.server!r}, host_id={self.host_id!r}, "
                f"token=**********, cert_file={self.cert_file!r})")

    @classmethod
    def load(cls, path: Path) -> Credentials | None:
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(server=data["server"], host_id=data["host_id"], token=data["token"],
                   cert_file=data.get("cert_file"), key_file=data.get("key_file"),
                   ca_file=data.get("ca_file"))

    def save(self, path: Path) -> None:
        write_private(path, json.dumps({
            "server": self.server, "host_id": self.host_id, "token": self.token,
            "cert_file": self.cert_file, "key_file": self.key_file,
            "ca_file": self.ca_file}).encode())

    def http_options(self) -> dict[str, Any]:
        """httpx options: the client certificate and the trusted CA, when there are."""
        if not (self.ca_file or self.cert_file):
            return {}
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return {"verify": context}


def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        error = resp.json()["error"]
        message, field = error["message"], error.get("field")
    except (ValueError, KeyError, TypeError):
        message, field = resp.text[:200], None
    if resp.status_code in (401, 403):
        raise NotAllowed(message)
    if resp.status_code in (400, 404, 409, 422):
        raise InvalidInput(message, field=field)
    raise Unavailable(f"control plane answered {resp.status_code}: {message}")


def enroll(*, server: str, token: str, name: str | None, region: str, ingress_port: int,
           port_min: int, port_max: int, ca_file: Path | None = None,
           tls_dir: Path | None = None) -> Credentials:
    """Trade the one-time token for the host's credentials. Over https with `tls_dir`, a key
    is made there and its CSR sent: the answer's client certificate is kept beside it."""
    body: dict[str, Any] = {
        "token": token, "name": name or socket.gethostname().split(".")[0].lower(),
        "region": region, "address": "127.0.0.1", "ingress_port": ingress_port,
        "port_min": port_min, "port_max": port_max}
    key_file = cert_file = None
    if tls_dir is not None and server.startswith("https://"):
        key_file, cert_file = tls_dir / "agent-key.pem", tls_dir / "agent-cert.pem"
        body["csr"] = _key_and_csr(key_file, body["name"])
    verify: Any = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    try:
        resp = httpx.post(f"{server}/api/v1/agent/enroll", json=body, timeout=30, verify=verify)
    except httpx.HTTPError as exc:
        raise Unavailable(f"cannot reach the control plane at {server}: {exc}") from None
    _raise_for(resp)
    data = resp.json()
    if cert_file is not None:
        if not data.get("client_certificate"):
            raise Unavailable("the control plane sent no client certificate")
        cert_file.write_text(data["client_certificate"])
    return Credentials(server=server, host_id=data["host_id"], token=data["agent_token"],
                       cert_file=str(cert_file) if cert_file else None,
                       key_file=str(key_file) if key_file else None,
                       ca_file=str(ca_file) if ca_file else None)


def _key_and_csr(key_file: Path, name: str) -> str:
    """A new EC key (kept, mode 0600) and a CSR for it."""
    key = ec.generate_private_key(ec.SECP256R1())
    write_private(key_file, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


class ControlPlaneClient:
    def __init__(self, credentials: Credentials,
                 transport: httpx.BaseTransport | None = None) -> None:
        """`transport` replaces the network (tests pass an httpx.MockTransport)."""
        self._creds = credentials
        # Connections are kept between heartbeats (a new TLS handshake each time would cost a
        # fleet's control plane more than the heartbeats), and let go before the API's
        # keep-alive ends.
        self._http = httpx.Client(base_url=credentials.server, timeout=60, transport=transport,
                                  limits=httpx.Limits(keepalive_expiry=KEEP_ALIVE - 10),
                                  **credentials.http_options(),
                                  headers={"Authorization": f"Bearer {credentials.token}",
                                           "User-Agent": f"tenantry-agent/{os.getpid()}"})

    def close(self) -> None:
        self._http.close()

    def desired(self, *, generation: int, wait: float) -> DesiredHost:
        """The host's desired state; pydantic's ValidationError when it does not validate."""
        got = self._desired(generation, wait, held=False)
        assert got is not None
        return got

    def desired_if_changed(self, *, held: int, wait: float) -> DesiredHost | None:
        """The change to the desired state once it is no longer generation `held`, whose
        whole document the caller holds (DesiredHost.merged applies it); None when it still
        is after `wait` s (304 Not Modified: no document is built, sent or decrypted)."""
        return self._desired(held, wait, held=True)

    def _desired(self, generation: int, wait: float, *, held: bool) -> DesiredHost | None:
        headers = {"If-None-Match": f'"{generation}"'} if held else {}
        params: dict[str, float | int] = {"generation": generation, "wait": wait}
        if held and generation > 0:
            params["since"] = generation
        resp = self._http.get("/api/v1/agent/desired", headers=headers, params=params,
                              timeout=max(60.0, wait + 30))  # held `wait` s, then built
        if held and resp.status_code == 304:
            return None
        _raise_for(resp)
        return DesiredHost.model_validate_json(resp.content)

    def report(self, report: HostReport) -> int | None:
        """Send a heartbeat; the seconds the control plane asks between two quiet ones (its
        `Tenantry-Heartbeat-Interval`), or None when it did not say, or said nonsense or a
        pace out of QUIET_HEARTBEAT_RANGE."""
        resp = self._http.post("/api/v1/agent/report", content=report.model_dump_json(),
                               headers={"Content-Type": "application/json"})
        _raise_for(resp)
        return quiet_pace(resp.headers.get(PACE_HEADER))

    def ssh_config(self) -> dict[str, Any]:
        resp = self._http.get("/api/v1/ssh/agent/config")
        _raise_for(resp)
        data: dict[str, Any] = resp.json()
        return data

    def ssh_krl(self) -> bytes:
        resp = self._http.get("/api/v1/ssh/krl")
        _raise_for(resp)
        return resp.content

    def ssh_events(self, events: list[dict[str, Any]]) -> None:
        _raise_for(self._http.post("/api/v1/ssh/agent/events", json={"events": events}))

    def download_bundle(self, digest: str, target: Path) -> None:
        tmp = target.with_name(f".{target.name}.part{os.getpid()}")
        with self._http.stream("GET", f"/api/v1/agent/bundles/{digest}") as resp:
            if resp.status_code >= 400:
                resp.read()
                _raise_for(resp)
            with tmp.open("wb") as out:
                for chunk in resp.iter_bytes():
                    out.write(chunk)
        os.replace(tmp, target)
