"""Every API route, as every role of ISV A, against ISV B's objects and against A's own.

The route list comes from the live OpenAPI document, so a new route is covered the day it
is added: against another ISV's objects it must answer 401/403/404/405/409/422 and never
show them; a list must not contain them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from tests.conftest import ControlPlaneProcess, PortalAccount, make_isv, portal_login

pytestmark = pytest.mark.slow
ROLES = ("isv-admin", "isv-operator", "isv-viewer")
DENIED = {401, 403, 404, 405, 409, 422}


@dataclass
class World:
    a: str
    b: str
    b_platform: dict[str, Any]
    a_platform: dict[str, Any]
    b_job: int
    b_user: str
    b_token_id: str
    tokens: dict[str, str]  # role of ISV A → bearer token


def bearer_for(plane: ControlPlaneProcess, username: str, password: str) -> str:
    account = PortalAccount(username, password)
    with httpx.Client(base_url=plane.url, timeout=30) as client:
        assert portal_login(client, account).status_code == 303
    with httpx.Client(base_url=f"{plane.url}/api/v1", timeout=30) as client:
        answer = client.post("/auth/login", json={"username": username,
                                                  "password": account.password})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["token"])


@pytest.fixture(scope="module")
def world(plane: ControlPlaneProcess, bundles: dict[str, Any]) -> World:
    a, b = make_isv(plane, bundles), make_isv(plane, bundles)
    b_created = plane.cli_json("platform", "create", b, "--tenant", "t1",
                               "--app", "bodyshop@1.0.0")
    a_created = plane.cli_json("platform", "create", a, "--tenant", "t1",
                               "--app", "bodyshop@1.0.0")
    tokens = {}
    for role in ROLES:
        user = f"{a.replace('-', '')}-{role.split('-')[1]}"
        made = plane.cli_json("user", "create", user, "--role", role, "--isv", a)
        tokens[role] = bearer_for(plane, user, made["password"])
    b_admin = plane.cli_json("user", "create", f"{b.replace('-', '')}-admin",
                             "--role", "isv-admin", "--isv", b)
    b_bearer = bearer_for(plane, b_admin["user"]["username"], b_admin["password"])
    with httpx.Client(base_url=f"{plane.url}/api/v1", timeout=30,
                      headers={"Authorization": f"Bearer {b_bearer}"}) as client:
        b_token = client.post("/tokens", json={"name": "b's token"}).json()["token"]["id"]
    return World(a=a, b=b, b_platform=b_created["platform"], a_platform=a_created["platform"],
                 b_job=b_created["job_id"], b_user=b_admin["user"]["username"],
                 b_token_id=b_token, tokens=tokens)


def routes(plane: ControlPlaneProcess) -> list[tuple[str, str]]:
    spec = httpx.get(f"{plane.url}/api/v1/openapi.json").json()
    found = []
    for path, methods in spec["paths"].items():
        for method in methods:
            found.append((method.upper(), path))
    return sorted(found)


def fill(path: str, w: World, owner: str) -> str:
    """Put the owner's objects into the path's parameters."""
    platform = w.b_platform if owner == "b" else w.a_platform
    isv = w.b if owner == "b" else w.a
    values = {"isv": isv, "name": platform["name"], "ref": platform["id"],
              "job_id": str(w.b_job), "username": w.b_user, "token_id": w.b_token_id,
              "digest": "sha256:" + "0" * 64}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x1"), path)


BODIES = {"/isvs/{isv}/platforms": {"tenants": ["t1"], "app": "bodyshop@1.0.0", "name": "evil"},
          "/platforms/{isv}/{name}/upgrade": {"app": "bodyshop@1.1.0"},
          "/platforms/{ref}/upgrade": {"app": "bodyshop@1.1.0"},
          "/isvs/{isv}/tenants": {"name": "evil"},
          "/users/{username}/role": {"role": "isv-viewer"}}


def test_nothing_of_another_isv_is_reachable(plane: ControlPlaneProcess, world: World) -> None:
    secrets_of_b = {world.b, world.b_platform["id"], world.b_user, world.b_token_id}
    checked = 0
    for role, token in world.tokens.items():
        with httpx.Client(base_url=f"{plane.url}/api/v1", timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            for method, path in routes(plane):
                if path.startswith("/agent/") or path in ("/auth/login", "/health",
                                                          "/openapi.json"):
                    continue
                url = fill(path, world, "b")
                body = BODIES.get(path, {})
                answer = client.request(method, url, json=body if method != "GET" else None)
                text = answer.text
                if "{" in path:
                    assert answer.status_code in DENIED, (role, method, path, answer.status_code,
                                                         text[:300])
                elif answer.status_code < 300:
                    leaked = [s for s in secrets_of_b if s in text]
                    assert not leaked, (role, method, path, leaked)
                checked += 1
    assert checked > 30
    # B's platform is untouched by all that.
    b = plane.cli_json("platform", "show", world.b_platform["id"])
    assert b["state"] in ("creating", "ready") and b["name"] == world.b_platform["name"]


@pytest.mark.parametrize(("role", "view", "operate", "admin"), [
    ("isv-viewer", 200, 403, 403),
    ("isv-operator", 200, 202, 403),
    ("isv-admin", 200, 202, 201),
])
def test_own_objects_by_role(plane: ControlPlaneProcess, world: World, role: str, view: int,
                             operate: int, admin: int) -> None:
    with httpx.Client(base_url=f"{plane.url}/api/v1", timeout=30,
                      headers={"Authorization": f"Bearer {world.tokens[role]}"}) as client:
        assert client.get(f"/platforms/{world.a_platform['id']}").status_code == view
        assert {p["isv"] for p in client.get("/platforms").json()} == {world.a}
        created = client.post(f"/isvs/{world.a}/platforms",
                              json={"tenants": ["t2"], "app": "bodyshop@1.0.0",
                                    "name": f"by-{role.split('-')[1]}"})
        assert created.status_code == operate, created.text
        made = client.post(f"/isvs/{world.a}/tenants", json={"name": f"n-{role.split('-')[1]}"})
        assert made.status_code == admin, made.text
        # Nobody on an ISV side makes provider users or other ISVs.
        assert client.post("/isvs", json={"name": "mine-now"}).status_code == 403
        assert client.post("/users", json={"username": "sneaky", "role": "provider-admin"}
                           ).status_code == 403
