"""Billing through a running `tenantry up`: the CLI and the API as an operator and an ISV's
application use them, from a plan file to the invoice's PDF."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from pathlib import Path

import httpx
import pytest

from tests.billing.plans import STANDARD_TOML
from tests.conftest import ControlPlaneProcess, api_as, person_token

pytestmark = pytest.mark.slow


def _events(n: int, month: str, tenant: str = "t1", prefix: str = "e") -> list[dict[str, str]]:
    return [{"id": f"{prefix}{i}", "tenant": tenant, "user": f"user-{i % 7}",
             "time": f"{month}-{1 + i % 28:02d}T10:00:00Z"} for i in range(n)]


def test_from_plan_file_to_invoice_pdf(plane: ControlPlaneProcess, isv: str,
                                       tmp_path: Path) -> None:
    plan = f"plan-{secrets.token_hex(3)}"
    (tmp_path / "plan.toml").write_text(STANDARD_TOML.replace('"standard"', f'"{plan}"'))
    made = plane.cli_json("plan", "apply", str(tmp_path / "plan.toml"))
    assert (made["name"], made["version"], made["changed"]) == (plan, 1, True)
    assert plane.cli_json("plan", "apply", str(tmp_path / "plan.toml"))["changed"] is False

    # a platform of the ISV's, created in the last month (the test is on its month's side)
    platform = plane.cli_json("platform", "create", isv, "--tenant", "t1", "--tenant", "t2",
                              "--app", "bodyshop@1.0.0", "--wait")
    ref = f"{isv}/{platform['name']}"
    last = (dt.datetime.now(dt.UTC).replace(day=1) - dt.timedelta(days=1))
    month = last.strftime("%Y-%m")
    sub = plane.cli_json("subscription", "create", isv, "--plan", plan, "--term", "12m",
                         "--min-users", "5", "--start", f"{month}-01", "--tax-rate", "20")
    assert (sub["plan"], sub["term"], sub["min_users"], sub["tax_rate"]) == (plan, "12m", 5,
                                                                             "20")

    # the application, with its usage token
    made = plane.cli_json("usage", "token", ref)
    token = made["token"]
    assert token.startswith("tnu_")
    app = api_as(plane, token)
    batch = {"events": _events(20, month)}
    got = app.post("/usage", json=batch).json()
    assert (got["platform"], got["accepted"], got["duplicates"], got["refused"]) == (
        ref, 20, 0, 0)
    for _ in range(3):
        assert app.post("/usage", json=batch).json()["duplicates"] == 20
    # a usage token does nothing else
    assert app.get("/platforms").status_code == 401
    assert app.post("/usage", json={"platform": f"{isv}/other", **batch}).status_code == 403
    too_many = app.post("/usage", json={"events": _events(10_001, month)})
    assert too_many.status_code == 422 and too_many.json()["error"]["field"] == "events"
    # rotation: a second token, then the first revoked from the CLI
    spare = plane.cli_json("usage", "token", ref)
    assert {t["id"] for t in plane.cli_json("usage", "tokens", ref)} == {made["id"], spare["id"]}
    revoked = plane.cli_json("usage", "revoke", ref, made["id"])
    assert revoked["id"] == made["id"] and revoked["revoked_at"]
    assert app.post("/usage", json=batch).status_code == 401
    app = api_as(plane, spare["token"])
    assert app.post("/usage", json=batch).json()["duplicates"] == 20
    unknown = plane.cli("usage", "revoke", ref, "0" * 12, check=False)
    assert unknown.returncode == 3 and "no usage token" in unknown.stderr

    # a backfill with the operator's own credentials: one bad line refuses the whole file
    lines = [json.dumps(e) for e in _events(25_000, month, tenant="t2", prefix="b")]
    (tmp_path / "bad.jsonl").write_text("\n".join([*lines[:3], "{not json", *lines[3:]]))
    bad = plane.cli("usage", "send", ref, str(tmp_path / "bad.jsonl"), check=False)
    assert bad.returncode == 2 and "bad.jsonl:4" in bad.stderr
    (tmp_path / "usage.jsonl").write_text("\n".join(lines) + "\n")
    sent = plane.cli_json("usage", "send", ref, str(tmp_path / "usage.jsonl"))
    assert (sent["accepted"], sent["duplicates"], sent["refused"]) == (25_000, 0, 0)

    # the month not ended is refused, but projected
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m")
    refused = plane.cli("invoice", "run", "--period", now, check=False)
    assert refused.returncode == 2 and "has not ended" in refused.stderr
    projected = plane.cli_json("invoice", "projection", isv)
    assert projected["projection"] is True and projected["period"] == now

    invoices = plane.cli_json("invoice", "run", "--period", month)
    [inv] = [i for i in invoices if i["isv"] == isv]
    assert inv["active_users"] == 14  # 7 user strings under each of two tenants
    assert inv["lines"][:3] == [
        {"description": "Active users 1-3 (graduated)", "quantity": "3", "unit_price": "30.00",
         "amount": "90.00"},
        {"description": "Active users 4-14 (graduated)", "quantity": "11",
         "unit_price": "25.00", "amount": "275.00"},
        {"description": "Commitment discount, 12m term (15 %)", "quantity": "1",
         "unit_price": None, "amount": "-54.75"}]
    assert plane.cli_json("invoice", "run", "--period", month) == invoices, "issued once"
    assert plane.cli_json("invoice", "show", inv["id"]) == inv
    plane.cli("invoice", "pdf", inv["id"], "-o", str(tmp_path / "a.pdf"))
    plane.cli("invoice", "pdf", inv["id"], "-o", str(tmp_path / "b.pdf"))
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    assert (tmp_path / "a.pdf").read_bytes().startswith(b"%PDF")
    csv = plane.cli("invoice", "csv", isv, "--period", month).stdout.splitlines()
    assert csv == ["period,platform,tenant,active_users", f"{month},{ref},t1,7",
                   f"{month},{ref},t2,7"]
    quote = plane.cli_json("quote", "--plan", plan, "--users", "40", "--term", "36m")
    assert quote["monthly"] == "773.75"  # (90 + 675 + 200) x 0.75 + one platform's 50.00

    # another ISV's admin sees none of it
    other_isv = "acme-" + secrets.token_hex(3)
    plane.cli("isv", "create", other_isv)
    _, other = person_token(plane, "isv-admin", isv=other_isv)
    them = api_as(plane, other)
    assert them.get(f"/invoices/{inv['id']}").status_code == 404
    assert them.get("/invoices").json() == []
    assert them.get(f"/isvs/{isv}/projection").status_code == 404
    assert them.post("/usage", json={"platform": ref, **batch}).status_code == 404


def test_bad_billing_input_is_refused_by_field(plane: ControlPlaneProcess, isv: str,
                                               tmp_path: Path) -> None:
    api: httpx.Client = plane.api()
    before = api.get("/plans").json()
    for body, field in (
            ({"name": "x", "currency": "GBP", "platform_fee": "-1",
              "users": {"model": "volume", "tiers": [{"price": "1"}]}, "terms": {"1m": "0"}},
             "platform_fee"),
            ({"name": "x", "currency": "GBP", "platform_fee": "1",
              "users": {"model": "volume", "tiers": [{"up_to": 3, "price": "1"}]},
              "terms": {"1m": "0"}}, "users.tiers")):
        r = api.post("/plans", json=body)
        assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
    assert api.get("/plans").json() == before
    (tmp_path / "p.toml").write_text("name = ")
    assert plane.cli("plan", "apply", str(tmp_path / "p.toml"), check=False).returncode == 2
    r = api.post(f"/isvs/{isv}/subscriptions", json={"plan": "none", "term": "12m",
                                                      "tax_rate": "99999999"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "tax_rate"
    r = api.post(f"/isvs/{isv}/subscriptions", json={"plan": "none", "term": "12m",
                                                      "min_users": -1})
    assert r.status_code == 422 and r.json()["error"]["field"] == "min_users"
    assert api.get("/subscriptions", params={"isv": isv}).json() == []
    assert api.get("/quote", params={"plan": "none", "users": 3, "term": "1m"}).status_code == 404
