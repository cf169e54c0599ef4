"""Support access in the portal, over HTTP against a real control plane: an ISV admin grants
and ends it on the platform's page, bad input comes back by field with nothing stored, every
other role sees it read-only (provider admins may end it), another ISV gets 404."""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ControlPlaneProcess, PortalAccount, csrf_of, make_isv, portal_login

pytestmark = pytest.mark.slow
HOSTILE = "<script>alert(1)</script>"


@dataclass
class Setup:
    hands_on: dict[str, Any]
    hands_off: dict[str, Any]
    admin: httpx.Client  # ISV A's admin
    admin_name: str
    viewer: httpx.Client  # ISV A's viewer
    other_admin: httpx.Client  # ISV B's admin
    provider_admin: httpx.Client
    provider_operator: httpx.Client

    @property
    def page(self) -> str:
        return f"/platforms/{self.hands_on['id']}"


def portal_as(plane: ControlPlaneProcess, role: str, isv: str | None = None
              ) -> tuple[str, httpx.Client]:
    name = f"{role.split('-')[1][:2]}{secrets.token_hex(3)}"
    made = plane.cli_json("user", "create", name, "--role", role,
                          *(("--isv", isv) if isv else ()))
    client = httpx.Client(base_url=plane.url, timeout=30)
    assert portal_login(client, PortalAccount(name, made["password"])).status_code == 303
    return name, client


@pytest.fixture(scope="module")
def setup(plane: ControlPlaneProcess, bundles: dict[str, Path]) -> Iterator[Setup]:
    a, b = make_isv(plane, bundles), make_isv(plane, bundles)
    platforms = [plane.cli_json("platform", "create", a, "--tenant", tenant, "--app",
                                "bodyshop@1.0.0", "--service-level", level)["platform"]
                 for tenant, level in (("t1", "hands-on"), ("t2", "hands-off"))]
    admin_name, admin = portal_as(plane, "isv-admin", a)
    provider_admin = httpx.Client(base_url=plane.url, timeout=30)
    assert portal_login(provider_admin, plane.admin()).status_code == 303
    clients = [admin, portal_as(plane, "isv-viewer", a)[1], portal_as(plane, "isv-admin", b)[1],
               provider_admin, portal_as(plane, "provider-operator")[1]]
    try:
        yield Setup(platforms[0], platforms[1], admin, admin_name, *clients[1:])
    finally:
        for client in clients:
            client.close()
        for made in platforms:
            plane.cli("platform", "destroy", made["id"], "--wait", check=False)


def grants(plane: ControlPlaneProcess) -> dict[str, dict[str, Any]]:
    """Every grant, live or ended, as the provider's CLI sees them."""
    return {g["id"]: g for g in plane.cli_json("support", "list", "--all")}


def grant_through_form(setup: Setup, reason: str, hours: str = "2") -> httpx.Response:
    page = setup.admin.get(setup.page)
    return setup.admin.post(f"{setup.page}/support", data={
        "csrf": csrf_of(page.text), "hours": hours, "reason": reason})


def grant_id(plane: ControlPlaneProcess, reason: str) -> str:
    return next(g["id"] for g in grants(plane).values() if g["reason"] == reason)


def live_section(page: str) -> str:
    found = re.search(r'<table class="grid" id="support-live">(.*?)</table>', page, re.S)
    return found.group(1) if found else ""


def test_isv_admin_grants_through_the_form_and_sees_it(plane: ControlPlaneProcess,
                                                       setup: Setup) -> None:
    page = setup.admin.get(setup.page)
    assert page.status_code == 200
    assert "Support access" in page.text and 'id="support-form"' in page.text
    reason = f"TICKET-{secrets.token_hex(3)} reports are slow"
    made = grant_through_form(setup, reason, hours="3")
    assert made.status_code == 303 and made.headers["location"] == f"{setup.page}#support"
    stored = grants(plane)[grant_id(plane, reason)]
    assert stored["active"] is True and stored["granted_by"] == setup.admin_name
    assert stored["platform_id"] == setup.hands_on["id"]

    live = live_section(setup.admin.get(setup.page).text)
    row = next(r for r in live.split("<tr>") if reason in r)
    assert setup.admin_name in row and "3 h" in row  # rounded up: just granted for 3 hours
    assert f'action="/support/{stored["id"]}/end"' in row


@pytest.mark.parametrize(("form", "field", "message"), [
    ({"hours": "0"}, "hours", "1 to 72"), ({"hours": "73"}, "hours", "1 to 72"),
    ({"hours": "two"}, "hours", "1 to 72"), ({"hours": ""}, "hours", "1 to 72"),
    ({"reason": "x"}, "reason", "3 to 500"), ({"reason": "  ab  "}, "reason", "3 to 500"),
    ({"reason": "x" * 501}, "reason", "3 to 500")])
def test_bad_input_shows_the_error_by_its_field_and_stores_nothing(
        plane: ControlPlaneProcess, setup: Setup, form: dict[str, str], field: str,
        message: str) -> None:
    before = grants(plane)
    answer = grant_through_form(setup, **{"reason": "a good reason", **form})
    assert answer.status_code == 422, answer.text[:300]
    shown = re.search(rf'id="{field}-error">([^<]*)<', answer.text)
    assert shown and message in html.unescape(shown.group(1)), answer.text[-2000:]
    assert 'id="support-form"' in answer.text  # the form again, with what was typed
    if field == "hours":
        assert 'value="a good reason"' in answer.text
    assert grants(plane) == before


def test_other_roles_see_grants_read_only(plane: ControlPlaneProcess, setup: Setup) -> None:
    reason = f"TICKET-{secrets.token_hex(3)} look at the queue"
    assert grant_through_form(setup, reason).status_code == 303
    made = grant_id(plane, reason)
    for client, may_end in ((setup.viewer, False), (setup.provider_operator, False),
                            (setup.provider_admin, True)):
        page = client.get(setup.page)
        assert page.status_code == 200 and reason in live_section(page.text)
        assert 'id="support-form"' not in page.text  # only the ISV's admins grant
        assert (f'action="/support/{made}/end"' in page.text) is may_end
    csrf = csrf_of(setup.viewer.get(setup.page).text)
    refused = setup.viewer.post(f"{setup.page}/support", data={
        "csrf": csrf, "hours": "1", "reason": "viewer wants it"})
    assert refused.status_code == 403
    assert setup.viewer.post(f"/support/{made}/end", data={"csrf": csrf}).status_code == 403
    # a provider admin may not let the provider in: the form's answer says why
    csrf = csrf_of(setup.provider_admin.get(setup.page).text)
    own = setup.provider_admin.post(f"{setup.page}/support", data={
        "csrf": csrf, "hours": "1", "reason": "let ourselves in"})
    assert own.status_code == 403 and 'id="support-error"' in own.text
    assert "only an admin of the platform" in own.text
    assert grants(plane)[made]["active"] is True
    assert "let ourselves in" not in str(grants(plane))


def test_another_isvs_admin_finds_nothing(plane: ControlPlaneProcess, setup: Setup) -> None:
    reason = f"TICKET-{secrets.token_hex(3)} not for B"
    assert grant_through_form(setup, reason).status_code == 303
    made = grant_id(plane, reason)
    assert setup.other_admin.get(setup.page).status_code == 404
    csrf = csrf_of(setup.other_admin.get("/").text)
    assert setup.other_admin.post(f"{setup.page}/support", data={
        "csrf": csrf, "hours": "1", "reason": "from ISV B"}).status_code == 404
    ended = setup.other_admin.post(f"/support/{made}/end", data={"csrf": csrf})
    assert ended.status_code == 404 and reason not in ended.text
    assert grants(plane)[made]["active"] is True
    assert "from ISV B" not in str(grants(plane))


def test_end_now(plane: ControlPlaneProcess, setup: Setup) -> None:
    mine, theirs = (f"TICKET-{secrets.token_hex(3)} {who}" for who in ("isv", "provider"))
    for reason in (mine, theirs):
        assert grant_through_form(setup, reason).status_code == 303
    for client, reason in ((setup.admin, mine), (setup.provider_admin, theirs)):
        made = grant_id(plane, reason)
        csrf = csrf_of(client.get(setup.page).text)
        assert client.post(f"/support/{made}/end", data={}).status_code == 403  # no CSRF
        ended = client.post(f"/support/{made}/end", data={"csrf": csrf})
        assert ended.status_code == 303 and ended.headers["location"] == f"{setup.page}#support"
        stored = grants(plane)[made]
        assert stored["active"] is False and stored["revoked_at"] is not None
        page = client.get(setup.page).text
        assert reason not in live_section(page)
        past = page[page.index('id="support-past"'):]
        assert reason in past and f"by {stored['revoked_by']}" in past
    assert grants(plane)[grant_id(plane, theirs)]["revoked_by"] == "admin"


def test_reasons_are_escaped(plane: ControlPlaneProcess, setup: Setup) -> None:
    reason = f"{HOSTILE} TICKET-{secrets.token_hex(3)}"
    assert grant_through_form(setup, reason).status_code == 303
    assert grant_id(plane, reason)
    for client, path in ((setup.admin, setup.page), (setup.viewer, setup.page),
                         (setup.provider_operator, "/support")):
        page = client.get(path)
        assert page.status_code == 200
        assert HOSTILE not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    bad = grant_through_form(setup, HOSTILE, hours="0")  # re-rendered into the form, escaped
    assert bad.status_code == 422 and HOSTILE not in bad.text
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in bad.text


def test_hands_off_platform_says_the_provider_manages_it(setup: Setup) -> None:
    page = setup.admin.get(f"/platforms/{setup.hands_off['id']}")
    assert page.status_code == 200
    assert "the provider manages it" in page.text
    assert 'id="support-form"' not in page.text and 'id="support-live"' not in page.text
    csrf = csrf_of(page.text)
    refused = setup.admin.post(f"/platforms/{setup.hands_off['id']}/support", data={
        "csrf": csrf, "hours": "1", "reason": "hands-off anyway"})
    assert refused.status_code == 422 and "hands-off" in refused.text


def test_provider_list_of_live_grants(plane: ControlPlaneProcess, setup: Setup) -> None:
    reason = f"TICKET-{secrets.token_hex(3)} on the provider list"
    assert grant_through_form(setup, reason).status_code == 303
    made = grant_id(plane, reason)
    listing = setup.provider_operator.get("/support")
    assert listing.status_code == 200 and 'href="/support"' in listing.text  # in the nav
    row = next(r for r in live_section(listing.text).split("<tr>") if reason in r)
    assert f'href="/platforms/{setup.hands_on["id"]}#support"' in row
    assert "End now" not in row  # operators look; admins may end
    assert f'action="/support/{made}/end"' in setup.provider_admin.get("/support").text
    assert setup.admin.get("/support").status_code == 403  # an ISV's people use their pages
    assert 'href="/support"' not in setup.admin.get(setup.page).text
