"""`tenantry host list` says under its table which host refuses its desired state."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from tenantry.platforms import cli

HOSTS = [
    {"id": "h1", "name": "node1", "region": "eu", "state": "online", "ingress_port": 8443,
     "platforms": 2, "firewall": "ok", "disk": "ok", "last_seen_at": "2026-12-02T10:00:00Z",
     "desired_error": None},
    {"id": "h2", "name": "node2", "region": "eu", "state": "online", "ingress_port": 8443,
     "platforms": 1, "firewall": "ok", "disk": "ok", "last_seen_at": "2026-12-02T10:00:00Z",
     "desired_error": "platforms[0].database.port: must be within 1024..65535"},
]


class _Plane:
    def get(self, path: str) -> Any:
        assert path == "/hosts"
        return HOSTS


@pytest.fixture(autouse=True)
def plane(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "connect", lambda data_dir: _Plane())


def test_the_refusal_is_named_under_the_table() -> None:
    out = CliRunner().invoke(cli.host_app, ["list"])
    assert out.exit_code == 0, out.output
    said = [line for line in out.output.splitlines() if "refuses" in line]
    assert said == ["host node2 refuses its desired state: platforms[0].database.port: must "
                    "be within 1024..65535"]


def test_json_carries_the_field_and_nothing_else() -> None:
    out = CliRunner().invoke(cli.host_app, ["list", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == HOSTS
