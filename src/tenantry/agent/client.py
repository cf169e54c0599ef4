"""The agent's side of the control-plane API (outbound HTTP(S) only)."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tenantry.core.crypto import write_private
from tenantry.core.errors import InvalidInput, NotAllowed, Unavailable


@dataclass(frozen=True)
class Credentials:
    server: str
    host_id: str
    token: str

    def __repr__(self) -> str:
        return f"Credentials(server={self.server!r}, host_id={self.host_id!r}, token=**********)"

    @classmethod
    def load(cls, path: Path) -> Credentials | None:
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(server=data["server"], host_id=data["host_id"], token=data["token"])

    def save(self, path: Path) -> None:
        write_private(path, json.dumps({"server": self.server, "host_id": self.host_id,
                                        "token": self.token}).encode())


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
           port_min: int, port_max: int, ca_file: Path | None = None) -> Credentials:
    body = {"token": token, "name": name or socket.gethostname().split(".")[0].lower(),
            "region": region, "address": "127.0.0.1", "ingress_port": ingress_port,
            "port_min": port_min, "port_max": port_max}
    try:
        resp = httpx.post(f"{server}/api/v1/agent/enroll", json=body, timeout=30,
                          verify=str(ca_file) if ca_file else True)
    except httpx.HTTPError as exc:
        raise Unavailable(f"cannot reach the control plane at {server}: {exc}") from None
    _raise_for(resp)
    data = resp.json()
    return Credentials(server=server, host_id=data["host_id"], token=data["agent_token"])


class ControlPlaneClient:
    def __init__(self, credentials: Credentials) -> None:
        self._creds = credentials
        self._http = httpx.Client(base_url=credentials.server, timeout=60,
                                  headers={"Authorization": f"Bearer {credentials.token}",
                                           "User-Agent": f"tenantry-agent/{os.getpid()}"})

    def close(self) -> None:
        self._http.close()

    def desired(self, *, generation: int, wait: float) -> dict[str, Any]:
        resp = self._http.get("/api/v1/agent/desired",
                              params={"generation": generation, "wait": wait})
        _raise_for(resp)
        data: dict[str, Any] = resp.json()
        return data

    def report(self, report: dict[str, Any]) -> None:
        _raise_for(self._http.post("/api/v1/agent/report", json=report))

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
