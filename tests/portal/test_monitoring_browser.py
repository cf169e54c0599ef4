"""The NOC console in a real browser (Debian's Chromium): the status tree turns a platform red
live when its alert comes in, the drilldown draws the check's graph with uPlot from the
real Prometheus `up` runs, and the alert history lists the alert and opens it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ControlPlaneProcess
from tests.portal.monitoring import fire, resolve
from tests.portal.test_browser import SHOTS, browser, page  # noqa: F401 - the same fixtures
from tests.portal.test_monitoring_pages import destroy_soon, small_isv

pytestmark = pytest.mark.slow
RED = "rgb(215, 58, 58)"  # monitoring.css: the dot of an overloaded node
DATA_WAIT = 30  # seconds for Prometheus to have a few points of a new plane's host


@pytest.fixture(scope="module")
def platform(plane: ControlPlaneProcess, bundles: dict[str, Path]) -> Iterator[str]:
    """ISV/NAME of a fresh platform on host `local`."""
    with plane.api() as api:
        isv = small_isv(plane, api, bundles["1.0.0"])
        made = api.post(f"/isvs/{isv}/platforms", json={"tenants": ["t1"],
                                                        "app": "bodyshop@1.0.0"})
        assert made.status_code == 202, made.text
        try:
            yield f"{isv}/t1"
        finally:
            destroy_soon(api, made.json()["platform"]["id"])


def graph_check(plane: ControlPlaneProcess) -> str:
    """A host check of `local` with a few points in Prometheus: cpu (node_exporter), or,
    on an agent that does not run node_exporter yet, the heartbeat (the agent's target)."""
    deadline = time.monotonic() + DATA_WAIT
    with plane.api() as api:
        while True:
            points = {}
            for check in ("cpu", "heartbeat"):
                answer = api.get("/monitoring/graph", params={"check": check, "host": "local"})
                if answer.status_code == 503:
                    pytest.skip(f"Prometheus is not running on the test plane: {answer.text}")
                assert answer.status_code == 200, answer.text
                points[check] = sum(len(s["points"]) for s in answer.json()["series"])
            if points["cpu"] >= 2:
                return "cpu"
            if time.monotonic() > deadline:
                assert points["heartbeat"] >= 2, f"no data in Prometheus: {points}"
                return "heartbeat"
            time.sleep(2)


def test_noc_console(plane: ControlPlaneProcess, platform: str, page: Page) -> None:  # noqa: F811
    check = graph_check(plane)  # first: the alert fired below closes by itself after 30 s
    page.goto(plane.url + "/monitoring")
    account = plane.admin()
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(account.password)
    page.get_by_label("Authenticator code").fill(account.code())
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Monitoring", exact=True)).to_be_visible()
    node = page.locator(f'li.platform[data-platform="{platform}"]')
    # not red yet (a deploying platform is not probed; once up, a slow answer is amber)
    expect(node).to_have_attribute("data-level", re.compile("ok|busy|unknown"))
    expect(page.locator('li.host[data-host="local"]')).to_be_visible()
    page.evaluate("window.stillTheSamePage = true")

    alert = fire(plane, platform)
    try:
        # the 5 s poll brings it in: no reload
        expect(node).to_have_attribute("data-level", "overloaded", timeout=15_000)
        assert page.evaluate("window.stillTheSamePage") is True
        expect(node.locator(".dot").first).to_have_css("background-color", RED)
        chip = node.locator('a.chk[data-check="responding"]')
        expect(chip).to_contain_text("overloaded")
        expect(chip).to_have_css("color", "rgb(180, 35, 35)")
        expect(page.locator(f'#noc-live tr[data-alert="{alert.id}"]')).to_be_visible()
        page.screenshot(path=SHOTS / "portal-monitoring.png", full_page=True)

        page.locator(f'li.host[data-host="local"] a.chk[data-check="{check}"]').click()
        page.wait_for_url(f"{plane.url}/monitoring/check?check={check}&host=local")
        canvas = page.locator("#graph canvas").first
        expect(canvas).to_be_visible(timeout=15_000)
        box = canvas.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100, box
        summary = page.locator("#graph-summary")
        expect(summary).to_contain_text("points over the last hour")
        assert int(page.locator("#graph").get_attribute("data-points") or 0) >= 2
        expect(page.locator("#graph .u-legend")).to_contain_text("instance=")
        page.screenshot(path=SHOTS / "portal-monitoring-graph.png", full_page=True)

        page.get_by_role("link", name="last day").click()  # redrawn in place
        expect(summary).to_contain_text("points over the last day")
        assert page.url.endswith("range=1d")
        expect(page.locator("nav.spans a.on")).to_have_text("last day")
        expect(page.locator("#graph canvas").first).to_be_visible()

        page.goto(plane.url + "/monitoring/alerts")
        row = page.locator(f'tr[data-alert="{alert.id}"]')
        expect(row).to_contain_text(platform)
        expect(row).to_contain_text("responding")
        row.get_by_role("link", name=f"#{alert.id}").click()
        expect(page.get_by_role("heading", name=f"Alert #{alert.id}")).to_be_visible()
        expect(page.locator("table.changes")).to_contain_text("firing")
        page.get_by_role("link", name="graph and history").click()
        expect(page.locator(f'tr[data-alert="{alert.id}"]')).to_be_visible()
        expect(page.locator("#graph-summary")).not_to_be_empty()
    finally:
        resolve(plane, alert)


def test_the_graph_library_is_served_here(plane: ControlPlaneProcess) -> None:
    with httpx.Client(base_url=plane.url, timeout=30) as client:
        for path in ("/static/uplot/uPlot.iife.min.js", "/static/uplot/uPlot.min.css",
                     "/static/monitoring.js", "/static/monitoring.css"):
            assert client.get(path).status_code == 200, path
        assert "uPlot" in client.get("/static/uplot/uPlot.iife.min.js").text[:200]
