"""Upgrades take a restore point before their migration runs; a failed upgrade whose
migration ran brings the database back to it (the foundation only moved the route back)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ControlPlaneProcess
from tests.platforms.test_platforms import variant

pytestmark = pytest.mark.slow


def test_a_failed_upgrade_undoes_its_migration_from_the_restore_point(
        plane: ControlPlaneProcess, isv: str, bundles: dict[str, Path], tmp_path: Path) -> None:
    plane.cli_json("platform", "create", isv, "--tenant", "t1", "--app", "bodyshop@1.0.0",
                   "--wait")
    ref, host = f"{isv}/t1", f"t1.{isv}.localhost"
    assert plane.https(host, "/api/jobs", "POST",
                       json={"registration": "RP 1", "customer": "Ana"}).status_code == 201
    # A release whose migration rewrites data, and whose web process never starts.
    bad = variant(bundles["1.1.0"], tmp_path / "bad", "1.3.0", replace={
        'web = "python -m bodyshop.server"': 'web = "python -m bodyshop.no_such_module"'})
    (bad / "bodyshop" / "migrations" / "0003_mark.sql").write_text(
        "UPDATE jobs SET customer = 'MIGRATED';\n")
    plane.cli("app", "release", isv, str(bad))

    done = plane.cli("platform", "upgrade", ref, "--app", "bodyshop@1.3.0", "--wait",
                     "--json", check=False)
    assert done.returncode == 1 and "did not start" in done.stderr, done.stderr
    shown = plane.cli_json("platform", "show", ref)
    assert (shown["state"], shown["release"]) == ("ready", "bodyshop@1.0.0")
    assert "back at restore point" in shown["error"], shown["error"]
    # The migration's write is undone; the old release serves the data as it was.
    jobs = plane.https(host, "/api/jobs").json()
    assert [(j["registration"], j["customer"]) for j in jobs] == [("RP 1", "Ana")]
    assert plane.https(host, "/health").json()["version"] == "1.0.0"
    upgrade = next(j for j in plane.cli_json("job", "list", "--platform", ref)
                   if j["kind"] == "upgrade")
    steps = plane.cli_json("job", "show", str(upgrade["id"]))["steps"]
    assert (steps[0]["name"], steps[0]["state"]) == ("restore point", "done")
    # The restore point is a backup like any other, in the list.
    assert len(plane.cli_json("backup", "list", ref)) >= 2
    # And the platform goes on: writes, and a good upgrade after the bad one.
    assert plane.https(host, "/api/jobs", "POST",
                       json={"registration": "RP 2", "customer": "Bo"}).status_code == 201
    good = plane.cli_json("platform", "upgrade", ref, "--app", "bodyshop@1.1.0", "--wait")
    assert good["release"] == "bodyshop@1.1.0"
    assert sorted(j["registration"] for j in plane.https(host, "/api/jobs").json()) == [
        "RP 1", "RP 2"]
