"""Injection strings, over-long values and unicode tricks: refused in every name field, and
stored inertly and escaped in the portal where free text is allowed."""

from __future__ import annotations

import html
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ControlPlaneProcess, make_isv, portal_login

pytestmark = pytest.mark.slow

HOSTILE = [
    "'; DROP TABLE users; --",
    "<script>alert(1)</script>",
    "acme\u202egnp.exe",  # right-to-left override
    "ac\u200bme",  # zero-width space
    "ａｃｍｅ",  # fullwidth letters
    "acme\u0301",  # combining accent
    "ACME",
    "../../etc/passwd",
    "acme%00",
    "acme\nX-Injected: 1",
    "a" * 1000,
    "",
]


@pytest.fixture(scope="module")
def isv(plane: ControlPlaneProcess, bundles: dict[str, Path]) -> str:
    return make_isv(plane, bundles)


def state(api: httpx.Client, isv: str) -> tuple[Any, ...]:
    return (api.get("/isvs").json(), api.get(f"/isvs/{isv}/tenants").json(),
            api.get("/platforms", params={"isv": isv}).json(), api.get("/users").json())


@pytest.mark.parametrize("bad", HOSTILE)
def test_name_fields_refuse_hostile_text(plane: ControlPlaneProcess, isv: str,
                                         bad: str) -> None:
    with plane.api() as api:
        before = state(api, isv)
        attempts = [
            ("/isvs", {"name": bad}, "name"),
            (f"/isvs/{isv}/tenants", {"name": bad}, "name"),
            (f"/isvs/{isv}/platforms", {"tenants": ["t1"], "app": "bodyshop@1.0.0",
                                        "name": bad}, "name"),
            (f"/isvs/{isv}/platforms", {"tenants": [bad], "app": "bodyshop@1.0.0"},
             "tenants"),
            ("/users", {"username": bad, "role": "isv-viewer", "isv": isv}, "username"),
        ]
        for path, body, field in attempts:
            answer = api.post(path, json=body)
            assert answer.status_code in (404, 422), (path, bad, answer.status_code)
            assert answer.status_code < 500
            error = answer.json()["error"]
            assert error["field"] == field or field in error["message"], (path, error)
        assert state(api, isv) == before


def test_free_text_is_stored_as_given_and_escaped_in_the_portal(
        plane: ControlPlaneProcess, isv: str) -> None:
    tricky = f"<script>alert('x')</script> \u202eevil {secrets.token_hex(3)}"
    with plane.api() as api:
        made = api.post("/tokens", json={"name": tricky, "expires_days": 1})
        assert made.status_code == 201, made.text
        assert made.json()["token"]["name"] == tricky  # inert: kept exactly
        listed = [t["name"] for t in api.get("/tokens").json()]
        assert tricky in listed
        # a refused request with the same text leaves it in the audit log, as data
        assert api.post(f"/isvs/{isv}/tenants", json={"name": tricky}).status_code == 422
        api.post(f"/tokens/{made.json()['token']['id']}/revoke")
    with httpx.Client(base_url=plane.url, timeout=30) as client:
        assert portal_login(client, plane.admin()).status_code == 303
        page = client.get("/audit", params={"target": "/tenants"})
        assert page.status_code == 200
        assert "<script>alert(" not in page.text
        entries = client.get("/audit").text
        assert "<script>alert(" not in entries
        assert html.escape("<script>", quote=False) in entries or "&lt;script&gt;" in entries
