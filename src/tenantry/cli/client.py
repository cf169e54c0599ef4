"""The CLI's HTTP client: local control plane from the data dir, or TENANTRY_URL/TOKEN."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from tenantry.core.config import default_data_dir
from tenantry.core.errors import NotAllowed, Unavailable, error_for_status


def locate(data_dir: Path | None = None, *, local: bool = False) -> tuple[str, str]:
    """TENANTRY_URL and TENANTRY_TOKEN, else the control plane of the data dir (always that
    one with `local`: `up` talks to the plane it runs, whatever the shell points at)."""
    url, token = os.environ.get("TENANTRY_URL"), os.environ.get("TENANTRY_TOKEN")
    if url and token and not local:
        return url.rstrip("/"), token
    root = data_dir or default_data_dir()
    url_file, token_file = root / "api-url", root / "admin-token"
    if not url_file.exists() or not token_file.exists():
        raise Unavailable(f"no local control plane in {root}: start one with `tenantry up`, "
                          "or set TENANTRY_URL and TENANTRY_TOKEN")
    try:
        return url_file.read_text().strip(), token_file.read_text().strip()
    except PermissionError:
        raise NotAllowed(f"cannot read {token_file}: run as the user who ran `tenantry up`"
                         ) from None


class Client:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self._http = httpx.Client(base_url=f"{url}/api/v1", timeout=60,
                                  headers={"Authorization": f"Bearer {token}"})

    @classmethod
    def from_env(cls, data_dir: Path | None = None) -> Client:
        return cls(*locate(data_dir))

    @classmethod
    def local(cls, data_dir: Path) -> Client:
        """The control plane whose data dir this is, never a remote one."""
        return cls(*locate(data_dir, local=True))

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._send(method, path, **kwargs)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    def download(self, path: str, **params: Any) -> bytes:
        """A GET whose answer is not JSON (a PDF, a CSV), as bytes."""
        return self._send("GET", path, params={k: v for k, v in params.items()
                                                if v is not None}).content

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach tenantry at {self.url}: {exc}") from None
        if resp.status_code >= 400:
            try:
                error = resp.json()["error"]
                message, field = error["message"], error.get("field")
            except (ValueError, KeyError, TypeError):
                message, field = f"HTTP {resp.status_code}: {resp.text[:200]}", None
            raise error_for_status(resp.status_code)(message, field=field)
        return resp

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items()
                                                 if v is not None})

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs)

    def put(self, path: str, body: Any = None) -> Any:
        return self.request("PUT", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
