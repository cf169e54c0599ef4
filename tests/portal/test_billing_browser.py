"""Billing in a real browser (Debian's Chromium): the provider issues last month's invoices
from the page, opens one and downloads its PDF, prices a commitment; an ISV's admin sees
their subscription, this month's projection and their invoice, and nobody else's."""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.billing.plans import STANDARD_TOML
from tests.conftest import ControlPlaneProcess, PortalAccount, portal_login
from tests.portal.test_browser import SHOTS, browser, page  # noqa: F401 - the same fixtures

pytestmark = pytest.mark.slow


def login(tab: Page, url: str, username: str, password: str, code: str) -> None:
    tab.goto(url + "/billing")
    tab.get_by_label("Username").fill(username)
    tab.get_by_label("Password").fill(password)
    tab.get_by_label("Authenticator code").fill(code)
    tab.get_by_role("button", name="Log in").click()
    tab.goto(url + "/billing")
    expect(tab.get_by_role("heading", name="Billing", exact=True)).to_be_visible()


def test_billing_pages(plane: ControlPlaneProcess, isv: str, page: Page,  # noqa: F811
                       tmp_path: Path) -> None:
    plan = f"plan-{secrets.token_hex(3)}"
    (tmp_path / "plan.toml").write_text(STANDARD_TOML.replace('"standard"', f'"{plan}"'))
    plane.cli("plan", "apply", str(tmp_path / "plan.toml"))
    made = plane.cli_json("platform", "create", isv, "--tenant", "t1", "--app",
                          "bodyshop@1.0.0", "--wait")
    ref = f"{isv}/{made['name']}"
    today = dt.datetime.now(dt.UTC).date()
    last = (today.replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
    plane.cli("subscription", "create", isv, "--plan", plan, "--term", "12m", "--min-users",
              "3", "--start", f"{last}-01", "--tax-rate", "20")
    events = [{"id": f"e{i}", "tenant": "t1", "user": f"u{i % 5}",
               "time": f"{last}-{1 + i % 28:02d}T08:00:00Z"} for i in range(50)]
    events += [{"id": f"n{i}", "tenant": "t1", "user": f"u{i}",
                "time": f"{today:%Y-%m}-01T00:00:01Z"} for i in range(2)]
    (tmp_path / "usage.jsonl").write_text("\n".join(json.dumps(e) for e in events))
    plane.cli("usage", "send", ref, str(tmp_path / "usage.jsonl"))

    account = plane.admin()
    login(page, plane.url, "admin", account.password, account.code())
    mine = page.locator("#projections tbody tr").filter(has_text=isv)
    expect(mine.locator(".users")).to_have_text("2")  # this month so far
    expect(page.locator("#subscriptions")).to_contain_text(plan)

    page.locator("#run input[name=period]").fill(today.strftime("%Y-%m"))
    page.get_by_role("button", name="Issue invoices").click()
    expect(page.locator("#run .field-error")).to_contain_text("has not ended")
    page.locator("#run input[name=period]").fill(last)
    page.get_by_role("button", name="Issue invoices").click()
    expect(page.locator("#ran")).to_contain_text(f"for {last}")
    row = page.locator("#invoices tbody tr").filter(has_text=isv)
    expect(row).to_have_count(1)
    # 5 users: 3 x 30 + 2 x 25 = 140, less 15 %: 119.00; tax 20 %: 142.80
    expect(row).to_contain_text("142.80 GBP")
    row.locator("a").first.click()
    expect(page.locator("table.lines")).to_contain_text("Active users 1-3 (graduated)")
    expect(page.locator("#totals")).to_contain_text("142.80")
    with page.expect_download() as download:
        page.locator("#pdf").click()
    saved = tmp_path / "invoice.pdf"
    download.value.save_as(saved)
    assert saved.read_bytes().startswith(b"%PDF-1.4")
    page.screenshot(path=str(SHOTS / "tenantry-billing-invoice.png"), full_page=True)

    page.goto(plane.url + "/billing/quote")
    page.locator("select[name=plan]").select_option(plan)
    page.locator("input[name=users]").fill("40")
    page.locator("input[name=term]").fill("36m")
    page.get_by_role("button", name="Price it").click()
    expect(page.locator("#monthly")).to_have_text("773.75 GBP a month, before tax")
    page.locator("input[name=term]").fill("24m")
    page.get_by_role("button", name="Price it").click()
    expect(page.locator(".field-error[data-field=term]")).to_contain_text("offers the terms")

    # the ISV's admin: their own billing only
    username = f"ad{secrets.token_hex(3)}"
    person = plane.cli_json("user", "create", username, "--role", "isv-admin", "--isv", isv)
    them = PortalAccount(username, person["password"])
    with httpx.Client(base_url=plane.url, timeout=30) as client:
        assert portal_login(client, them).status_code == 303  # password and TOTP set up
    page.context.clear_cookies()
    login(page, plane.url, username, them.password, them.code() if them.totp_secret else "")
    expect(page.locator("#subscriptions tbody tr")).to_have_count(1)
    expect(page.locator("#projections tbody tr")).to_have_count(1)
    invoices = page.locator("#invoices tbody tr")
    expect(invoices).to_have_count(1)
    expect(invoices).to_contain_text(isv)
    expect(page.locator("#run")).to_have_count(0), "only the provider issues invoices"
    page.goto(plane.url + "/billing/invoices/in-nope")
    expect(page.locator("body")).to_contain_text(re.compile("not found", re.I))
