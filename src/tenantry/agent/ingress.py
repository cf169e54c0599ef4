"""Caddy as the ingress, configured live through its admin API.

`render_config` is pure and deterministic, so the agent compares it with `CaddyAdmin.current`
and loads only when they differ. Caddy runs under the ServiceManager from a bootstrap file
that opens only the admin endpoint; with `--resume` a restarted Caddy comes back with the
last loaded routes before the agent has had a chance to load them again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx

from tenantry.agent.services import ProgramSpec
from tenantry.core.errors import InvalidInput, Unavailable

_HOST_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_UPSTREAM_RE = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
FAIL_FOR = "2s"  # how long one of a slot's several processes that failed a request is left out


@dataclass(frozen=True)
class Route:
    hostname: str
    upstreams: tuple[str, ...]
    cert_pem: str
    key_pem: str

    def __post_init__(self) -> None:
        if not _HOST_RE.fullmatch(self.hostname):
            raise InvalidInput(f"bad hostname {self.hostname!r}", field="hostname")
        if not self.upstreams or not all(_UPSTREAM_RE.fullmatch(u) for u in self.upstreams):
            raise InvalidInput("upstreams must be HOST:PORT addresses", field="upstreams")
        if "CERTIFICATE" not in self.cert_pem or "PRIVATE KEY" not in self.key_pem:
            raise InvalidInput("cert_pem and key_pem must be PEM", field="cert_pem")

    def __repr__(self) -> str:
        return (
            f"Route(hostname={self.hostname!r}, upstreams={self.upstreams!r}, "
            f"cert_pem=<{len(self.cert_pem)} chars>, key_pem='**********')"
        )

    __str__ = __repr__


def _admin_socket(admin: str) -> str | None:
    return admin[len("unix/") :] if admin.startswith("unix/") else None


def _proxy(upstreams: Sequence[str]) -> dict[str, Any]:
    """The reverse proxy to a slot's processes. With several, one that fails is left out for
    FAIL_FOR (Caddy's passive health check) and a request it failed goes to another; a
    request that finds them all left out waits for one, up to FAIL_FOR. A single process is
    never left out: there is nothing to send its requests to instead, and one request that
    failed while it restarted would answer 503 for FAIL_FOR after it was back (a rolled-back
    upgrade's first request did, in CI, after the prober had hit the stopped app)."""
    handler: dict[str, Any] = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": u} for u in sorted(upstreams)],
        "load_balancing": {"selection_policy": {"policy": "round_robin"}},
    }
    if len(upstreams) > 1:
        handler["load_balancing"].update(try_duration=FAIL_FOR, try_interval="250ms")
        handler["health_checks"] = {"passive": {"fail_duration": FAIL_FOR}}
    return handler


def render_config(
    *,
    listen: str,
    admin: str,
    routes: Sequence[Route],
    storage_dir: str,
    log_file: str | None = None,
) -> dict[str, Any]:
    """The whole Caddy config. `storage_dir`: where Caddy keeps its own state (its local
    CA's keys among it), `storage_of` the program's root as in its bootstrap config. (It
    was `data/` beside the admin socket, which the agent keeps under /tmp: the keys were
    written outside the data dir, and outlived it.)"""
    hostnames = [r.hostname for r in routes]
    if len(set(hostnames)) != len(hostnames):
        raise InvalidInput("two routes for one hostname", field="hostname")
    ordered = sorted(routes, key=lambda r: r.hostname)
    http_routes: list[dict[str, Any]] = [
        {
            "match": [{"host": [r.hostname]}],
            "handle": [_proxy(r.upstreams)],
            "terminal": True,
        }
        for r in ordered
    ]
    http_routes.append(
        {"handle": [{"handler": "static_response", "status_code": 404, "body": "unknown host\n"}]}
    )
    config: dict[str, Any] = {
        "admin": {"listen": admin},
        "apps": {
            "http": {
                "servers": {
                    "ingress": {
                        "listen": [listen],
                        "automatic_https": {"disable": True},
                        "tls_connection_policies": [{}],
                        "routes": http_routes,
                    }
                }
            },
            "tls": {
                "certificates": {
                    "load_pem": [
                        {"certificate": r.cert_pem, "key": r.key_pem, "tags": [r.hostname]}
                        for r in ordered
                    ]
                }
            },
            # Never install a local CA into the system trust store.
            "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
        },
    }
    config["storage"] = {"module": "file_system", "root": storage_dir}
    if log_file is not None:
        config["logging"] = {
            "logs": {"default": {"writer": {"output": "file", "filename": log_file}}}
        }
    return config


class CaddyAdmin:
    def __init__(self, admin: str) -> None:
        socket = _admin_socket(admin)
        if socket is not None:
            # Caddy wants an empty Host header on its unix socket.
            self._client = httpx.Client(
                transport=httpx.HTTPTransport(uds=socket),
                base_url="http://localhost",
                headers={"Host": ""},
                timeout=10,
            )
        else:
            self._client = httpx.Client(base_url=f"http://{admin}", timeout=10)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> CaddyAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ask(self, path: str, timeout: float = 10) -> httpx.Response:
        """GET `path`, once more on a new connection when the kept one was closed under
        the request: each config load replaces Caddy's admin server, which closes the
        connections it kept (a GET just after a load failed so on a busy machine)."""
        try:
            return self._client.get(path, timeout=timeout)
        except httpx.RemoteProtocolError:
            return self._client.get(path, timeout=timeout)

    def _get(self) -> httpx.Response:
        try:
            resp = self._ask("/config/")
        except httpx.HTTPError as exc:
            raise Unavailable(f"Caddy admin API not reachable: {exc}") from None
        if resp.status_code != 200:
            raise Unavailable(f"Caddy admin API: {resp.status_code} {resp.text.strip()}")
        return resp

    def answers(self, timeout: float = 1.0) -> bool:
        """Caddy answers a small question within `timeout` seconds."""
        try:
            return self._ask("/config/admin", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def is_up(self) -> bool:
        try:
            self._get()
        except Unavailable:
            return False
        return True

    def current(self) -> dict[str, Any] | None:
        data = self._get().json()
        return cast(dict[str, Any], data) if isinstance(data, dict) else None

    def load(self, config: dict[str, Any]) -> None:
        try:
            resp = self._client.post(
                "/load", content=json.dumps(config), headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"Caddy admin API not reachable: {exc}") from None
        if resp.status_code != 200:
            try:
                message = str(resp.json().get("error", resp.text))
            except ValueError:
                message = resp.text
            raise Unavailable(f"Caddy rejected the config: {message.strip()}")


def caddy_bin() -> str:
    found = shutil.which("caddy") or "/usr/bin/caddy"
    if not os.path.exists(found):
        raise Unavailable("caddy not found: install the Debian package caddy")
    return found


def storage_of(root: Path) -> Path:
    """Where the Caddy run from `root` (`program_spec`) keeps its own state."""
    return root.absolute() / "data"


def program_spec(*, name: str, root: Path, admin: str, log_file: str | None) -> ProgramSpec:
    """Write the bootstrap config (admin endpoint only) under root; run Caddy from it."""
    root = root.absolute()
    for sub in ("", "home", "data", "config"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    bootstrap = {
        "admin": {"listen": admin},
        "storage": {"module": "file_system", "root": str(storage_of(root))},
        "apps": {"pki": {"certificate_authorities": {"local": {"install_trust": False}}}},
    }
    path = root / "caddy-bootstrap.json"
    path.write_text(json.dumps(bootstrap, indent=2, sort_keys=True) + "\n")
    return ProgramSpec(
        name=name,
        # --resume: start from the last loaded config (autosaved under XDG_CONFIG_HOME) if any.
        command=(caddy_bin(), "run", "--config", str(path), "--resume"),
        environment={
            "HOME": str(root / "home"),
            "XDG_DATA_HOME": str(storage_of(root)),
            "XDG_CONFIG_HOME": str(root / "config"),
        },
        directory=str(root),
        log_file=log_file,
        stop_signal="TERM",
        start_seconds=1,
    )
