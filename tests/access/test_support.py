"""Support grants through a running control plane: who may grant, what is refused, scope,
and that a grant ends by itself (its use on a real host is in test_host_access)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import ControlPlaneProcess, api_as, make_isv, person_token

pytestmark = pytest.mark.slow


@dataclass
class Setup:
    hands_on: dict[str, Any]
    hands_off: dict[str, Any]
    other: dict[str, Any]  # ISV B's hands-on platform
    admin: httpx.Client  # ISV A's admin
    operator: httpx.Client  # ISV A's operator
    other_admin: httpx.Client  # ISV B's admin


@pytest.fixture(scope="module")
def setup(plane: ControlPlaneProcess, bundles: dict[str, Path]) -> Iterator[Setup]:
    a, b = make_isv(plane, bundles), make_isv(plane, bundles)

    def platform(isv: str, tenant: str, level: str) -> dict[str, Any]:
        made: dict[str, Any] = plane.cli_json(
            "platform", "create", isv, "--tenant", tenant, "--app", "bodyshop@1.0.0",
            "--service-level", level)["platform"]
        return made

    hands_on, hands_off = platform(a, "t1", "hands-on"), platform(a, "t2", "hands-off")
    other = platform(b, "t1", "hands-on")
    clients = [api_as(plane, person_token(plane, role, isv)[1]) for role, isv in
               (("isv-admin", a), ("isv-operator", a), ("isv-admin", b))]
    try:
        yield Setup(hands_on, hands_off, other, *clients)
    finally:
        for client in clients:
            client.close()
        for made in (hands_on, hands_off, other):
            plane.cli("platform", "destroy", made["id"], "--wait", check=False)


def grant(client: httpx.Client, ref: str, **body: Any) -> httpx.Response:
    return client.post("/support-grants", json={
        "platform": ref, "hours": 2, "reason": "TICKET-9 exports fail", **body})


@pytest.mark.parametrize(("body", "field"), [
    ({"hours": 0}, "hours"), ({"hours": 73}, "hours"), ({"hours": "two"}, "hours"),
    ({"reason": "x"}, "reason"), ({"reason": "x" * 501}, "reason"),
    ({"platform": "../etc"}, "platform"), ({"extra": 1}, "extra")])
def test_bad_input_is_refused_by_field(setup: Setup, body: dict[str, Any], field: str) -> None:
    before = setup.admin.get("/support-grants", params={"all": "true"}).json()
    answer = grant(setup.admin, setup.hands_on["id"], **body)
    assert answer.status_code == 422, answer.text
    assert field in answer.text
    assert setup.admin.get("/support-grants", params={"all": "true"}).json() == before


def test_who_may_grant_what(plane: ControlPlaneProcess, setup: Setup) -> None:
    hands_off = grant(setup.admin, setup.hands_off["id"])
    assert hands_off.status_code == 422 and "hands-off" in hands_off.text
    assert grant(setup.operator, setup.hands_on["id"]).status_code == 403
    with plane.api() as provider:  # the provider may not let itself in
        assert grant(provider, setup.hands_on["id"]).status_code == 403
    # another ISV's platform does not exist for A's admin, by id or by name
    assert grant(setup.admin, setup.other["id"]).status_code == 404
    other_name = f"{setup.other['isv']}/{setup.other['name']}"
    assert grant(setup.admin, other_name).status_code == 404


def test_grant_list_scope_revoke_and_expiry(plane: ControlPlaneProcess, setup: Setup) -> None:
    made = grant(setup.admin, f"{setup.hands_on['isv']}/{setup.hands_on['name']}")
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["active"] is True and body["platform_id"] == setup.hands_on["id"]
    assert setup.operator.get("/support-grants").json()[0]["id"] == body["id"]
    with plane.api() as provider:
        assert body["id"] in [g["id"] for g in provider.get("/support-grants").json()]
    # ISV B sees none of it and cannot end it
    assert body["id"] not in [g["id"] for g in
                              setup.other_admin.get("/support-grants?all=true").json()]
    assert setup.other_admin.post(f"/support-grants/{body['id']}/revoke").status_code == 404
    assert setup.operator.post(f"/support-grants/{body['id']}/revoke").status_code == 403

    # it ends by itself: move its end into the past, as the clock would
    with psycopg.connect(host=str(plane.data_dir / "controlplane" / "run"), user="tenantry",
                         dbname="tenantry", autocommit=True) as conn:
        conn.execute("UPDATE support_grants SET expires_at = now() - interval '1 second' "
                     "WHERE id = %s", (body["id"],))
    assert body["id"] not in [g["id"] for g in setup.admin.get("/support-grants").json()]
    ended = {g["id"]: g for g in setup.admin.get("/support-grants?all=true").json()}
    assert ended[body["id"]]["active"] is False and ended[body["id"]]["revoked_at"] is None

    second = grant(setup.admin, setup.hands_on["id"]).json()
    revoked = setup.admin.post(f"/support-grants/{second['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    assert revoked.json()["revoked_by"] == revoked.json()["granted_by"]
    audit = plane.cli_json("audit", "list", "--action", "support.", "--limit", "50")
    assert {("support.grant", body["id"]), ("support.revoke", second["id"])} <= {
        (r["action"], r["detail"]["grant"]) for r in audit}


def test_cli_grant_list_revoke(plane: ControlPlaneProcess, setup: Setup) -> None:
    done = plane.cli("support", "grant", setup.hands_on["id"], "--hours", "1", "--reason",
                     "as the provider", check=False)
    assert done.returncode == 4, done.stderr  # the provider may not grant itself
    assert "admin" in done.stderr
    bad = plane.cli("support", "grant", setup.hands_on["id"], "--hours", "999", "--reason",
                    "too long", check=False)
    assert bad.returncode != 0 and "hours" in bad.stderr
    assert isinstance(plane.cli_json("support", "list", "--all"), list)
