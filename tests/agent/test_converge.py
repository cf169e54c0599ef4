"""Convergence planning is data in, actions out: facts and a desired platform → the plan."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from tenantry.agent import converge
from tenantry.agent.services import ProgramStatus
from tenantry.agent.testing import FakeServiceManager
from tenantry.platforms.contract import DesiredPlatform, DesiredSlot, SlotReport

MANIFEST = {"name": "bodyshop", "version": "1.0.0", "processes": {"web": ["python", "-m", "x"]},
            "release_command": ["python", "-m", "x.migrate"], "health_path": "/health",
            "requirements": None, "wheels": None}
DIGEST = "sha256:" + "ab" * 32


def desired(**over: Any) -> DesiredPlatform:
    p: dict[str, Any] = {
        "id": "p1", "isv": "bms", "name": "lbh", "size": "s", "gen": 3, "running": True,
        "absent": False, "tenants": ["lbh"],
        "database": {"port": 21000, "role": "app", "dbname": "app", "password": "pw"},
        "releases": [{"id": "r1", "digest": DIGEST, "app": "bodyshop", "version": "1.0.0",
                      "manifest": MANIFEST}],
        "migrations": [{"id": "m7", "release_id": "r1"}],
        "slots": {"a": {"release_id": "r1", "ports": [21001], "running": True,
                        "after_migration": "m7"}},
        "route": None}
    p.update(over)
    return DesiredPlatform.model_validate(p)


@pytest.fixture
def fx(tmp_path: Path) -> converge.Effects:
    def no_fetch(digest: str, target: Path) -> None:
        raise AssertionError("no download expected")

    return converge.Effects(converge.HostPaths(tmp_path), FakeServiceManager(), no_fetch)


def facts(fx: converge.Effects, p: DesiredPlatform, *, programs: str = "", built: bool = False,
          migrations: dict[str, str] | None = None, marker: bool = False,
          state: str = "RUNNING", home: bool = False,
          user: bool = True) -> converge.PlatformFacts:
    """`programs` names the programs that run as wanted: 'db', 'web' or both."""
    running: dict[str, ProgramStatus] = {}
    if "db" in programs:
        spec = converge.db_program(fx.paths, p)
        running[spec.name] = ProgramStatus(spec.name, spec.digest(), state, 10)
    if "web" in programs:
        for slot, info in p.slots.items():
            for spec in converge.slot_programs(fx.paths, p, slot, info):
                running[spec.name] = ProgramStatus(spec.name, spec.digest(), state, 11)
    return converge.PlatformFacts(
        programs=running, cluster_initialized=home,
        database_marker=converge.database_marker(p) if marker else None,
        built={"r1"} if built else set(), migrations=migrations or {}, healthy_ports=set(),
        user_exists=user, dir_exists=home)


def plan(fx: converge.Effects, p: DesiredPlatform, f: converge.PlatformFacts) -> list[str]:
    return [a.description for a in converge.plan_platform(p, f, fx)]


def test_new_platform_gets_everything_in_order(fx: converge.Effects) -> None:
    p = desired()
    assert plan(fx, p, facts(fx, p)) == [
        "p1: create home and Unix user",
        "p1: create PostgreSQL cluster on port 21000",
        "p1: run PostgreSQL",
        "p1: create role and database",
        "build bodyshop@1.0.0",
        "p1: run release command of bodyshop@1.0.0",
        "p1: run p1-a-web-0",
    ]


def test_converged_platform_needs_nothing(fx: converge.Effects) -> None:
    p = desired()
    f = facts(fx, p, programs="db web", built=True, migrations={"m7": "ok"}, marker=True,
              home=True)
    assert plan(fx, p, f) == []


def test_code_whose_migration_failed_never_starts(fx: converge.Effects) -> None:
    p = desired()
    f = facts(fx, p, programs="db", built=True, migrations={"m7": "failed: boom"},
              marker=True, home=True)
    assert plan(fx, p, f) == []
    report = converge.report_platform(p, f, fx.paths, None, None)
    assert report.slots["a"] == SlotReport(state="failed", healthy=False,
                                           detail="migration m7 failed")


def test_changed_secret_restarts_the_processes_that_use_it(fx: converge.Effects) -> None:
    old = desired()
    f = facts(fx, old, programs="db web", built=True, migrations={"m7": "ok"}, marker=True,
              home=True)
    new = desired(database={"port": 21000, "role": "app", "dbname": "app",
                            "password": "rotated"})
    assert plan(fx, new, f) == ["p1: create role and database", "p1: run p1-a-web-0"]


def test_stopped_platform_stops_what_runs(fx: converge.Effects) -> None:
    p = desired(running=False)
    f = facts(fx, p, programs="db web", built=True, migrations={"m7": "ok"}, marker=True,
              home=True)
    assert plan(fx, p, f) == ["p1: stop p1-a-web-0", "p1: stop p1-db"]


def test_retired_slot_is_removed(fx: converge.Effects) -> None:
    p = desired()
    f = facts(fx, p, programs="db web", built=True, migrations={"m7": "ok"}, marker=True,
              home=True)
    p2 = desired(slots={"b": DesiredSlot(release_id="r1", ports=[21002])})
    assert plan(fx, p2, f) == ["p1: run p1-b-web-0", "p1: remove p1-a-web-0"]


def test_absent_platform_is_removed_once(fx: converge.Effects) -> None:
    p = desired(absent=True)
    assert plan(fx, p, facts(fx, p, programs="db", home=True)) == [
        "p1: remove every process, the cluster, files and user"]
    assert plan(fx, p, facts(fx, p, user=False)) == []


def test_secrets_never_show_in_a_plan_or_a_spec_repr(fx: converge.Effects) -> None:
    p = desired()
    text = " ".join(plan(fx, p, facts(fx, p)))
    spec = converge.slot_programs(fx.paths, p, "a", p.slots["a"])[0]
    assert "pw" not in text.split() and "pw@" not in repr(spec)


def test_a_port_another_program_holds_is_reported_not_fought_over(
        fx: converge.Effects) -> None:
    p = desired()
    f = facts(fx, p, programs="db", built=True, migrations={"m7": "ok"}, marker=True,
              home=True)
    f.taken_ports = {21001}
    assert plan(fx, p, f) == []
    assert converge.report_platform(p, f, fx.paths, None, None).conflicts == [21001]


def test_a_start_makes_again_the_socket_dirs_a_clean_stop_removed(tmp_path: Path) -> None:
    """supervisord starts each database before the agent's first pass: its socket dir (under
    /tmp, removed by a clean stop and by a reboot) must be there already, or PostgreSQL
    exits at once and the platform stays down until its next pass (found by
    `bench/density.py --count 100 --restart`)."""
    paths = converge.HostPaths(tmp_path / "agent")
    paths.prepare()
    try:
        (paths.platform("pa") / "pgdata").mkdir(parents=True)
        (paths.platform("pa") / "pgdata" / "PG_VERSION").write_text("15\n")
        paths.platform("pb").mkdir()  # no cluster yet: nothing to start, no socket dir
        shutil.rmtree(paths.sockets)  # what a clean stop does
        paths.prepare()
        assert paths.socket_dir("pa").is_dir()
        assert stat.S_IMODE(paths.socket_dir("pa").stat().st_mode) == 0o700
        assert not paths.socket_dir("pb").exists()
    finally:
        shutil.rmtree(paths.sockets, ignore_errors=True)
