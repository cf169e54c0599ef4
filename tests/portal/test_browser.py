"""The portal in a real browser: log in, create a platform, watch it become ready live; an
ISV admin grants support access."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import ControlPlaneProcess, PortalAccount, portal_login

pytestmark = pytest.mark.slow
SHOTS = Path(tempfile.gettempdir())  # screenshots to look at after a run
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, errors


def test_create_a_platform_and_watch_it_become_ready(plane: ControlPlaneProcess, isv: str,
                                                     page: Page) -> None:
    page.goto(plane.url + "/")
    expect(page).to_have_url(plane.url + "/login")
    account = plane.admin()  # first-login set-up (new password, TOTP) done over HTTP
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(account.password)
    page.get_by_label("Authenticator code").fill(account.code())
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Platforms")).to_be_visible()
    expect(page.locator(".who .user")).to_have_text("admin")

    page.get_by_role("link", name="New platform").click()
    expect(page.get_by_role("heading", name="New platform")).to_be_visible()
    with page.expect_response(lambda r: f"/platforms/new?isv={isv}" in r.url):
        page.locator("select[name=isv]").select_option(isv)  # htmx reloads the releases
    expect(page.locator("select[name=isv]")).to_have_value(isv)
    page.get_by_label("Tenants").fill("t1")
    page.locator("select[name=app]").select_option("bodyshop@1.0.0")
    page.get_by_role("button", name="Create platform").click()

    page.wait_for_url(f"{plane.url}/platforms/p*")
    expect(page.get_by_role("heading", name=f"{isv}/t1")).to_be_visible()
    state = page.locator("#platform-state")
    expect(state).not_to_have_text("ready")  # it starts out creating...
    expect(state).to_have_text("ready", timeout=120_000)  # ...and the live section follows
    expect(page.locator("section.job").first).to_contain_text("succeeded")
    expect(page.locator("#live")).to_contain_text("DEPLOYED")
    page.screenshot(path=SHOTS / "portal-platform.png", full_page=True)

    page.get_by_role("link", name="Platforms").click()
    row = page.locator("table.grid tr", has_text=f"{isv}/t1")
    expect(row).to_contain_text("ready")
    expect(row).to_contain_text("bodyshop@1.0.0")
    page.screenshot(path=SHOTS / "portal-list.png", full_page=True)

    page.get_by_role("link", name="Jobs").click()
    expect(page.locator("table.grid")).to_contain_text(f"{isv}/t1")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(plane.url + "/login")


def test_isv_admin_grants_support_access(plane: ControlPlaneProcess, isv: str,
                                         page: Page) -> None:
    made = plane.cli_json("platform", "create", isv, "--tenant", "t2", "--app",
                          "bodyshop@1.0.0", "--service-level", "hands-on")["platform"]
    name = f"sa{secrets.token_hex(3)}"
    account = PortalAccount(name, plane.cli_json("user", "create", name, "--role", "isv-admin",
                                                  "--isv", isv)["password"])
    with httpx.Client(base_url=plane.url, timeout=30) as client:  # first-login password
        assert portal_login(client, account).status_code == 303
    try:
        page.goto(f"{plane.url}/platforms/{made['id']}")
        page.get_by_label("Username").fill(name)
        page.get_by_label("Password").fill(account.password)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Support access")).to_be_visible()
        page.get_by_label("Hours").fill("4")
        page.get_by_label("Reason").fill("TICKET-7 exports fail")
        page.get_by_role("button", name="Grant support access").click()
        live = page.locator("#support-live")
        expect(live).to_contain_text("TICKET-7 exports fail")
        expect(live).to_contain_text(name)
        expect(live).to_contain_text("4 h")
        page.screenshot(path=SHOTS / "portal-support.png", full_page=True)
    finally:
        plane.cli("platform", "destroy", made["id"], "--wait", check=False)
