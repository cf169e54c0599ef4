"""A platform's backups page in a real browser (Debian's Chromium): the backups with their
files snapshot, the time picker bounded to the recoverable window (the browser itself
refuses a time before it), and a restore from the form followed live on its job page."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ControlPlaneProcess, wait_until
from tests.portal.test_browser import SHOTS, browser, page  # noqa: F401 - the same fixtures

pytestmark = pytest.mark.slow


def test_restore_from_the_backups_page(plane: ControlPlaneProcess, isv: str,
                                       page: Page) -> None:  # noqa: F811
    made = plane.cli_json("platform", "create", isv, "--tenant", "t1",
                          "--app", "bodyshop@1.0.0", "--wait")
    label = plane.cli_json("backup", "list", f"{isv}/t1")[0]["label"]
    jobs_before = plane.cli_json("job", "list", "--platform", f"{isv}/t1")

    page.goto(f"{plane.url}/platforms/{made['id']}/backups")
    account = plane.admin()
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(account.password)
    page.get_by_label("Authenticator code").fill(account.code())
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{plane.url}/platforms/{made['id']}/backups")
    row = page.locator("#backups tbody tr").filter(has_text=label)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("full")
    expect(row.locator("td").nth(6)).to_contain_text(re.compile(r"^1 \("))  # files snapshot

    picker = page.locator("input[name=to_time]")
    low, high = picker.get_attribute("min"), picker.get_attribute("max")
    assert low and high and low <= high
    expect(picker).to_have_value(high)  # the latest second, by default
    picker.fill("2020-01-01T00:00:00")
    page.get_by_role("button", name="Restore to this time").click()
    assert page.evaluate("document.querySelector('input[name=to_time]').validity"
                         ".rangeUnderflow") is True
    expect(page).to_have_url(re.compile(r"/backups$"))  # the browser did not send it
    assert plane.cli_json("job", "list", "--platform", f"{isv}/t1") == jobs_before

    picker.fill(high)
    page.get_by_role("button", name="Restore to this time").click()
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    job_id = page.url.rsplit("/", 1)[1]
    wait_until(lambda: plane.cli_json("job", "show", job_id)["state"] in ("succeeded",
                                                                          "failed"),
               180, "the restore job")
    job = plane.cli_json("job", "show", job_id)
    assert job["state"] == "succeeded", job["error"]
    steps = page.locator("table.steps tbody tr")
    expect(steps.filter(has_text="safety backup")).to_have_count(1)
    # The page follows the job by itself (htmx polls it) until every step is done.
    expect(steps.filter(has_text="restore").first.locator(".badge")).to_have_text(
        "done", timeout=120_000)
    expect(steps.filter(has_text="health").locator(".badge")).to_have_text(
        "done", timeout=120_000)
    page.screenshot(path=SHOTS / "portal-restore-job.png", full_page=True)
    job_id = page.url.rsplit("/", 1)[1]
    assert plane.cli_json("job", "show", job_id)["state"] == "succeeded"
