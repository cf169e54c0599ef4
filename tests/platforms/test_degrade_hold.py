"""A ready platform turns degraded only once what its agent reports has been wrong for
DEGRADE_AFTER, and a report where all is well ends that hold, whichever API process takes
each report: `up --api-processes N` shares the agents' connections among N processes, so
one process may see a platform's first wrong report and another the next.

Each report below is judged either here or in another Python process (a real one), as two
API processes would."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tenantry.platforms.contract import DatabaseSpec, DesiredState, PlatformReport
from tests.platforms.test_fleet_costs import manifest

REPO = Path(__file__).resolve().parents[2]
PLATFORM = "p1"


@pytest.fixture(scope="module")
def store() -> Iterator[Any]:
    from tests.conftest import store_runtime

    with store_runtime("tndh-") as runtime:
        from tenantry.platforms.models import App, Host, Isv, Platform, Region, Release

        with runtime.sessions() as session:
            region = Region(id="g1", name="local")
            isv = Isv(id="i1", name="isv1")
            app = App(id="a1", isv=isv, name="app1")
            release = Release(id="r1", app=app, version="1.0.0", digest="sha256:" + "1" * 64,
                              manifest=manifest("app1"))
            session.add_all([region, isv, app, release,
                             Host(id="h1", name="local", region=region, ingress_port=8443,
                                  agent_token_hash="f" * 64),
                             Platform(id=PLATFORM, isv_id="i1", name="plat1", region_id="g1",
                                      release_id="r1", host_id="h1", state="ready",
                                      desired=DesiredState(gen=3, db=DatabaseSpec(port=21000),
                                                           running=True))])
            session.commit()
        yield runtime


def judge(data_dir: str, database: str) -> None:
    """One report of the platform, its database `database`, judged as the API judges it."""
    from tenantry.core.config import load_settings
    from tenantry.core.runtime import make_runtime
    from tenantry.platforms import hosts
    from tenantry.platforms.models import Platform

    runtime = make_runtime(load_settings(data_dir=Path(data_dir)), pool_size=1)
    try:
        with runtime.sessions() as session:
            p = session.get(Platform, PLATFORM)
            assert p is not None
            hosts._judge_health(session, p, PlatformReport(gen=3, database=database), None)
            session.commit()
    finally:
        runtime.engine.dispose()


def judge_elsewhere(store: Any, database: str) -> None:
    """The same, in another process."""
    subprocess.run([sys.executable, "-c", "import sys; from tests.platforms.test_degrade_hold "
                    "import judge; judge(sys.argv[1], sys.argv[2])",
                    str(store.settings.data_dir), database], cwd=REPO, check=True, timeout=60)


def state(store: Any) -> str:
    from tenantry.platforms.models import Platform

    with store.sessions() as session:
        p = session.get(Platform, PLATFORM)
        assert p is not None
        return p.state


def well_again(store: Any) -> None:
    judge(str(store.settings.data_dir), "ready")
    assert state(store) == "ready"


def test_a_wrong_report_seen_by_one_process_and_the_next_by_another_degrades_after_the_hold(
        store: Any) -> None:
    from tenantry.platforms.hosts import DEGRADE_AFTER

    well_again(store)
    judge(str(store.settings.data_dir), "stopped")
    assert state(store) == "ready", "held: a restart is back within a second or two"
    time.sleep(DEGRADE_AFTER.total_seconds() + 0.5)
    judge_elsewhere(store, "stopped")
    assert state(store) == "degraded", "wrong for longer than the hold, in two processes"
    well_again(store)


def test_a_well_report_in_another_process_ends_the_hold_this_one_started(store: Any) -> None:
    from tenantry.platforms.hosts import DEGRADE_AFTER

    well_again(store)
    judge(str(store.settings.data_dir), "stopped")
    judge_elsewhere(store, "ready")
    time.sleep(DEGRADE_AFTER.total_seconds() + 0.5)
    judge(str(store.settings.data_dir), "stopped")
    assert state(store) == "ready", "a new fault waits the hold again"
