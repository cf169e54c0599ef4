"""The NOC console over HTTP against a real control plane: the status tree for the provider
and, scoped, for ISV people; the check drilldown and its graph data; the alert history and
one alert with its notifications; alerts in the events feed; escaping.

Alerts are posted to the plane's own Alertmanager webhook (tests/portal/monitoring.py).
"""

from __future__ import annotations

import html
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ControlPlaneProcess, PortalAccount, portal_login
from tests.portal.monitoring import fire, resolve

pytestmark = pytest.mark.slow
HOSTILE = "<script>alert(1)</script>"


@dataclass
class Setup:
    a: str  # ISV A, with platform A/t1 and an email contact
    b: str  # ISV B, with platform B/t1 (on the same host)
    a_platform: str  # ISV/NAME
    b_platform: str
    provider: httpx.Client  # the bootstrap admin's portal session
    a_viewer: httpx.Client
    b_viewer: httpx.Client
    lonely: httpx.Client  # the viewer of an ISV that runs nothing


def portal_as(plane: ControlPlaneProcess, api: httpx.Client, role: str,
              isv: str) -> httpx.Client:
    name = f"mv{secrets.token_hex(3)}"
    made = api.post("/users", json={"username": name, "role": role, "isv": isv})
    assert made.status_code == 201, made.text
    client = httpx.Client(base_url=plane.url, timeout=30)
    account = PortalAccount(name, made.json()["password"])
    assert portal_login(client, account).status_code == 303
    return client


def small_isv(plane: ControlPlaneProcess, api: httpx.Client, bundle: Path | None) -> str:
    """An ISV with tenant t1 and, given a bundle, its release (the API where it is quicker
    than the CLI; the CLI packs the bundle)."""
    name = f"isv-{secrets.token_hex(4)}"
    assert api.post("/isvs", json={"name": name}).status_code == 201
    if bundle is not None:
        assert api.post(f"/isvs/{name}/tenants", json={"name": "t1"}).status_code == 201
        plane.cli("app", "release", name, str(bundle))
    return name


def destroy_soon(api: httpx.Client, platform_id: str, timeout: float = 30) -> None:
    """Ask for the platform's end once its first deploy is over (a busy platform refuses,
    409); not waiting for it: the session's plane removes whatever is left."""
    deadline = time.monotonic() + timeout
    while api.delete(f"/platforms/{platform_id}").status_code == 409 \
            and time.monotonic() < deadline:
        time.sleep(1)


@pytest.fixture(scope="module")
def setup(plane: ControlPlaneProcess, bundles: dict[str, Path]) -> Iterator[Setup]:
    api = plane.api()
    a, b = (small_isv(plane, api, bundles["1.0.0"]) for _ in range(2))
    made = [api.post(f"/isvs/{isv}/platforms", json={"tenants": ["t1"],
                                                     "app": "bodyshop@1.0.0"}).json()
            for isv in (a, b)]
    added = api.post("/contacts", json={"name": "ops", "isv": a, "email": "ops@a.example"})
    assert added.status_code == 201, added.text
    provider = httpx.Client(base_url=plane.url, timeout=30)
    assert portal_login(provider, plane.admin()).status_code == 303
    clients = [provider, portal_as(plane, api, "isv-viewer", a),
               portal_as(plane, api, "isv-viewer", b),
               portal_as(plane, api, "isv-viewer", small_isv(plane, api, None))]
    try:
        yield Setup(a, b, f"{a}/t1", f"{b}/t1", *clients)
    finally:
        for client in clients:
            client.close()
        for accepted in made:
            destroy_soon(api, accepted["platform"]["id"])
        api.close()


def node(page: str, kind: str, name: str) -> str:
    """The <li> of a host or platform in the status tree (up to its end)."""
    found = re.search(rf'<li class="{kind}" data-{kind}="{re.escape(name)}"[^>]*>.*?</li>',
                      page, re.S)
    assert found, f"no {kind} {name} in the tree"
    return found.group(0)


def test_the_provider_sees_the_tree_live(plane: ControlPlaneProcess, setup: Setup) -> None:
    alert = fire(plane, setup.a_platform)
    try:
        page = setup.provider.get("/monitoring")
        assert page.status_code == 200
        assert '<a href="/monitoring" class="on">Monitoring</a>' in page.text
        assert 'hx-get="/monitoring/tree" hx-trigger="every 5s"' in page.text
        host = node(page.text, "host", "local")
        assert 'data-check="cpu"' in host and 'href="/monitoring/check?check=cpu&amp;host=local"' \
            in host
        red = node(page.text, "platform", setup.a_platform)
        assert 'data-level="overloaded"' in red.split(">")[0]
        assert re.search(r'class="chk lv-overloaded" data-check="responding"', red)
        assert f'href="/monitoring/alerts/{alert.id}"' in page.text  # among the open alerts
        node(page.text, "platform", setup.b_platform)
        assert re.search(r'data-column="Network" data-level="overloaded"', page.text)
        assert re.search(r'data-column="(Compute|Storage)"', page.text)

        fragment = setup.provider.get("/monitoring/tree", headers={"HX-Request": "true"})
        assert fragment.status_code == 200 and "<html" not in fragment.text
        assert 'data-level="overloaded"' in node(fragment.text, "platform", setup.a_platform)
    finally:
        resolve(plane, alert)


def test_isv_people_see_only_their_platforms_and_hosts(plane: ControlPlaneProcess,
                                                       setup: Setup) -> None:
    alert = fire(plane, setup.a_platform)
    try:
        page = setup.b_viewer.get("/monitoring")
        assert page.status_code == 200
        node(page.text, "host", "local")  # the host B's platform runs on
        node(page.text, "platform", setup.b_platform)
        assert setup.a not in page.text and f"/monitoring/alerts/{alert.id}" not in page.text
        history = setup.b_viewer.get("/monitoring/alerts")
        assert history.status_code == 200 and setup.a not in history.text
        assert setup.b_viewer.get(f"/monitoring/alerts/{alert.id}").status_code == 404
        assert setup.b_viewer.get("/monitoring/check", params={
            "check": "responding", "platform": setup.a_platform}).status_code == 404

        mine = setup.a_viewer.get("/monitoring")
        assert 'data-level="overloaded"' in node(mine.text, "platform", setup.a_platform)
        assert setup.b not in mine.text

        lonely = setup.lonely.get("/monitoring")
        assert lonely.status_code == 200 and "Nothing to monitor yet" in lonely.text
        assert 'data-host="local"' not in lonely.text
        assert setup.lonely.get("/monitoring/check", params={
            "check": "cpu", "host": "local"}).status_code == 404
    finally:
        resolve(plane, alert)


def test_an_alert_page_shows_changes_and_notifications(plane: ControlPlaneProcess,
                                                        setup: Setup) -> None:
    alert = fire(plane, setup.a_platform, summary=f"instance not responding {HOSTILE}")
    try:
        for client in (setup.provider, setup.a_viewer):
            page = client.get(f"/monitoring/alerts/{alert.id}")
            assert page.status_code == 200, page.text
            assert f"Alert #{alert.id}" in page.text and "overloaded" in page.text
            table = page.text.split("<h2>Notifications</h2>")[1]
            assert re.search(r"<td>email</td>\s*<td>ops@a\.example</td>\s*<td>firing</td>",
                             table), table
            assert 'data-status="pending"' in table  # no mail channel on the test plane
            changes = page.text.split("<h2>Changes</h2>")[1].split("<h2>")[0]
            assert "<td>firing</td>" in changes
            assert HOSTILE not in page.text and html.escape(HOSTILE, quote=False) in page.text
            drill = f"/monitoring/check?check=responding&amp;platform={setup.a}%2Ft1"
            assert drill in page.text

        listing = setup.provider.get("/monitoring/alerts", params={
            "platform": setup.a_platform, "open": "1"})
        assert listing.status_code == 200 and f'data-alert="{alert.id}"' in listing.text
        row = listing.text.split(f'data-alert="{alert.id}"')[1].split("</tr>")[0]
        assert re.search(r"\d+ pending", row), row
        assert HOSTILE not in listing.text
        for params in ({"platform": setup.b_platform}, {"host": "local", "check": "cpu"}):
            other = setup.provider.get("/monitoring/alerts", params=params)
            assert other.status_code == 200 and f'data-alert="{alert.id}"' not in other.text
        by_host = setup.provider.get("/monitoring/alerts", params={"host": "local"})
        assert f'data-alert="{alert.id}"' in by_host.text

        events = setup.provider.get("/events")
        link = f'<a href="/monitoring/alerts/{alert.id}">(alert {alert.id})</a>'
        rows = [r for r in events.text.split("<tr>") if link in r]
        assert rows and '<code class="kind k-ALERT">ALERT</code>' in rows[0], events.text
        assert HOSTILE not in events.text
    finally:
        resolve(plane, alert)
    resolved = setup.provider.get(f"/monitoring/alerts/{alert.id}")
    assert "resolved" in resolved.text.split("<h2>Changes</h2>")[1]


def test_the_drilldown_shows_state_graph_and_history(plane: ControlPlaneProcess,
                                                      setup: Setup) -> None:
    alert = fire(plane, setup.a_platform)
    try:
        page = setup.a_viewer.get("/monitoring/check", params={
            "check": "responding", "platform": setup.a_platform})
        assert page.status_code == 200, page.text
        assert re.search(r'id="check-state">overloaded since', page.text)
        assert f'data-alert="{alert.id}"' in page.text
        assert (f'data-src="/monitoring/graph.json?check=responding&amp;platform={setup.a}%2Ft1"'
                in page.text)
        for span in ("1h", "1d", "1w", "1m"):
            assert f'data-span="{span}"' in page.text
        assert '<script src="/static/uplot/uPlot.iife.min.js" defer></script>' in page.text
        assert setup.a_viewer.get("/static/uplot/uPlot.iife.min.js").status_code == 200
        week = setup.a_viewer.get("/monitoring/check", params={
            "check": "responding", "platform": setup.a_platform, "range": "1w"})
        assert re.search(r'data-span="1w" class="on"', week.text)
    finally:
        resolve(plane, alert)

    host = setup.provider.get("/monitoring/check", params={"check": "cpu", "host": "local"})
    assert host.status_code == 200 and "CPU busy" in host.text
    for params, status in [({"check": "nope", "host": "local"}, 422),
                           ({"check": "cpu", "platform": setup.a_platform}, 422),
                           ({"check": "responding", "host": "local"}, 422),
                           ({"check": "cpu", "host": "nohost"}, 404),
                           ({"check": HOSTILE, "host": "local"}, 422)]:
        answer = setup.provider.get("/monitoring/check", params=params)
        assert answer.status_code == status, (params, answer.text)
        assert "<html" in answer.text and HOSTILE not in answer.text


def graph(client: httpx.Client, **params: str) -> httpx.Response:
    return client.get("/monitoring/graph.json", params=params)


def test_graph_data_for_the_portal(plane: ControlPlaneProcess, setup: Setup) -> None:
    answer = graph(setup.provider, check="cpu", host="local", range="1h")
    assert answer.status_code == 200, answer.text  # `up` runs Prometheus
    body: dict[str, Any] = answer.json()
    assert (body["check"], body["target"], body["unit"], body["span"]) == \
        ("cpu", "local", "%", "1h")
    assert isinstance(body["series"], list)
    assert answer.headers["cache-control"] == "no-store"
    mine = graph(setup.a_viewer, check="responding", platform=setup.a_platform, range="1d")
    assert mine.status_code == 200 and mine.json()["target"] == setup.a_platform

    for client, params, status, field in [
            (setup.provider, {"check": "nope", "host": "local"}, 422, "check"),
            (setup.provider, {"check": "cpu", "host": "local", "range": "5y"}, 422, "range"),
            (setup.provider, {"check": "cpu", "platform": setup.a_platform}, 422, "host"),
            (setup.b_viewer, {"check": "responding", "platform": setup.a_platform}, 404,
             "platform"),
            (setup.lonely, {"check": "cpu", "host": "local"}, 404, "host")]:
        refused = graph(client, **params)
        assert refused.status_code == status, (params, refused.text)
        assert refused.json()["error"]["field"] == field, refused.text

    with httpx.Client(base_url=plane.url, timeout=30) as anon:
        answer = graph(anon, check="cpu", host="local")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
        assert anon.get("/monitoring").status_code == 303


def test_thresholds_are_set_from_the_drilldown(plane: ControlPlaneProcess,
                                               setup: Setup) -> None:
    from tests.conftest import csrf_of

    page = f"/monitoring/check?check=response_time&platform={setup.a_platform}"
    shown = setup.provider.get(page)
    assert shown.status_code == 200 and 'id="threshold-form"' in shown.text
    form = {"csrf": csrf_of(shown.text), "check": "response_time",
            "platform": setup.a_platform}
    with plane.api() as api:
        before = api.get("/thresholds", params={"check": "response_time"}).json()
        # not a number; busy above overloaded: refused beside the field, nothing stored
        for values, field in (({"busy": "abc", "overloaded": "3"}, "busy"),
                              ({"busy": "5", "overloaded": "3"}, "busy")):
            refused = setup.provider.post("/monitoring/check", data={**form, **values})
            assert refused.status_code == 422, refused.text
            assert f'id="{field}-error"' in refused.text
        assert api.get("/thresholds", params={"check": "response_time"}).json() == before
        done = setup.provider.post("/monitoring/check",
                                   data={**form, "busy": "0.5", "overloaded": "2"})
        assert done.status_code == 303
        after = api.get("/thresholds", params={"check": "response_time"}).json()
        assert [(t["scope"], t["target"], t["busy"], t["overloaded"]) for t in after
                if t["target"] == setup.a_platform] == \
            [("platform", setup.a_platform, 0.5, 2.0)]
    assert "platform " + setup.a_platform in html.unescape(setup.provider.get(page).text)
    # a viewer sees the thresholds but gets no form, and may not post one
    viewer_page = setup.a_viewer.get(page)
    assert viewer_page.status_code == 200 and 'id="threshold-form"' not in viewer_page.text
    assert setup.a_viewer.post("/monitoring/check", data={
        **form, "csrf": csrf_of(viewer_page.text), "busy": "1", "overloaded": "2"}
        ).status_code == 403
