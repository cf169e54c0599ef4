"""Every API route, as every role of ISV A, against ISV B's objects and against A's own.

The route list comes from the live OpenAPI document, with each route's declared permission
(`x-permission`), so a new route is covered the day it is added: against another ISV's
objects it must answer 401/403/404/405/409/422 and never show them; a list must not contain
them. Against A's own objects the declaration predicts the answer: a role without the
permission gets 403, a role with it never 401/403 (the own requests that would change
something aim at objects that do not exist, so they end in 404/409/422 instead).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tenantry.access.principal import Principal
from tenantry.core.errors import NotAllowed
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
    a_job: int
    b_user: str
    b_token_id: str
    b_grant_id: str  # B's support grant on its hands-on platform
    tokens: dict[str, str]  # role of ISV A → bearer token
    a_users: set[str]


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
                               "--app", "bodyshop@1.0.0", "--service-level", "hands-on")
    a_created = plane.cli_json("platform", "create", a, "--tenant", "t1",
                               "--app", "bodyshop@1.0.0")
    tokens, a_users = {}, set()
    for role in ROLES:
        user = f"{a.replace('-', '')}-{role.split('-')[1]}"
        made = plane.cli_json("user", "create", user, "--role", role, "--isv", a)
        tokens[role] = bearer_for(plane, user, made["password"])
        a_users.add(user)
    b_admin = plane.cli_json("user", "create", f"{b.replace('-', '')}-admin",
                             "--role", "isv-admin", "--isv", b)
    b_bearer = bearer_for(plane, b_admin["user"]["username"], b_admin["password"])
    with httpx.Client(base_url=f"{plane.url}/api/v1", timeout=30,
                      headers={"Authorization": f"Bearer {b_bearer}"}) as client:
        b_token = client.post("/tokens", json={"name": "b's token"}).json()["token"]["id"]
        b_grant = client.post("/support-grants", json={
            "platform": b_created["platform"]["id"], "hours": 1, "reason": "B's ticket"})
        assert b_grant.status_code == 201, b_grant.text
    return World(a=a, b=b, b_platform=b_created["platform"], a_platform=a_created["platform"],
                 b_job=b_created["job_id"], a_job=a_created["job_id"],
                 b_user=b_admin["user"]["username"],
                 b_token_id=b_token, b_grant_id=b_grant.json()["id"], tokens=tokens,
                 a_users=a_users)


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # under /api/v1
    permission: str | None  # as declared; None: the route declares nothing


def routes(plane: ControlPlaneProcess) -> list[Route]:
    spec = httpx.get(f"{plane.url}/api/v1/openapi.json").json()
    assert all(path.startswith("/api/v1/") for path in spec["paths"])  # clients add it
    found = []
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            found.append(Route(method.upper(), path.removeprefix("/api/v1"),
                               operation.get("x-permission")))
    return sorted(found, key=lambda r: (r.path, r.method))


def may(role: str, permission: str) -> bool:
    """Whether `role` holds a declared permission such as "operate" or "provider+admin"."""
    try:
        for action in permission.split("+"):
            Principal(user_id="u", username="u", role=role).require(action)
    except NotAllowed:
        return False
    return True


def fill(path: str, w: World, owner: str) -> str:
    """Put the owner's objects into the path's parameters."""
    platform = w.b_platform if owner == "b" else w.a_platform
    isv = w.b if owner == "b" else w.a
    values = {"isv": isv, "name": platform["name"], "ref": platform["id"],
              "job_id": str(w.b_job if owner == "b" else w.a_job), "username": w.b_user,
              "token_id": w.b_token_id, "grant_id": w.b_grant_id,
              "digest": "sha256:" + "0" * 64}
    if owner == "a-missing":  # A's namespace, objects that do not exist
        values |= {"name": "no-such-platform", "ref": "no-such-platform",
                   "username": "no-such-user", "token_id": "nosuchtoken",
                   "grant_id": "nosuchgrant"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x1"), path)


BODIES = {"/isvs/{isv}/platforms": {"tenants": ["t1"], "app": "bodyshop@1.0.0", "name": "evil"},
          "/platforms/{isv}/{name}/upgrade": {"app": "bodyshop@1.1.0"},
          "/platforms/{ref}/upgrade": {"app": "bodyshop@1.1.0"},
          "/isvs/{isv}/tenants": {"name": "evil"},
          "/users/{username}/role": {"role": "isv-viewer"}}
# What A's roles send to A's own routes that change something: nothing that would succeed.
OWN_BODIES = {**BODIES,
              "/isvs/{isv}/platforms": {"tenants": ["t1"], "app": "bodyshop@9.9.9",
                                        "name": "never"},
              "/isvs/{isv}/tenants": {"name": "t1"}}  # exists already: 409


def test_nothing_of_another_isv_is_reachable(plane: ControlPlaneProcess, world: World) -> None:
    secrets_of_b = {world.b, world.b_platform["id"], world.b_user, world.b_token_id,
                    world.b_grant_id}
    checked = 0
    for role, token in world.tokens.items():
        with httpx.Client(base_url=f"{plane.url}/api/v1", timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            for route in routes(plane):  # public and agent routes too: nothing of B there
                method, path = route.method, route.path
                url = fill(path, world, "b")
                body = BODIES.get(path, {})
                names_b = "{" in path
                if path == "/support-grants" and method == "POST":  # let A in to B's platform
                    body = {"platform": world.b_platform["id"], "hours": 1, "reason": "A's"}
                    names_b = True
                answer = client.request(method, url, json=body if method != "GET" else None)
                text = answer.text
                if names_b:
                    assert answer.status_code in DENIED, (role, method, path, answer.status_code,
                                                         text[:300])
                elif answer.status_code < 300:
                    if path == "/audit":  # A's own refused requests name B as A typed it
                        text = json.dumps([e for e in answer.json()
                                           if e["actor"] not in world.a_users])
                    leaked = [s for s in secrets_of_b if s in text]
                    assert not leaked, (role, method, path, leaked)
                checked += 1
    assert checked > 3 * 45
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


def test_declared_permissions_predict_answers_on_own_objects(plane: ControlPlaneProcess,
                                                             world: World) -> None:
    checked = 0
    for role, token in world.tokens.items():
        with httpx.Client(base_url=f"{plane.url}/api/v1", timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            for route in routes(plane):
                if route.permission in (None, "public"):
                    continue  # undeclared: tests/api/test_permissions_declared.py says so
                owner = "a" if route.method == "GET" else "a-missing"
                body = OWN_BODIES.get(route.path, {}) if route.method != "GET" else None
                answer = client.request(route.method, fill(route.path, world, owner),
                                        json=body)
                seen = (role, route.method, route.path, route.permission,
                        answer.status_code, answer.text[:300])
                assert answer.status_code < 500, seen
                if route.permission in ("agent", "monitoring-stack"):
                    assert answer.status_code == 401, seen  # a person: no agent, no program
                elif route.permission == "authenticated" or may(role, route.permission):
                    assert answer.status_code not in (401, 403), seen
                else:
                    assert answer.status_code == 403, seen
                checked += 1
    assert checked > 3 * 45
