"""The agent's /metrics: the text format, rendering it ahead of the scrapes, per-slot process
counts, expected clusters, and rogue processes (fake /proc readings in, rogues out; then the
real /proc, and its cost)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tenantry.agent import converge, exporters, releases
from tenantry.agent.backups import BackupMetrics
from tenantry.agent.dbusage import memory_budget
from tenantry.agent.metrics import (
    AgentMetrics,
    ExpectedDatabase,
    Family,
    HostSnapshot,
    MetricsServer,
    SlotProcesses,
    families,
    render,
    slot_processes,
)
from tenantry.agent.monitor import HostMonitoring
from tenantry.agent.rogues import (
    Known,
    Rogue,
    RogueReport,
    RogueScanner,
    Thresholds,
    is_tenantry,
    parse_stat,
)
from tenantry.agent.services import ProgramStatus
from tenantry.agent.testing import FakeServiceManager
from tenantry.platforms.contract import DesiredPlatform
from tests.agent.test_converge import DIGEST, MANIFEST, desired
from tests.agent.test_exporters import host, running
from tests.conftest import ControlPlaneProcess, wait_until

# ---------------------------------------------------------------- the text format


def test_label_values_and_help_are_escaped() -> None:
    text = render([Family("m", 'help with \\ and\nnewline "kept"', "gauge",
                          [({"a": 'back\\slash "quoted"\nnext'}, 1)])])
    assert text == ('# HELP m help with \\\\ and\\nnewline "kept"\n'
                    "# TYPE m gauge\n"
                    'm{a="back\\\\slash \\"quoted\\"\\nnext"} 1\n')


@pytest.mark.parametrize(("value", "text"), [
    (3, "3"), (3.0, "3"), (0.25, "0.25"), (1e20, "1e+20"), (float("nan"), "NaN"),
    (float("inf"), "+Inf"), (float("-inf"), "-Inf"), (1714000000.123, "1714000000.123")])
def test_sample_values(value: float, text: str) -> None:
    assert render([Family("m", "h", "gauge", [({}, value)])]).splitlines()[-1] == f"m {text}"


EXPECTED_TEXT = """\
# HELP tenantry_agent_heartbeat_timestamp_seconds Unix time of the agent's last successful \
report to the control plane (0: none since it started).
# TYPE tenantry_agent_heartbeat_timestamp_seconds gauge
tenantry_agent_heartbeat_timestamp_seconds 1714000000.5
# HELP tenantry_platform_processes App processes running in a platform slot.
# TYPE tenantry_platform_processes gauge
tenantry_platform_processes{isv="bms",platform="bms/lbh",slot="a"} 2
tenantry_platform_processes{isv="bms",platform="bms/dlg",slot="b"} 0
# HELP tenantry_platform_processes_expected App processes that should run in a platform slot \
(0 when stopped).
# TYPE tenantry_platform_processes_expected gauge
tenantry_platform_processes_expected{isv="bms",platform="bms/lbh",slot="a"} 3
tenantry_platform_processes_expected{isv="bms",platform="bms/dlg",slot="b"} 0
# HELP tenantry_database_expected A platform cluster the agent runs; `server` as \
postgres_exporter labels it.
# TYPE tenantry_database_expected gauge
tenantry_database_expected{server="/srv/tnt-1/p1:21000",isv="bms",platform="bms/lbh"} 1
tenantry_database_expected{server="/srv/tnt-1/p2:21001",isv="bms",platform="bms/dlg"} 1
# HELP tenantry_database_running 1 while the cluster's program runs, 0 while it is down or \
restarting: a database down is known from here at once, whatever the exporter does.
# TYPE tenantry_database_running gauge
tenantry_database_running{server="/srv/tnt-1/p1:21000",isv="bms",platform="bms/lbh"} 1
tenantry_database_running{server="/srv/tnt-1/p2:21001",isv="bms",platform="bms/dlg"} 0
# HELP tenantry_database_memory_bytes Memory of a cluster's processes (PSS of the postmaster \
and its children).
# TYPE tenantry_database_memory_bytes gauge
tenantry_database_memory_bytes{server="/srv/tnt-1/p1:21000",isv="bms",platform="bms/lbh"} 41943040
# HELP tenantry_database_memory_budget_bytes What a cluster's size is set up to use: \
shared_buffers, work_mem per connection, maintenance_work_mem and a base.
# TYPE tenantry_database_memory_budget_bytes gauge
tenantry_database_memory_budget_bytes{server="/srv/tnt-1/p1:21000",isv="bms",platform="bms/lbh"} \
109051904
tenantry_database_memory_budget_bytes{server="/srv/tnt-1/p2:21001",isv="bms",platform="bms/dlg"} \
109051904
# HELP tenantry_database_wal_free_bytes Bytes free for the cluster's owner on the filesystem \
of its pg_wal.
# TYPE tenantry_database_wal_free_bytes gauge
tenantry_database_wal_free_bytes{server="/srv/tnt-1/p1:21000",isv="bms",platform="bms/lbh"} \
5368709120
# HELP tenantry_backup_last_timestamp_seconds Unix time the platform's newest database \
backup finished.
# TYPE tenantry_backup_last_timestamp_seconds gauge
tenantry_backup_last_timestamp_seconds{isv="bms",platform="bms/lbh"} 1714000000.25
# HELP tenantry_backup_archive_pending_segments WAL segments written but not yet in the \
backup repository.
# TYPE tenantry_backup_archive_pending_segments gauge
tenantry_backup_archive_pending_segments{isv="bms",platform="bms/lbh"} 2
tenantry_backup_archive_pending_segments{isv="bms",platform="bms/dlg"} 0
# HELP tenantry_backup_archive_lag_seconds How long the oldest WAL segment not yet in the \
repository has waited (0: none waits).
# TYPE tenantry_backup_archive_lag_seconds gauge
tenantry_backup_archive_lag_seconds{isv="bms",platform="bms/lbh"} 12.5
tenantry_backup_archive_lag_seconds{isv="bms",platform="bms/dlg"} 0
# HELP tenantry_backup_check_ok 1 when the platform's latest verify or restore test \
passed, 0 when it failed.
# TYPE tenantry_backup_check_ok gauge
tenantry_backup_check_ok{isv="bms",platform="bms/lbh",check="verify"} 1
tenantry_backup_check_ok{isv="bms",platform="bms/lbh",check="restore-test"} 0
# HELP tenantry_platform_restarts_total Unexpected exits of a platform's programs \
(supervisord started them again) since the agent started.
# TYPE tenantry_platform_restarts_total counter
tenantry_platform_restarts_total{isv="bms",platform="bms/lbh"} 3
tenantry_platform_restarts_total{isv="bms",platform="bms/dlg"} 0
# HELP tenantry_host_restarts_total Unexpected exits of the host's own programs (Caddy, the \
exporters) since the agent started.
# TYPE tenantry_host_restarts_total counter
tenantry_host_restarts_total 1
# HELP tenantry_rogue_processes Processes of no platform and no known service over the CPU \
or memory threshold.
# TYPE tenantry_rogue_processes gauge
tenantry_rogue_processes 7
# HELP tenantry_rogue_process_cpu_ratio CPU used by a top rogue process since the agent's \
previous look, in cores.
# TYPE tenantry_rogue_process_cpu_ratio gauge
tenantry_rogue_process_cpu_ratio{pid="4242",comm="xmr \\"miner\\""} 1.9876
# HELP tenantry_rogue_process_rss_bytes Resident memory of a top rogue process.
# TYPE tenantry_rogue_process_rss_bytes gauge
tenantry_rogue_process_rss_bytes{pid="4242",comm="xmr \\"miner\\""} 8192
"""


def test_the_whole_page() -> None:
    snapshot = HostSnapshot(
        slots=(SlotProcesses("bms", "bms/lbh", "a", running=2, expected=3),
               SlotProcesses("bms", "bms/dlg", "b", running=0, expected=0)),
        # p1's cluster runs; p2's is down: no memory or WAL space, its budget still said
        databases=(ExpectedDatabase("/srv/tnt-1/p1:21000", "bms", "bms/lbh",
                                    memory_bytes=40 * 2**20,
                                    memory_budget_bytes=memory_budget("s"),
                                    wal_free_bytes=5 * 2**30),
                   ExpectedDatabase("/srv/tnt-1/p2:21001", "bms", "bms/dlg", running=False,
                                    memory_budget_bytes=memory_budget("s"))),
        backups=(BackupMetrics("bms", "bms/lbh", last_backup_at=1714000000.25,
                               archive_pending=2, archive_lag=12.5,
                               checks=(("verify", True), ("restore-test", False))),
                 BackupMetrics("bms", "bms/dlg", last_backup_at=None, archive_pending=0,
                               archive_lag=0.0)),
        platforms=(("p1", "bms", "bms/lbh"), ("p2", "bms", "bms/dlg")))
    rogues = RogueReport(count=7, top=(Rogue(4242, 'xmr "miner"', 1.9876, 8192),))
    # p1's app twice and its database once; Caddy (the host's own) once; p2 never
    restarts = {"p1-a-web-0": 2, "p1-db": 1, "ingress": 1}
    assert render(families(snapshot, 1714000000.5, rogues, restarts)) == EXPECTED_TEXT


def test_an_empty_host_still_says_heartbeat_restarts_and_rogues() -> None:
    text = render(families(HostSnapshot(), 0.0, RogueReport()))
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert samples == ["tenantry_agent_heartbeat_timestamp_seconds 0",
                       "tenantry_host_restarts_total 0", "tenantry_rogue_processes 0"]


def test_exits_are_counted_per_program() -> None:
    metrics = AgentMetrics()
    metrics.count_exits(["p1-a-web-0", "p1-a-web-0", "ingress"])
    metrics.count_exits(["p1-db"])
    assert metrics.restarts == {"p1-a-web-0": 2, "ingress": 1, "p1-db": 1}


def test_the_server_answers_metrics_only_and_survives_a_failing_render() -> None:
    pages = iter(["m 1\n"])

    def text() -> str:
        return next(pages)  # the second call raises StopIteration

    server = MetricsServer("127.0.0.1", 0, text)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        ok = httpx.get(f"{url}/metrics")
        assert (ok.status_code, ok.text) == (200, "m 1\n")
        assert ok.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert httpx.get(f"{url}/").status_code == 404
        assert httpx.get(f"{url}/metrics").status_code == 500
    finally:
        server.close()


# ---------------------------------------------------------------- rendered ahead of the scrapes


class CountingScanner(RogueScanner):
    """A scanner of an empty fake /proc that counts its scans."""

    def __init__(self) -> None:
        super().__init__(FakeProc({}))
        self.scans = 0

    def scan(self, known: Known) -> RogueReport:
        self.scans += 1
        return super().scan(known)


@pytest.fixture
def agent_metrics() -> Iterator[Callable[..., AgentMetrics]]:
    """Makes `AgentMetrics` (with a `CountingScanner`); closes them all at the end and
    checks that no refresher thread of theirs is left."""
    before = set(threading.enumerate())
    made: list[AgentMetrics] = []

    def make(**kwargs: Any) -> AgentMetrics:
        made.append(AgentMetrics(CountingScanner(), **kwargs))
        return made[-1]

    yield make
    for metrics in made:
        metrics.close()
    left = [t for t in set(threading.enumerate()) - before if t.name == "metrics-refresh"]
    assert not left, "close() left the refresher running"


def snap(name: str) -> HostSnapshot:
    """A host of one platform, `bms/<name>`."""
    return HostSnapshot(slots=(SlotProcesses("bms", f"bms/{name}", "a", 1, 1),))


def platforms_in(page: str) -> list[str]:
    return re.findall(r'^tenantry_platform_processes\{isv="[^"]*",platform="([^"]*)"', page,
                      re.M)


def heartbeat_in(page: str) -> float:
    return float(re.findall(r"^tenantry_agent_heartbeat_timestamp_seconds (\S+)$", page,
                            re.M)[0])


def scrape(metrics: AgentMetrics, limit: float) -> tuple[str, float]:
    """`text()` on a thread of its own, as the server runs it: the page and the seconds it
    took. Fails after `limit` seconds rather than hang the test."""
    page: list[str] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            page.append(metrics.text())
        except BaseException as exc:  # raised again on the test's thread
            error.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(limit)
    took = time.monotonic() - started
    if error:
        raise error[0]
    assert page, f"the scrape still runs after {limit} s"
    return page[0], took


class Stalling:
    """A source that answers `bms/old` once, then hangs (a loaded host's supervisord or
    /proc) until `release` is set, then answers `bms/new`."""

    def __init__(self) -> None:
        self.calls = 0
        self.stuck = threading.Event()  # set once a call hangs
        self.release = threading.Event()

    def __call__(self) -> HostSnapshot:
        self.calls += 1
        if self.calls == 1:
            return snap("old")
        self.stuck.set()
        self.release.wait(30)
        return snap("new")


def test_a_slow_source_does_not_slow_a_scrape(
        agent_metrics: Callable[..., AgentMetrics]) -> None:
    """Prometheus gives the agent 2 s; at 300 platforms scrapes that made the snapshot
    themselves took 0.76 s on average, 2.25 s at most."""
    metrics = agent_metrics()
    metrics.REFRESH = 0.1
    source = Stalling()
    metrics.use(source)
    try:
        assert platforms_in(scrape(metrics, 5)[0]) == ["bms/old"]
        source.stuck.wait(5)  # the refresher's next look hangs
        page, took = scrape(metrics, 2)
        assert source.stuck.is_set() and took < 0.5, f"{took:.2f} s"
        assert platforms_in(page) == ["bms/old"], "the previous page"
        metrics.use(source)  # a change while the refresher still hangs
        page, took = scrape(metrics, 2)
        assert took < metrics.WAIT + 0.5, f"waited {took:.2f} s for the change"
        assert platforms_in(page) == ["bms/old"]
    finally:
        source.release.set()
    assert platforms_in(scrape(metrics, 5)[0]) == ["bms/new"], "unstuck, it goes on"


def test_the_heartbeat_is_fresh_at_every_scrape_even_when_the_page_is_old(
        agent_metrics: Callable[..., AgentMetrics]) -> None:
    """"Host silent" reads the heartbeat: it must not wait for the next refresh."""
    metrics = agent_metrics()
    metrics.REFRESH = 0.1
    source = Stalling()
    metrics.use(source)
    try:
        assert heartbeat_in(scrape(metrics, 5)[0]) == 0
        source.stuck.wait(5)  # the page stays as it is until released
        for beat in (1714000001.5, 1714000003.5):
            metrics.heartbeat = beat
            page, _ = scrape(metrics, 2)
            assert heartbeat_in(page) == beat
            assert platforms_in(page) == ["bms/old"]
    finally:
        source.release.set()


def test_scrapes_share_the_agents_look_at_the_host(
        agent_metrics: Callable[..., AgentMetrics]) -> None:
    """The snapshot and the rogue scan cost in proportion to time, not to scrapes."""
    metrics = agent_metrics()
    calls = 0

    def source() -> HostSnapshot:
        nonlocal calls
        calls += 1
        return snap("a")

    metrics.use(source)
    started = time.monotonic()
    for _ in range(50):
        assert platforms_in(metrics.text()) == ["bms/a"]
    looks = 1 + math.ceil((time.monotonic() - started) / metrics.REFRESH)  # 2 when quick
    assert isinstance(metrics.scanner, CountingScanner)
    assert calls <= looks and metrics.scanner.scans <= looks, (calls, metrics.scanner.scans)


def test_a_change_shows_at_the_next_scrape_made_off_the_scrapes_thread(
        agent_metrics: Callable[..., AgentMetrics]) -> None:
    metrics = agent_metrics()
    made_on: list[threading.Thread] = []

    def source(name: str) -> Callable[[], HostSnapshot]:
        def make() -> HostSnapshot:
            made_on.append(threading.current_thread())
            return snap(name)
        return make

    metrics.use(source("old"))
    assert platforms_in(metrics.text()) == ["bms/old"]
    metrics.use(source("new"))
    assert platforms_in(metrics.text()) == ["bms/new"]
    assert threading.current_thread() not in made_on, "the scrape made a snapshot itself"


def test_a_snapshot_set_by_hand_shows_at_the_next_scrape(
        agent_metrics: Callable[..., AgentMetrics]) -> None:
    metrics = agent_metrics()
    metrics.snapshot = snap("a")
    assert platforms_in(metrics.text()) == ["bms/a"]
    metrics.snapshot = snap("b")
    assert platforms_in(metrics.text()) == ["bms/b"]


def test_nobody_scrapes_nothing_is_spent(agent_metrics: Callable[..., AgentMetrics]) -> None:
    metrics = agent_metrics(idle_after=0.3)
    metrics.REFRESH = 0.05
    calls, last = 0, time.monotonic()

    def source() -> HostSnapshot:
        nonlocal calls, last
        calls, last = calls + 1, time.monotonic()
        return snap("a")

    metrics.use(source)
    assert calls == 0, "no scrape yet: no look"
    metrics.text()
    scraped = time.monotonic()
    wait_until(lambda: calls >= 2, 5, "a look between two scrapes", every=0.01)
    wait_until(lambda: time.monotonic() - max(last, scraped + metrics.idle_after) > 0.25, 5,
               "the looks to stop", every=0.05)
    stopped = calls
    time.sleep(1)  # (an absence: nothing to wait for)
    assert calls == stopped, "looks went on with nobody scraping"
    assert platforms_in(metrics.text()) == ["bms/a"]
    assert calls == stopped + 1, "a scrape after an idle spell gets a new look"


def test_a_failing_source_keeps_the_previous_page_and_the_refresher(
        agent_metrics: Callable[..., AgentMetrics], caplog: pytest.LogCaptureFixture) -> None:
    metrics = agent_metrics()
    metrics.use(lambda: snap("good"))
    assert platforms_in(metrics.text()) == ["bms/good"]

    def broken() -> HostSnapshot:
        raise OSError("supervisord went away")

    metrics.use(broken)
    page, _ = scrape(metrics, 5)
    assert platforms_in(page) == ["bms/good"]
    assert "supervisord went away" in caplog.text
    metrics.use(lambda: snap("back"))
    assert platforms_in(metrics.text()) == ["bms/back"], "the refresher survived"


def test_stopping_the_monitoring_ends_the_refresher(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    mon = HostMonitoring(converge.HostPaths(tmp_path), FakeServiceManager(), host="127.0.0.1")
    mon.start()
    try:
        page = httpx.get(f"http://127.0.0.1:{mon.ports().agent}/metrics", timeout=5)
        assert page.status_code == 200
        assert heartbeat_in(page.text) == 0
    finally:
        mon.stop()
    left = [t for t in set(threading.enumerate()) - before if t.name == "metrics-refresh"]
    assert not left, "the refresher outlived the agent's stop"


# ---------------------------------------------------------------- processes per slot

WORKER = {**MANIFEST, "processes": {"web": ["python", "-m", "x"], "jobs": ["python", "-m", "j"]}}


def _built(paths: converge.HostPaths) -> None:
    marker = releases.release_dir(paths.releases, DIGEST) / releases.BUILT
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def _migrated(paths: converge.HostPaths, pid: str, result: str) -> None:
    paths.platform(pid).mkdir(parents=True, exist_ok=True)
    (paths.platform(pid) / "migrations.json").write_text(json.dumps({"m7": result}))


def _two_web(pid: str, **over: Any) -> DesiredPlatform:
    release = {"id": "r1", "digest": DIGEST, "app": "bodyshop", "version": "1.0.0",
               "manifest": WORKER}
    return desired(id=pid, releases=[release],
                   slots={"a": {"release_id": "r1", "ports": [21001, 21002], "running": True,
                                "after_migration": "m7"}}, **over)


@pytest.mark.parametrize(("case", "built", "migration", "over", "expected"), [
    ("running, built, migrated: 2 web + 1 jobs", True, "ok", {}, 3),
    ("migration not run yet", True, None, {}, 0),
    ("migration failed", True, "failed: boom", {}, 0),
    ("release not built yet", False, "ok", {}, 0),
    ("platform stopped", True, "ok", {"running": False}, 0),
])
def test_expected_processes_follow_the_plan(tmp_path: Path, case: str, built: bool,
                                            migration: str | None, over: dict[str, Any],
                                            expected: int) -> None:
    paths = converge.HostPaths(tmp_path)
    if built:
        _built(paths)
    if migration:
        _migrated(paths, "p1", migration)
    programs = running("p1-db", "p1-a-web-0", "p1-a-web-1", "p1-a-jobs-0")
    programs["p1-a-web-1"] = ProgramStatus("p1-a-web-1", "d", "BACKOFF", None)
    found = slot_processes(paths, [_two_web("p1", isv="bms", name="lbh", **over)], programs)
    assert found == [SlotProcesses("bms", "bms/lbh", "a", running=2, expected=expected)], case


def test_a_retired_slot_still_running_counts_and_absent_platforms_do_not(tmp_path: Path,
                                                                        ) -> None:
    paths = converge.HostPaths(tmp_path)
    _built(paths)
    _migrated(paths, "p1", "ok")
    programs = running("p1-a-web-0", "p1-b-web-0", "p2-a-web-0")
    found = slot_processes(paths, [desired(id="p1"), desired(id="p2", absent=True)], programs)
    assert found == [SlotProcesses("bms", "bms/lbh", "a", running=1, expected=1),
                     SlotProcesses("bms", "bms/lbh", "b", running=1, expected=0)]


# ---------------------------------------------------------------- expected clusters


def test_a_cluster_is_expected_once_seen_running_or_failed_until_its_platform_stops(
        tmp_path: Path) -> None:
    mon = HostMonitoring(converge.HostPaths(tmp_path), FakeServiceManager(), host="127.0.0.1")
    p1, p2, p3 = desired(id="p1"), desired(id="p2"), desired(id="p3")

    def expected(programs: dict[str, ProgramStatus], *ps: DesiredPlatform) -> list[str]:
        return [d.server.rsplit("/", 1)[1]
                for d in mon.snapshot(host(*ps), programs).databases]

    starting = running("p2-db", state="STARTING")
    assert expected({**running("p1-db"), **starting, **running("p3-db", state="FATAL")},
                    p1, p2, p3) == ["p1:21000", "p3:21000"], "new p2 is not down: starting"
    assert expected({**running("p1-db", state="STARTING"), **starting}, p1, p2, p3) == [
        "p1:21000"], "p1 restarting after a crash: still expected (and down)"
    assert expected(running("p1-db"), desired(id="p1", running=False)) == [], "stopped"
    assert expected(running("p1-db", state="STARTING"), p1) == [], "started again: new"


# ---------------------------------------------------------------- rogue processes


@dataclass
class P:
    pid: int
    comm: str
    ppid: int = 1
    ticks: int = 0  # utime + stime, at 100 Hz
    start: int = 0  # ticks after boot
    rss: int = 0  # pages of 4 KiB
    uid: int = 0
    argv: tuple[str, ...] = ()
    flags: int = 0x400100

    def stat(self) -> str:
        rest = ["S", self.ppid, 1, 1, 0, -1, self.flags, 0, 0, 0, 0, self.ticks, 0, 0, 0, 20, 0,
                1, 0, self.start, 1000, self.rss, *[0] * 30]
        return f"{self.pid} ({self.comm}) " + " ".join(map(str, rest))


@dataclass
class FakeProc:
    procs: dict[int, P]
    now: float = 1000.0  # seconds since boot
    clock_ticks: int = 100
    page_size: int = 4096
    reads: list[int] = field(default_factory=list)

    def pids(self) -> list[int]:
        return sorted(self.procs)

    def stat(self, pid: int) -> str:
        if pid not in self.procs:
            raise FileNotFoundError(pid)
        return self.procs[pid].stat()

    def uid(self, pid: int) -> int:
        return self.procs[pid].uid

    def cmdline(self, pid: int) -> list[str]:
        self.reads.append(pid)
        return list(self.procs[pid].argv)

    def uptime(self) -> float:
        return self.now


GIB = (1 << 30) // 4096
PLATFORM_UID = 1001
BUSY = 100 * 900  # 900 s of CPU in 1000 s since boot: 0.9 of a core


def host_processes() -> dict[int, P]:
    procs = [
        P(1, "systemd", ppid=0, ticks=500, argv=("/sbin/init",)),
        P(2, "kthreadd", ppid=0, flags=0x208040),
        P(3, "kworker/0:1", ppid=2, ticks=BUSY, flags=0x4208060),
        P(100, "python", ticks=BUSY, argv=("python", "-m", "tenantry.cli.run", "agent")),
        P(101, "pip", ppid=100, ticks=BUSY, rss=2 * GIB),
        P(200, "supervisord", ticks=10),
        P(201, "postgres", ppid=200, ticks=BUSY, uid=PLATFORM_UID),
        P(202, "caddy", ppid=200, ticks=BUSY),
        P(300, "tenantry", ticks=BUSY, argv=("/usr/local/bin/tenantry", "api")),
        P(301, "sh", ppid=300, ticks=BUSY, argv=("sh", "-c", "x")),
        P(400, "cron", ticks=100, rss=1000),
        P(401, "xmrig", ticks=BUSY, uid=1000, argv=("./xmrig",)),
        P(402, "java", ticks=10, rss=3 * GIB, argv=("java", "-jar", "big.jar")),
        P(403, "bash", ticks=BUSY, uid=PLATFORM_UID, argv=("bash",)),
        P(404, "python3", ticks=BUSY, argv=("python3", "-m", "tenantryx")),
        P(405, "defunct", ticks=0, rss=0),
    ]
    return {p.pid: p for p in procs}


KNOWN = Known(roots=frozenset({100, 200}), uids=frozenset({PLATFORM_UID}))


class Clock:
    def __init__(self) -> None:
        self.t = 50.0

    def __call__(self) -> float:
        return self.t


def test_parse_stat_takes_comm_up_to_the_last_parenthesis() -> None:
    st = parse_stat(P(7, "a) (b c", ppid=3, ticks=12, start=99, rss=5).stat())
    assert (st.pid, st.comm, st.ppid, st.cpu_ticks, st.start_ticks, st.rss_pages) == (
        7, "a) (b c", 3, 12, 99, 5)
    me = parse_stat(Path(f"/proc/{os.getpid()}/stat").read_text())
    assert (me.pid, me.ppid) == (os.getpid(), os.getppid())


@pytest.mark.parametrize(("argv", "ours"), [
    (["/usr/local/bin/tenantry", "up"], True),
    ([".venv/bin/python", "-m", "tenantry.cli.run", "worker"], True),
    (["/usr/bin/python3", "/opt/t/.venv/bin/tenantry", "agent"], True),
    (["python3", "-m", "tenantryx"], False),
    (["python3", "/home/me/tenantry/app.py"], False),
    ([], False),
])
def test_which_command_lines_are_tenantry(argv: list[str], ours: bool) -> None:
    assert is_tenantry(argv) is ours


def test_rogues_are_the_unknown_processes_over_a_threshold() -> None:
    """Over the thresholds: the kernel thread, the agent and its pip, the cluster and the
    ingress under supervisord, tenantry's API and its shell, a platform user's shell, and
    the look-alike `tenantryx`. Only the last, the miner and the big java are rogues."""
    proc = FakeProc(host_processes())
    report = RogueScanner(proc, clock=Clock()).scan(KNOWN)
    assert report == RogueReport(count=3, top=(
        Rogue(402, "java", 0.0001, 3 << 30),  # 3x its threshold
        Rogue(401, "xmrig", 0.9, 0),  # 1.8x
        Rogue(404, "python3", 0.9, 0),
    ))
    assert set(proc.reads) == {300, 301, 401, 402, 404, 1}, \
        "command lines are read only up the candidates' ancestry, outside known trees"


def test_cpu_is_averaged_since_the_previous_scan() -> None:
    proc, clock = FakeProc(host_processes()), Clock()
    scanner = RogueScanner(proc, clock=clock)
    scanner.scan(KNOWN)
    clock.t += 5
    proc.now += 5
    proc.procs[401].ticks += 100 * 2  # 2 s of CPU in 5 s: 0.4, under 0.5
    proc.procs[404].ticks += 100 * 5  # a full core
    proc.procs[500] = P(500, "new", ticks=100 * 3, start=int(100 * (proc.now - 4)))  # 3 s/4 s
    proc.procs[404].rss = 0
    report = scanner.scan(KNOWN)
    assert [(r.pid, r.cpu_ratio) for r in report.top] == [(402, 0.0), (404, 1.0), (500, 0.75)]
    assert report.count == 3


def test_a_reused_pid_is_a_new_process() -> None:
    proc, clock = FakeProc({9: P(9, "old", ticks=0, start=0)}), Clock()
    scanner = RogueScanner(proc, clock=clock)
    scanner.scan(Known())
    clock.t += 5
    proc.now += 5
    proc.procs[9] = P(9, "new", ticks=100 * 4, start=int(100 * (proc.now - 4)))
    assert scanner.scan(Known()).top == (Rogue(9, "new", 1.0, 0),)


def test_only_the_top_five_are_named_and_scans_too_close_share_a_result() -> None:
    procs = {pid: P(pid, f"hog{pid}", uid=1000, ticks=BUSY + pid * 100)
             for pid in range(10, 17)}
    proc, clock = FakeProc(procs), Clock()
    scanner = RogueScanner(proc, clock=clock)
    report = scanner.scan(Known())
    assert report.count == 7
    assert [r.pid for r in report.top] == [16, 15, 14, 13, 12]
    del proc.procs[16]
    clock.t += 0.5
    assert scanner.scan(Known()) is report
    clock.t += 0.6
    proc.now += 1.1
    for hog in proc.procs.values():
        hog.ticks += 110  # a full core since the first scan
    assert scanner.scan(Known()).count == 6


def test_a_process_that_vanishes_mid_scan_is_skipped() -> None:
    class Vanishing(FakeProc):
        def uid(self, pid: int) -> int:
            raise FileNotFoundError(pid)

    proc = Vanishing({5: P(5, "short", uid=1000, ticks=BUSY)})
    assert RogueScanner(proc, clock=Clock()).scan(Known()).count == 0


def test_thresholds_are_settings() -> None:
    procs = {5: P(5, "warm", uid=1000, ticks=100 * 300, rss=GIB // 2)}  # 0.3 core, 512 MiB
    assert RogueScanner(FakeProc(procs), clock=Clock()).scan(Known()).count == 0
    lower = Thresholds(cpu_ratio=0.25, rss_bytes=1 << 40)
    assert RogueScanner(FakeProc(procs), lower, clock=Clock()).scan(Known()).count == 1


# ---------------------------------------------------------------- on the real /proc


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; every one is killed by its PID at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        child.kill()
    for child in started:
        child.wait(timeout=10)


def test_a_real_big_process_is_a_rogue_unless_it_is_ours(
        children: list[subprocess.Popen[bytes]]) -> None:
    """By memory, not CPU: a CPU share depends on what else the machine runs meanwhile."""
    big = subprocess.Popen([sys.executable, "-c",
                            "import time; b = b'x' * (400 << 20); time.sleep(60)"])
    children.append(big)
    limit = Thresholds(cpu_ratio=1000, rss_bytes=300 << 20)

    def top(known: Known) -> tuple[set[int], int]:
        report = RogueScanner(thresholds=limit).scan(known)
        return {r.pid for r in report.top}, report.count

    deadline = time.monotonic() + 15
    while True:
        pids, count = top(Known())
        if big.pid in pids or count > 5:  # (more than 5 big strangers: it may be sixth)
            break
        assert time.monotonic() < deadline, "the 400 MiB process was never a rogue"
        time.sleep(0.2)
    assert big.pid not in top(Known(roots=frozenset({os.getpid()})))[0], "ours is not"


def test_with_20_platforms_a_refresh_costs_under_20_ms_and_a_scrape_under_1_ms(
        children: list[subprocess.Popen[bytes]],
        agent_metrics: Callable[..., AgentMetrics]) -> None:
    """About what 20 platforms add to a host: 20 clusters of ~6 processes, 2-3 app
    processes each, plus the system's own. A refresh (the rogue scan and the rendering; the
    snapshot is given) runs every few seconds while scraped; a scrape only serves it."""
    for _ in range(200):
        children.append(subprocess.Popen(["sleep", "60"]))
    metrics = agent_metrics()
    metrics.snapshot = HostSnapshot(
        slots=tuple(SlotProcesses("isv", f"isv/p{i}", s, 2, 2) for i in range(20)
                    for s in "ab"),
        databases=tuple(ExpectedDatabase(f"/srv/tnt-1/p{i}:{21000 + i}", "isv", f"isv/p{i}")
                        for i in range(20)),
        known=Known(roots=frozenset({os.getpid()})))
    clock = Clock()
    metrics.scanner = RogueScanner(clock=clock)
    best = float("inf")
    for _ in range(5):  # CPU time, the cost itself: other tests may crowd the machine
        clock.t += 5
        started = time.thread_time()
        metrics.make_body()
        best = min(best, time.thread_time() - started)
    assert len(os.listdir("/proc")) > 200
    assert best < 0.020, f"a refresh: {best * 1000:.1f} ms"
    assert len(platforms_in(metrics.text())) == 40  # (the first scrape waits for a page)
    best = float("inf")
    for _ in range(5):
        started = time.thread_time()
        metrics.text()
        best = min(best, time.thread_time() - started)
    assert best < 0.001, f"a scrape: {best * 1000:.2f} ms"


# ---------------------------------------------------------------- the real agent


@pytest.mark.slow
def test_the_local_agent_serves_metrics_runs_exporters_and_reports_them(
        plane: ControlPlaneProcess, isv: str) -> None:
    """`tenantry up`'s own agent, end to end: a new platform's cluster is expected under the
    very `server` the real postgres_exporter gives it, its web process counts, the node
    exporter answers, and the control plane stores where to scrape."""
    made = plane.cli_json("platform", "create", isv, "--tenant", "t1", "--app",
                          "bodyshop@1.0.0", "--region", "local", "--wait")  # up's own host
    agent_dir = plane.data_dir / "agent"
    ports = exporters.MonitoringPorts.load(agent_dir / exporters.PORTS_FILE)
    assert ports is not None
    socket_dir = str(converge.HostPaths(agent_dir).socket_dir(made["id"]))
    platform = f"{isv}/{made['name']}"

    def agent_page() -> str:
        return httpx.get(f"http://127.0.0.1:{ports.agent}/metrics", timeout=5).text

    def server() -> str | None:
        found = re.search(rf'^tenantry_database_expected\{{server="({re.escape(socket_dir)}'
                          rf':\d+)",isv="{re.escape(isv)}",platform="{re.escape(platform)}"\}} 1$',
                          agent_page(), re.M)
        return found.group(1) if found else None

    def exported() -> set[str]:
        try:
            page = httpx.get(f"http://127.0.0.1:{ports.postgres}/metrics", timeout=10).text
        except httpx.HTTPError:
            return set()
        return set(re.findall(r'^pg_settings_max_connections\{server="([^"]+)"\}', page, re.M))

    wait_until(server, 15, "the agent expecting the new cluster")
    wait_until(lambda: server() in exported(), 15, "the exporter's series for it")
    page = agent_page()
    labels = f'isv="{isv}",platform="{platform}",slot="a"'
    assert f"tenantry_platform_processes{{{labels}}} 1" in page
    assert f"tenantry_platform_processes_expected{{{labels}}} 1" in page
    beat = float(re.findall(r"^tenantry_agent_heartbeat_timestamp_seconds (\S+)$", page,
                            re.M)[0])
    assert time.time() - beat < 30
    node = httpx.get(f"http://127.0.0.1:{ports.node}/metrics", timeout=10)
    assert "node_cpu_seconds_total" in node.text

    def stored() -> dict[str, str]:
        with psycopg.connect(host=str(plane.data_dir / "controlplane" / "run"),
                             user="tenantry", dbname="tenantry") as conn:
            row = conn.execute("SELECT observed FROM hosts WHERE name = 'local'").fetchone()
        assert row is not None
        doc = row[0] if isinstance(row[0], dict) else json.loads(row[0])
        return dict(doc.get("monitoring", {}))

    wait_until(lambda: stored() == {"agent": f"127.0.0.1:{ports.agent}",
                                    "node": f"127.0.0.1:{ports.node}",
                                    "postgres": f"127.0.0.1:{ports.postgres}"}, 15,
               "the host's scrape targets in the control plane")
