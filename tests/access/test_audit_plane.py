"""The audit log through a running control plane: CLI, API, portal, scoping, verify."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import ControlPlaneProcess, csrf_of

pytestmark = pytest.mark.slow


def store(plane: ControlPlaneProcess) -> psycopg.Connection[Any]:
    return psycopg.connect(host=str(plane.data_dir / "controlplane" / "run"), user="tenantry",
                           dbname="tenantry", autocommit=True)


def test_cli_action_is_recorded_with_its_actor(plane: ControlPlaneProcess) -> None:
    name = f"aud-{secrets.token_hex(3)}"
    plane.cli("isv", "create", name)
    rows = plane.cli_json("audit", "list", "--target", f"/isvs/{name}")
    created = [r for r in rows if r["action"] == "POST /api/v1/isvs"]
    assert created and created[0]["actor"] == "admin"
    assert created[0]["outcome"] == "201" and created[0]["source"] == "api"


def test_failed_portal_login_is_recorded(plane: ControlPlaneProcess) -> None:
    who = f"nobody-{secrets.token_hex(3)}"
    with httpx.Client(base_url=plane.url, timeout=30) as client:
        token = csrf_of(client.get("/login").text)
        answer = client.post("/login", data={"username": who, "password": "wrong-secret",
                                             "csrf": token, "next": "/"})
    assert answer.status_code != 303
    rows = plane.cli_json("audit", "list", "--actor", who)
    assert [r["action"] for r in rows] == ["login.failed"]
    assert "wrong-secret" not in str(rows)


def test_isv_user_sees_only_its_organisation(plane: ControlPlaneProcess) -> None:
    from tenantry.core.crypto import token_hash

    mine, other = (f"aud-{secrets.token_hex(3)}" for _ in range(2))
    isv_id = plane.cli_json("isv", "create", mine)["id"]
    plane.cli("isv", "create", other)
    plane.cli("tenant", "create", mine, "t1")
    plane.cli("tenant", "create", other, "t1")
    token = f"tnt_{secrets.token_urlsafe(24)}"
    uid, tid = f"u_{secrets.token_hex(6)}", f"t_{secrets.token_hex(6)}"
    with store(plane) as conn:
        conn.execute("INSERT INTO users (id, username, password_hash, role, isv_id, disabled, "
                     "must_change_password, totp_enabled, recovery_codes, failed_logins, "
                     "created_at) VALUES (%s, %s, 'x', 'isv-admin', %s, false, false, false, "
                     "'[]', 0, now())", (uid, f"{mine}-admin", isv_id))
        conn.execute("INSERT INTO api_tokens (id, user_id, token_hash, name, created_at) "
                     "VALUES (%s, %s, %s, 'test', now())", (tid, uid, token_hash(token)))
    with httpx.Client(base_url=f"{plane.url}/api/v1", timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as api:
        rows = api.get("/audit", params={"limit": 1000}).json()
        assert rows and {r["org"] for r in rows} == {isv_id}
        assert any(r["target"] == f"/isvs/{mine}/tenants/t1" for r in rows)
        assert not any(other in r["target"] for r in rows)
        assert api.get("/audit/verify").status_code == 403
        page = httpx.get(f"{plane.url}/audit", cookies={"tenantry_session": token})
        assert page.status_code == 200 and mine in page.text and other not in page.text


def test_verify_catches_a_modified_entry(plane: ControlPlaneProcess) -> None:
    plane.cli("isv", "create", f"aud-{secrets.token_hex(3)}")
    assert plane.cli("audit", "verify").returncode == 0
    report = plane.cli_json("audit", "verify")
    assert report["ok"] and report["checked"] > 0
    with store(plane) as conn:
        victim, actor = conn.execute(
            "SELECT id, actor FROM audit_entries ORDER BY id LIMIT 1 OFFSET 1").fetchone()
        conn.execute("UPDATE audit_entries SET actor = 'mallory' WHERE id = %s", (victim,))
        try:
            done = plane.cli("audit", "verify", check=False)
            assert done.returncode == 1
            assert f"entry {victim}" in done.stderr and "modified" in done.stderr
        finally:  # the plane is shared: put it back
            conn.execute("UPDATE audit_entries SET actor = %s WHERE id = %s", (actor, victim))
    assert plane.cli("audit", "verify").returncode == 0


def test_ship_puts_a_signed_head_offsite(plane: ControlPlaneProcess) -> None:
    head = plane.cli_json("audit", "ship")
    assert head["last_id"] > 0 and len(head["sig"]) == 64
    assert (plane.data_dir / "offsite" / "audit" / "head.json").exists()
