"""Portal pages over HTTP against a real control plane: auth, CSRF, filters, forms, escaping."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ControlPlaneProcess, PortalAccount, csrf_of, portal_login

pytestmark = pytest.mark.slow
HOSTILE = "<script>alert(1)</script>"


def login(client: httpx.Client, password: str, user: str = "admin",
          code: str = "") -> httpx.Response:
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"username": user, "password": password, "csrf": token,
                                       "next": "/", "code": code})


@pytest.fixture
def anon(plane: ControlPlaneProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=plane.url, timeout=30) as client:
        yield client


@pytest.fixture
def admin(plane: ControlPlaneProcess) -> Iterator[httpx.Client]:
    account = plane.admin()
    with httpx.Client(base_url=plane.url, timeout=30) as client:
        answer = login(client, account.password, code=account.code())
        assert answer.status_code == 303, answer.text
        yield client


def test_pages_need_login(anon: httpx.Client) -> None:
    for path, target in [("/", "/login"), ("/jobs", "/login?next=%2Fjobs"),
                         ("/platforms/new?isv=x", "/login?next=%2Fplatforms%2Fnew%3Fisv%3Dx")]:
        answer = anon.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == target
    live = anon.get("/platforms/p0/live", headers={"HX-Request": "true"})
    assert live.headers["hx-redirect"].startswith("/login")
    anon.cookies.set("tenantry_session", "tns_forged")
    assert anon.get("/").status_code == 303
    assert anon.get("/static/htmx.min.js").status_code == 200


def test_login_cookie_and_logout(plane: ControlPlaneProcess, anon: httpx.Client) -> None:
    account = plane.admin()
    answer = login(anon, account.password, code=account.code())
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    cookie = next(v for k, v in answer.headers.multi_items()
                  if k == "set-cookie" and v.startswith("tenantry_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    page = anon.get("/")
    assert page.status_code == 200 and "admin" in page.text and "Log out" in page.text
    assert anon.post("/logout", data={"csrf": csrf_of(page.text)}).status_code == 303
    assert anon.get("/").status_code == 303  # the session token was revoked


def test_bad_password_is_refused(anon: httpx.Client) -> None:
    answer = login(anon, "not-the-password")
    assert answer.status_code == 401
    assert "wrong username, password or code" in answer.text
    assert "tenantry_session" not in answer.headers.get("set-cookie", "")
    assert login(anon, "x", user=HOSTILE).status_code == 401


def test_posts_without_a_valid_csrf_token_are_refused(plane: ControlPlaneProcess,
                                                       anon: httpx.Client,
                                                       admin: httpx.Client) -> None:
    password = plane.admin().password
    anon.get("/login")
    assert anon.post("/login", data={"username": "admin", "password": password}).status_code == 403
    assert anon.post("/login", data={"username": "admin", "password": password,
                                     "csrf": "0" * 64}).status_code == 403
    form = {"isv": "x", "tenants": "t1", "app": "bodyshop@1.0.0"}
    assert admin.post("/platforms/new", data=form).status_code == 403
    other = csrf_of(anon.get("/login").text)  # a valid token, but bound to another cookie
    assert admin.post("/platforms/new", data={**form, "csrf": other}).status_code == 403
    assert admin.post("/logout", data={}).status_code == 403
    assert admin.get("/").status_code == 200  # still logged in


def test_list_filters(plane: ControlPlaneProcess, admin: httpx.Client, isv: str) -> None:
    with plane.api() as api:
        made = api.post(f"/isvs/{isv}/platforms", json={"tenants": ["t2"], "app": "bodyshop@1.0.0",
                                                        "name": "filtered"})
        assert made.status_code == 202, made.text
        region = made.json()["platform"]["region"]
    page = admin.get("/", params={"isv": isv})
    assert page.status_code == 200
    assert f"{isv}/</span>filtered" in page.text
    assert f'<option selected>{isv}</option>' in page.text
    assert ">t3</option>" in page.text  # the ISV's tenants are offered
    assert "filtered" in admin.get("/", params={"isv": isv, "tenant": "t2",
                                                "region": region}).text
    for params in ({"isv": isv, "tenant": "t3"}, {"isv": isv, "region": "nowhere"},
                   {"isv": isv, "state": "stopped"}):
        answer = admin.get("/", params=params)
        assert answer.status_code == 200
        assert "filtered" not in answer.text and "No platforms match" in answer.text
    events = admin.get("/events", params={"isv": isv})
    assert "PLATFORM_CREATED" in events.text and "TENANT_CREATED" in events.text
    assert "filtered" in admin.get("/jobs").text


def test_new_platform_form_shows_field_errors(admin: httpx.Client, isv: str) -> None:
    form = admin.get("/platforms/new", params={"isv": isv})
    assert form.status_code == 200
    assert "bodyshop@1.1.0" in form.text and "bodyshop@1.0.0" in form.text
    good = {"csrf": csrf_of(form.text), "isv": isv, "tenants": "t1", "app": "bodyshop@1.0.0",
            "size": "s"}
    # The status is the API's for the same refusal: 422 for bad input, 404 for a name that
    # does not exist (tenantry.core.errors maps both, for every edge).
    cases = [({"tenants": ""}, "tenants", "at least one tenant", 422),
             ({"tenants": "t1, nosuch"}, "tenants", "has no tenant 'nosuch'", 404),
             ({"tenants": "t1,t1"}, "tenants", "listed twice", 422),
             ({"app": "bodyshop@9.9.9"}, "app", "has no release bodyshop@9.9.9", 404),
             ({"size": "xl"}, "size", "'s', 'm' or 'l'", 422),
             ({"region": "nowhere"}, "region", "no region named", 404),
             ({"isv": "nosuch-isv"}, "isv", "no ISV named", 404)]
    for change, field, message, status in cases:
        answer = admin.post("/platforms/new", data={**good, **change})
        assert answer.status_code == status, (change, answer.text[:300])
        shown = re.search(rf'id="{field}-error">([^<]*)<', answer.text)
        assert shown and message in html.unescape(shown.group(1)), (change, shown)
        if "tenants" in change:  # the form keeps what was typed
            assert f'value="{change["tenants"]}"' in answer.text


def test_hostile_strings_are_escaped(admin: httpx.Client, isv: str) -> None:
    form = admin.get("/platforms/new", params={"isv": isv})
    answer = admin.post("/platforms/new", data={
        "csrf": csrf_of(form.text), "isv": isv, "tenants": "t1", "app": "bodyshop@1.0.0",
        "name": HOSTILE})
    assert answer.status_code == 422
    assert HOSTILE not in answer.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text
    listing = admin.get("/", params={"isv": HOSTILE})  # not a name: refused, and escaped
    assert listing.status_code == 422 and HOSTILE not in listing.text
    assert "&lt;script&gt;" in listing.text
    img = "<img src=x onerror=alert(1)>"
    for path in (f"/platforms/{img}", f"/platforms/{img}/live", f"/events?isv={img}",
                 f"/events?platform={img}"):
        bad = admin.get(path)
        assert bad.status_code in (404, 422) and img not in bad.text
        assert bad.headers["content-type"].startswith("text/html")


def test_missing_things_are_html_404s(admin: httpx.Client) -> None:
    for path in ("/platforms/pnosuch", "/platforms/pnosuch/live", "/jobs/987654321",
                 "/jobs/not-a-number"):
        answer = admin.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"].startswith("text/html")


def test_first_login_forces_a_new_password_and_a_second_factor(
        plane: ControlPlaneProcess, anon: httpx.Client) -> None:
    created = plane.cli_json("user", "create", "nocops", "--role", "provider-operator")
    assert created["user"]["must_change_password"] is True
    first = login(anon, created["password"], user="nocops")
    assert first.status_code == 303
    for path in ("/", "/jobs", "/events"):  # nothing opens before the set-up
        answer = anon.get(path)
        assert (answer.status_code, answer.headers["location"]) == (303, "/account/setup")
    setup = anon.get("/account/setup")
    weak = anon.post("/account/password", data={"current": created["password"], "new": "short",
                                                 "csrf": csrf_of(setup.text)})
    assert weak.status_code == 422 and "new" in weak.text

    account = PortalAccount("nocops", created["password"])
    anon.cookies.clear()
    assert portal_login(anon, account).status_code == 303
    assert account.totp_secret is not None and account.password != created["password"]
    assert anon.get("/").status_code == 200
    # From now on the password alone is not enough, and the old one is gone.
    with httpx.Client(base_url=plane.url, timeout=30) as fresh:
        assert login(fresh, account.password, user="nocops").status_code == 401
        assert login(fresh, created["password"], user="nocops",
                     code=account.code()).status_code == 401
        assert login(fresh, account.password, user="nocops",
                     code=account.code()).status_code == 303


def test_repeated_failures_lock_the_account(plane: ControlPlaneProcess,
                                            anon: httpx.Client) -> None:
    created = plane.cli_json("user", "create", "guessme", "--role", "provider-operator")
    for _ in range(5):
        assert login(anon, "wrong-guess", user="guessme").status_code == 401
    # Locked: even the right password is refused now.
    assert login(anon, created["password"], user="guessme").status_code == 401


def test_password_guessing_is_throttled(plane: ControlPlaneProcess) -> None:
    """100 guesses at once, from 10 connections: past ATTEMPTS in a WINDOW, the rest are
    refused unread (429), however fast or slow the machine answers."""
    from concurrent.futures import ThreadPoolExecutor

    from tenantry.access.throttle import ATTEMPTS, WINDOW

    def guess(i: int) -> int:
        with httpx.Client(base_url=f"{plane.url}/api/v1", timeout=60) as client:
            return client.post("/auth/login", json={"username": f"nobody{i}",
                                                    "password": "guess"}).status_code

    start = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(guess, range(100)))
    elapsed = time.monotonic() - start
    assert set(statuses) <= {401, 429}, statuses
    # Each window lets ATTEMPTS through at most; the guesses spanned elapsed // WINDOW + 1.
    assert statuses.count(401) <= ATTEMPTS * (int(elapsed // WINDOW) + 1), (elapsed, statuses)
    assert statuses.count(429) > 0, (elapsed, statuses)
    time.sleep(11)  # let the window pass for the tests after this one


def test_admins_manage_people_in_the_portal(plane: ControlPlaneProcess, admin: httpx.Client,
                                            isv: str) -> None:
    page = admin.get("/users")
    assert page.status_code == 200 and "New user" in page.text
    made = admin.post("/users", data={"username": "portal-made", "role": "isv-operator",
                                      "isv": isv, "csrf": csrf_of(page.text)})
    assert made.status_code == 200 and 'id="new-password"' in made.text
    shown = re.search(r"<code>([^<]+)</code>", made.text)
    assert shown is not None
    with httpx.Client(base_url=plane.url) as fresh:  # the shown password works
        assert login(fresh, shown.group(1), user="portal-made").status_code == 303
    bad = admin.post("/users", data={"username": "portal-made", "role": "isv-operator",
                                     "isv": isv, "csrf": csrf_of(made.text)})
    assert bad.status_code == 409 and "exists already" in bad.text
    admin.post("/users/portal-made/role", data={"role": "isv-viewer", "csrf": csrf_of(made.text)})
    admin.post("/users/portal-made/disable", data={"csrf": csrf_of(made.text)})
    row = next(u for u in plane.cli_json("user", "list") if u["username"] == "portal-made")
    assert (row["role"], row["disabled"]) == ("isv-viewer", True)
    assert admin.post("/users", data={"username": "x", "role": "isv-viewer"}).status_code == 403
