"""Crashes under `tenantry up --demo`, made with real SIGKILLs, heal by themselves and leave
nothing of the data dir behind (issue 11).

- the host's supervisord killed alone: the agent notices, stops what it left (those programs
  hold the ingress port and the platforms' ports), starts a new one, and the platforms serve
  from the new one's programs;
- the agent and its supervisord killed together (an OOM kill of a tree): `up` restarts the
  agent, which finds the leftovers of the dead one at its start and does the same;
- `up` itself killed with its supervisord: the next `up` finds the orphaned databases,
  apps and Caddy, stops them (databases with a fast shutdown), says so, and starts;
- after each, Ctrl-C leaves no process of the data dir running.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tenantry.core import cgroup
from tests.cli.test_up import DEMO_PLATFORMS, fresh, interrupt, readme_up  # noqa: F401
from tests.conftest import (
    ControlPlaneProcess,
    alive,
    children_of,
    curl_health,
    left_running,
    wait_until,
)

pytestmark = pytest.mark.slow


def supervisord_pid(cp: ControlPlaneProcess) -> int | None:
    try:
        pid = int((cp.data_dir / "agent" / "services" / "supervisord.pid").read_text())
        return pid if b"supervisord" in Path(f"/proc/{pid}/cmdline").read_bytes() else None
    except (OSError, ValueError):
        return None


def agent_pid(cp: ControlPlaneProcess) -> int:
    assert cp.process is not None
    for pid in children_of(cp.process.pid):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"agent" in argv and str(cp.data_dir / "agent").encode() in argv:
            return pid
    raise AssertionError("no agent under up")


def serving_from_a_new_supervisor(cp: ControlPlaneProcess, old: int, old_tree: set[int],
                                  what: str) -> float:
    def healed() -> bool:
        new = supervisord_pid(cp)
        return (new is not None and new != old and not any(map(alive, old_tree))
                and all(curl_health(cp, f"{t}.bms.localhost") for t in DEMO_PLATFORMS))

    took = wait_until(healed, 120, what, every=0.5)
    print(f"{what}: {took:.1f} s")
    return took


def told_ended(cp: ControlPlaneProcess, pid: int) -> None:
    """The end of supervisord `pid` is a PROCESS_RESTARTED event on the local host."""
    def told() -> bool:
        return any(e["kind"] == "PROCESS_RESTARTED"
                   and e["message"].startswith("supervisord on host local ended unexpectedly")
                   and f"(pid {pid} gone)" in e["message"]
                   for e in cp.cli_json("events", "--limit", "1000"))

    wait_until(told, 30, f"the end of supervisord pid {pid} told", every=0.5)


def demo_serving(cp: ControlPlaneProcess) -> ControlPlaneProcess:
    readme_up(cp)
    wait_until(lambda: all(curl_health(cp, f"{t}.bms.localhost") for t in DEMO_PLATFORMS),
               240, "the demo serving", every=0.5)
    return cp


def test_killed_supervisor_and_agent_heal_and_a_stop_leaves_nothing(
        fresh: ControlPlaneProcess) -> None:  # noqa: F811 - the fixture, imported
    cp = demo_serving(fresh)
    agent_log = cp.data_dir / "logs" / "agent.log"

    # supervisord alone
    old = supervisord_pid(cp)
    assert old is not None
    tree = set(children_of(old))
    assert len(tree) >= 5  # Caddy, node_exporter, and each platform's cluster and app
    if cgroup.hierarchy() is not None:  # and all of them are in the data dir's cgroup
        groups = cgroup.recorded(cp.data_dir)
        assert len(groups) == 1 and tree | {old} <= cgroup.members(groups[0])
    os.kill(old, signal.SIGKILL)
    serving_from_a_new_supervisor(cp, old, tree, "supervisord killed: serving from a new one")
    assert "the service manager (supervisord) is gone" in agent_log.read_text()
    told_ended(cp, old)  # seen by the agent that watched it

    # the agent and supervisord together
    old = supervisord_pid(cp)
    assert old is not None
    tree = set(children_of(old))
    os.kill(agent_pid(cp), signal.SIGKILL)
    os.kill(old, signal.SIGKILL)
    serving_from_a_new_supervisor(cp, old, tree,
                                  "agent and supervisord killed: serving from a new one")
    assert "left by an earlier run; stopping them" in agent_log.read_text()
    told_ended(cp, old)  # no agent saw it end: the next one found its pid file

    interrupt(cp)  # Ctrl-C: nothing of the data dir is left


def test_up_killed_with_its_supervisor_next_up_stops_the_leftovers(
        fresh: ControlPlaneProcess) -> None:  # noqa: F811 - the fixture, imported
    cp = demo_serving(fresh)
    assert cp.process is not None
    old = supervisord_pid(cp)
    assert old is not None
    cp.process.kill()  # up's children die with it (the API, worker and agent)
    os.kill(old, signal.SIGKILL)
    cp.process.wait(10)
    orphans = left_running(cp.data_dir)
    assert len(orphans) >= 5, orphans  # the control plane's database, clusters, apps, Caddy

    readme_up(cp)
    wait_until(lambda: all(curl_health(cp, f"{t}.bms.localhost") for t in DEMO_PLATFORMS)
               and supervisord_pid(cp) not in (None, old), 240, "the demo serving again",
               every=0.5)
    log = cp.log.read_text()
    assert "left by an earlier run that did not stop cleanly; stopping them" in log, log[-3000:]
    told = [line for line in log.splitlines() if line.startswith("tenantry:   ")]
    assert any("stopped" in line and "postgres -D" in line for line in told), told
    assert not [line for line in told if "killed" in line and "postgres" in line], told
    interrupt(cp)


def test_after_a_crash_the_platforms_serve_before_the_api_and_ctrl_c_then_stops_cleanly(
        fresh: ControlPlaneProcess) -> None:  # noqa: F811 - the fixture, imported
    """`up` and its supervisord killed; `up` started again with its API made slow. The agent,
    enrolled, starts beside the API, and its new supervisord brings every platform back
    from its program files while the API still starts. Ctrl-C at that moment is a clean
    stop: exit 0, nothing of the data dir left."""
    cp = demo_serving(fresh)
    assert cp.process is not None
    old = supervisord_pid(cp)
    assert old is not None
    cp.process.kill()
    os.kill(old, signal.SIGKILL)
    cp.process.wait(10)
    readme_up(cp, TENANTRY_TEST_DELAYS="api.start=40")
    wait_until(lambda: all(curl_health(cp, f"{t}.bms.localhost") for t in DEMO_PLATFORMS)
               and supervisord_pid(cp) not in (None, old), 35,
               "the platforms serving before the API answers", every=0.5)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{cp.url}/api/v1/health", timeout=2)
    interrupt(cp)
    assert "stopped while waiting" not in cp.log.read_text()


def test_a_killed_store_comes_back_and_the_api_says_503_meanwhile(
        fresh: ControlPlaneProcess) -> None:  # noqa: F811 - the fixture, imported
    """SIGKILL of the control plane's own PostgreSQL. `up` is made slow to start it again
    (TENANTRY_TEST_DELAYS) so that the time it is away is long enough to look at: every API
    request then answers 503 `unavailable`, never a 500, and once it is back the API, the
    worker and the agent carry on without a restart of `up`."""
    cp = fresh
    cp.extra_env["TENANTRY_TEST_DELAYS"] = "up.store_restart=6"
    cp.start()
    pidfile = cp.data_dir / "controlplane" / "pgdata" / "postmaster.pid"
    store = int(pidfile.read_text().splitlines()[0])
    with cp.api() as api:
        assert api.get("/hosts").status_code == 200
        os.kill(store, signal.SIGKILL)
        answers: list[int] = []

        def refused() -> bool:
            try:
                got = api.get("/hosts")
            except httpx.TransportError:  # a kept-alive connection closed as it was reused
                answers.append(0)
                return False
            answers.append(got.status_code)
            if got.status_code == 503:
                assert got.json()["error"]["code"] == "unavailable", got.text
                return True
            return False

        try:
            wait_until(refused, 10, "a 503 while the store is away", every=0.2)
        except Exception:
            print(cp.log.read_text()[-3000:])
            print((cp.data_dir / "logs" / "api.log").read_text()[-6000:])
            raise
        wait_until(lambda: api.get("/hosts").status_code == 200, 60, "the API back",
                   every=0.5)
        assert 500 not in answers, answers
        # The API writes again, and the agent reports again.
        made = api.post("/isvs", json={"name": "after-crash"})
        assert made.status_code in (200, 201), made.text
        wait_until(lambda: all(h["state"] == "online" for h in api.get("/hosts").json()),
                   60, "the local host online")
    # `up` says so once pg_ctl and createdb have returned, which can be a moment after the
    # API already reaches the store again.
    wait_until(lambda: "the control plane's PostgreSQL runs again" in cp.log.read_text(), 30,
               "`up` saying the store runs again")
    log = cp.log.read_text()
    assert "the control plane's PostgreSQL is not running; starting it again" in log
    assert int(pidfile.read_text().splitlines()[0]) != store
    print("worker restarts while the store was away:", log.count("worker exited"))
