"""A platform's backups page against a real control plane: its backups, window and lag, the
restore form bounded to the window (a time outside it comes back beside the field, nothing
started), a restore from the form, and another ISV's people kept out."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import ControlPlaneProcess, csrf_of, portal_login
from tests.portal.test_monitoring_pages import portal_as

pytestmark = pytest.mark.slow


def test_the_backups_page_shows_them_and_restores_from_its_form(
        plane: ControlPlaneProcess, isv: str) -> None:
    made = plane.cli_json("platform", "create", isv, "--tenant", "t1",
                          "--app", "bodyshop@1.0.0", "--wait")
    label = plane.cli_json("backup", "list", f"{isv}/t1")[0]["label"]
    page = f"/platforms/{made['id']}/backups"
    with httpx.Client(base_url=plane.url, timeout=30) as admin:
        assert portal_login(admin, plane.admin()).status_code == 303
        assert f'href="{page}"' in admin.get(f"/platforms/{made['id']}").text
        shown = admin.get(page)
        assert shown.status_code == 200
        assert label in shown.text and 'id="earliest"' in shown.text
        bounds = re.search(r'type="datetime-local" step="1" min="([^"]+)" max="([^"]+)"',
                           shown.text)
        assert bounds is not None and bounds.group(1) <= bounds.group(2)

        jobs_before = plane.cli_json("job", "list", "--platform", f"{isv}/t1")
        early = admin.post(f"{page}/restore", data={"csrf": csrf_of(shown.text),
                                                    "to_time": "2020-01-01T00:00:00"})
        assert early.status_code == 422
        assert 'id="to_time-error"' in early.text and "outside the recoverable window" in \
            early.text
        assert plane.cli_json("job", "list", "--platform", f"{isv}/t1") == jobs_before
        forged = admin.post(f"{page}/restore", data={"csrf": "x", "latest": "1"})
        assert forged.status_code in (400, 403)

        # A restore from the form runs in test_backup_browser.py, in Chromium.

    with plane.api() as api:
        other = api.post("/isvs", json={"name": f"{isv}-x"})
        assert other.status_code == 201
        stranger = portal_as(plane, api, "isv-viewer", f"{isv}-x")
        viewer = portal_as(plane, api, "isv-viewer", isv)
    try:
        assert stranger.get(page).status_code == 404
        seen = viewer.get(page)
        assert seen.status_code == 200 and 'id="restore-form"' not in seen.text
        assert viewer.post(f"{page}/restore", data={"csrf": csrf_of(seen.text),
                                                    "latest": "1"}).status_code == 403
    finally:
        stranger.close()
        viewer.close()
