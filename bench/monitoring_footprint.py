"""Monitoring footprint: CPU and memory of the monitoring stack with K platforms on one host.

Issue 7's target: with 20 platforms, the monitoring stack's CPU ≤ 10 % of the machine's 2
cores averaged over 5 minutes, and its memory per platform stated beside the platform's own.

A fresh `tenantry up` (monitoring on, as by default), bodyshop 1.0.0 released, K platforms
created a few at a time; then the bench waits until Prometheus has every target healthy
(/api/v1/targets: node, agent, probe_proxy, postgres and one probe per platform) and every
platform's `tenantry:check_value{check="responding"}` and `{check="db_up"}` is 1. Then it
samples /proc every few seconds for D seconds, asking Prometheus nothing meanwhile:

- CPU: utime+stime (all threads) plus cutime+cstime (children it reaped, such as a
  postmaster's exited backends) summed over each program and its descendants, from
  /proc/PID/stat; a program restarted mid-window counts from its new start;
- memory: PSS, private (USS) and RSS from /proc/PID/smaps_rollup.

The stack is Prometheus, Alertmanager and blackbox_exporter (children of `up`, their command
lines name the data dir) and node_exporter and postgres_exporter (programs of the agent's
supervisord). The agent (which serves its /metrics in-process), the API (which serves the
five HTTP service-discovery documents, one request a second) and the worker (which polls
Prometheus and Alertmanager every 3 s) have a monitoring share that cannot be told apart
from their other work by /proc; so after the window Prometheus is stopped (SIGSTOP, no
scrapes, probes or discovery) for a quiet window, and the difference is their share.

A platform's own memory is measured as bench/density.py does (its processes, grouped by
its Unix user `tp-<id>`), less the postgres_exporter's session in its cluster, which is
counted on the monitoring side. `--compare` first measures the same way with no platform,
so the cost of one more platform is measured, not just averaged.

    .venv/bin/python bench/monitoring_footprint.py [--platforms 20] [--seconds 300]
        [--compare] [--quiet 60] [--short] [--report]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import signal
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ControlPlaneProcess,
    append_report,
    create_many,
    machine_facts,
    md_table,
    other_tenantry_ups,
    running_plane,
    setup_isv,
    short_tmp,
)

CORES_TARGET = 2  # the machine
TARGET_PCT = 10.0  # of CORES_TARGET cores
CLK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
STACK = ("prometheus", "alertmanager", "blackbox_exporter", "node_exporter",
         "postgres_exporter")
SHARED = ("agent", "api", "worker")  # control-plane processes with a monitoring share
INDUCED = ("caddy", "platforms", "pg_sessions")  # what probes and scrapes make others do
BINARIES = {"prometheus": "prometheus", "prometheus-alertmanager": "alertmanager",
            "prometheus-blackbox-exporter": "blackbox_exporter",
            "prometheus-node-exporter": "node_exporter",
            "prometheus-postgres-exporter": "postgres_exporter", "caddy": "caddy"}
# postgres_exporter's session in a platform's cluster: the superuser over the Unix socket
PG_SESSION = "postgres: postgres postgres [local]"


# ---------------------------------------------------------------- /proc


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    uid: int
    argv: tuple[str, ...]
    cpu: float  # seconds: its own run time (to the ns) + its reaped children's (in ticks)
    start: int  # clock ticks after boot


@dataclass
class Snapshot:
    at: float  # monotonic
    uptime: int  # clock ticks after boot
    procs: dict[int, Proc]
    kids: dict[int, list[int]]

    def tree(self, root: int) -> list[int]:
        out, todo = [], [root]
        while todo:
            p = todo.pop()
            if p in self.procs:
                out.append(p)
                todo.extend(self.kids.get(p, ()))
        return out


def _own_cpu(pid: str, stat: list[str]) -> float:
    """Seconds the process's live threads have run. schedstat counts every ns (per thread, so
    summed over its tasks); utime + stime count the clock ticks it happened to be running at,
    so a program that runs 3 ms per scrape can show 0 over 20 s. Falls back to the ticks where
    schedstat is not there."""
    try:
        return sum(int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0])
                   for t in os.listdir(f"/proc/{pid}/task")) / 1e9
    except (OSError, IndexError, ValueError):
        return (int(stat[11]) + int(stat[12])) / CLK


def scan() -> Snapshot:
    uptime = int(float(Path("/proc/uptime").read_text().split()[0]) * CLK)
    procs: dict[int, Proc] = {}
    kids: dict[int, list[int]] = defaultdict(list)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            uid = os.stat(f"/proc/{name}").st_uid
        except OSError:
            continue
        f = stat.rsplit(")", 1)[1].split()  # f[0] is field 3 (state)
        p = Proc(int(name), int(f[1]), uid, tuple(a.decode(errors="replace") for a in argv if a),
                 _own_cpu(name, f) + (int(f[13]) + int(f[14])) / CLK, int(f[19]))
        procs[p.pid] = p
        kids[p.ppid].append(p.pid)
    return Snapshot(time.monotonic(), uptime, procs, kids)


@dataclass(frozen=True)
class Mem:
    """KiB."""

    pss: int = 0
    private: int = 0
    rss: int = 0

    def __add__(self, other: Mem) -> Mem:
        return Mem(self.pss + other.pss, self.private + other.private, self.rss + other.rss)


def smaps(pid: int) -> Mem:
    rss = pss = private = 0
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return Mem()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "Rss":
            rss = int(value.split()[0])
        elif key == "Pss":
            pss = int(value.split()[0])
        elif key in ("Private_Clean", "Private_Dirty"):
            private += int(value.split()[0])
    return Mem(pss, private, rss)


def user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# ---------------------------------------------------------------- which process is what


@dataclass(frozen=True)
class Where:
    up: int
    data_dir: str
    supervisord: int


@dataclass
class Classified:
    roots: dict[str, list[int]]  # group → its top processes (each counted with descendants)
    platform_of: dict[int, str]  # platform root → platform id


def classify(snap: Snapshot, where: Where) -> Classified:
    roots: dict[str, list[int]] = defaultdict(list)
    platform_of: dict[int, str] = {}
    for pid in snap.kids.get(where.up, ()):
        p = snap.procs[pid]
        if not p.argv or where.data_dir not in " ".join(p.argv):
            continue
        group = BINARIES.get(Path(p.argv[0]).name)
        if group is None:
            group = next((g for g, word in (("api", "serve-api"), ("worker", "serve-worker"),
                                            ("agent", "agent")) if word in p.argv), None)
        if group is not None:
            roots[group].append(pid)
    for pid in snap.kids.get(where.supervisord, ()):
        p = snap.procs[pid]
        name = user(p.uid)
        if name.startswith("tp-"):
            roots["platforms"].append(pid)
            platform_of[pid] = name[3:]
            roots["pg_sessions"] += [c for c in snap.tree(pid)
                                     if " ".join(snap.procs[c].argv).startswith(PG_SESSION)]
        elif p.argv and (group := BINARIES.get(Path(p.argv[0]).name)) is not None:
            roots[group].append(pid)
    return Classified(dict(roots), platform_of)


# ---------------------------------------------------------------- the meter


@dataclass
class Window:
    label: str
    platforms: int
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # seconds
    pids: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    mem: dict[str, list[Mem]] = field(default_factory=lambda: defaultdict(list))
    restarts: list[str] = field(default_factory=list)
    first: PlatformMemory | None = None  # the platforms' memory as the window began
    last: PlatformMemory | None = None  # and as it ended
    end_classes: Classified | None = None

    def core_pct(self, *groups: str) -> float:
        """CPU as % of one core, averaged over the window."""
        return 100 * sum(self.cpu.get(g, 0.0) for g in groups) / self.seconds

    def last_mem(self, *groups: str) -> Mem:
        total = Mem()
        for g in groups:
            if self.mem.get(g):
                total += self.mem[g][-1]
        return total

    def max_pss(self, group: str) -> int:
        return max((m.pss for m in self.mem.get(group, [])), default=0)


def _sums(snap: Snapshot, classes: Classified) -> dict[str, dict[int, float]]:
    return {g: {r: sum(snap.procs[p].cpu for p in snap.tree(r)) for r in rs}
            for g, rs in classes.roots.items()}


def measure(where: Where, window: Window, seconds: float, every: float = 5.0) -> Window:
    """Sample every `every` s for `seconds`; CPU per group from the differences between
    consecutive samples, memory of the stack and the shared processes at each sample."""
    prev = scan()
    prev_classes = classify(prev, where)
    prev_sums = _sums(prev, prev_classes)
    start = prev.at
    window.first = platform_memory(prev, prev_classes)
    while True:
        remaining = start + seconds - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(every, remaining))
        snap = scan()
        classes = classify(snap, where)
        sums = _sums(snap, classes)
        for group, now in sums.items():
            before = prev_sums.get(group, {})
            for root, total in now.items():
                if root in before:
                    window.cpu[group] += max(0.0, total - before[root])
                elif snap.procs[root].start >= prev.uptime:  # started in this interval
                    window.cpu[group] += total
                    if group in STACK + SHARED:
                        window.restarts.append(f"{group} started anew as pid {root}")
            window.pids[group].update(now)
        for group in STACK + SHARED + ("caddy",):
            window.mem[group].append(sum((smaps(p) for r in classes.roots.get(group, ())
                                          for p in snap.tree(r)), Mem()))
        prev, prev_classes, prev_sums = snap, classes, sums
    window.seconds = prev.at - start
    window.last, window.end_classes = platform_memory(prev, prev_classes), prev_classes
    return window


@dataclass
class PlatformMemory:
    """Per platform id: its own memory (without the exporter's session), the exporter's
    session in its cluster, its number of processes; and PSS KiB by kind of process."""

    own: dict[str, Mem]
    session: dict[str, Mem]
    nprocs: dict[str, int]
    kinds: dict[str, int]

    def mean_pss(self) -> float:
        return statistics.fmean(m.pss for m in self.own.values()) if self.own else 0.0


def kind(argv: tuple[str, ...]) -> str:
    """`postgres: checkpointer`, `postgres: app app 127.0.0.1(5432) idle` → a session."""
    line = " ".join(argv)
    if line.startswith("postgres: "):
        words = line.split()
        if "[local]" in line or "(" in line:
            return f"PostgreSQL session of `{words[1]}`"
        return "PostgreSQL " + " ".join(w for w in words[1:3] if w.isalpha())
    return Path(argv[0]).name if argv else "?"


def platform_memory(snap: Snapshot, classes: Classified) -> PlatformMemory:
    sessions = set(classes.roots.get("pg_sessions", ()))
    mem = PlatformMemory(defaultdict(Mem), defaultdict(Mem), defaultdict(int),
                         defaultdict(int))
    for root, pid_ in classes.platform_of.items():
        for p in snap.tree(root):
            m = smaps(p)
            if p in sessions:
                mem.session[pid_] += m
                continue
            mem.own[pid_] += m
            mem.nprocs[pid_] += 1
            mem.kinds[kind(snap.procs[p].argv)] += m.pss
    return mem


@contextmanager
def stopped(pids: list[int]) -> Iterator[None]:
    """SIGSTOP the processes, SIGCONT them afterwards whatever happens."""
    for p in pids:
        os.kill(p, signal.SIGSTOP)
    try:
        yield
    finally:
        for p in pids:
            with suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)


# ---------------------------------------------------------------- Prometheus


def prometheus_url(cp: ControlPlaneProcess) -> str:
    return str(json.loads((cp.data_dir / "monitoring" / "stack.json").read_text())["prometheus"])


def targets_state(url: str) -> dict[str, list[str]]:
    r = httpx.get(f"{url}/api/v1/targets", params={"state": "active"}, timeout=5)
    r.raise_for_status()
    out: dict[str, list[str]] = defaultdict(list)
    for t in r.json()["data"]["activeTargets"]:
        out[t["labels"]["job"]].append(t["health"])
    return dict(out)


def count_ones(url: str, check: str) -> int:
    r = httpx.get(f"{url}/api/v1/query", timeout=5, params={
        "query": f'count(tenantry:check_value{{check="{check}"}} == 1)'})
    r.raise_for_status()
    result = r.json()["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def wait_monitored(cp: ControlPlaneProcess, k: int, timeout: float = 240) -> float:
    """Until every target is up and each of the k platforms responds and has its database
    up in Prometheus's eyes; the seconds it took."""
    url = prometheus_url(cp)
    want = {"node": 1, "agent": 1, "probe_proxy": 1} | ({"postgres": 1} if k else {})
    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < timeout:
        try:
            state = targets_state(url)
            healthy = all(len(state.get(j, [])) == n and set(state[j]) == {"up"}
                          for j, n in want.items())
            responding = count_ones(url, "responding") if k else 0
            db_up = count_ones(url, "db_up") if k else 0
            last = f"targets {state}, responding {responding}/{k}, db_up {db_up}/{k}"
            if healthy and responding == k and db_up == k:
                return time.monotonic() - t0
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(2)
    raise TimeoutError(f"Prometheus not watching all {k} platforms within {timeout:.0f} s: "
                       f"{last}")


def prometheus_own(url: str) -> dict[str, float]:
    """Head series and samples appended so far, from Prometheus's own /metrics."""
    wanted = ("prometheus_tsdb_head_series", "prometheus_tsdb_head_samples_appended_total")
    out: dict[str, float] = defaultdict(float)
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            out[name] += float(line.rsplit(" ", 1)[1])
    return dict(out)


def disk_usage(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of the files under path."""
    apparent = allocated = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                st = os.stat(os.path.join(d, f))
            except OSError:
                continue
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


# ---------------------------------------------------------------- platforms


def metrics_scan_cost(scans: int = 20) -> tuple[float, int]:
    """CPU seconds of one rogue scan (what each scrape of the agent's /metrics does besides
    rendering a snapshot), run in this process over the same /proc, and the number of
    processes scanned. A fake clock keeps the scanner from answering from its last scan."""
    from tenantry.agent.rogues import Known, RogueScanner

    ticks = iter(range(0, 10**6, 5))
    scanner = RogueScanner(clock=lambda: float(next(ticks)))
    scanner.scan(Known())  # the first one has no previous scan to compare with
    t0 = time.process_time()
    for _ in range(scans):
        scanner.scan(Known())
    return (time.process_time() - t0) / scans, len(scanner._ticks)  # noqa: SLF001


# ---------------------------------------------------------------- the run


@dataclass
class Phase:
    window: Window
    wait: float  # seconds until Prometheus watched everything
    tsdb: tuple[int, int] = (0, 0)
    series: float = 0.0
    samples_per_s: float = 0.0
    scan_cost: float = 0.0  # CPU seconds of one rogue scan (see metrics_scan_cost)
    scanned: int = 0


def run_phase(cp: ControlPlaneProcess, where: Where, k: int, seconds: float,
              settle: float) -> Phase:
    took = wait_monitored(cp, k)
    print(f"Prometheus watches everything ({k} platforms) after {took:.0f} s; settle "
          f"{settle:.0f} s, then {seconds:.0f} s of samples ...", flush=True)
    time.sleep(settle)
    url = prometheus_url(cp)
    before = prometheus_own(url)
    window = measure(where, Window(f"K={k}", k), seconds)
    after = prometheus_own(url)
    appended = "prometheus_tsdb_head_samples_appended_total"
    return Phase(window, took, disk_usage(cp.data_dir / "monitoring" / "data" / "prometheus"),
                 after.get("prometheus_tsdb_head_series", 0.0),
                 (after.get(appended, 0.0) - before.get(appended, 0.0)) / window.seconds,
                 *metrics_scan_cost())


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def results(main: Phase, quiet: Window | None, base: Phase | None) -> dict[str, Any]:
    w = main.window
    k = max(1, w.platforms)
    assert w.last is not None
    sessions = w.last.session
    out: dict[str, Any] = {
        "platforms": w.platforms, "seconds": round(w.seconds, 1), "cores": CORES,
        "programs": {g: {"pids": sorted(w.pids.get(g, ())),
                         "cpu_seconds": w.cpu.get(g, 0.0),
                         "cpu_pct_core": w.core_pct(g),
                         "pss_mib": w.last_mem(g).pss / 1024}
                     for g in STACK + SHARED + INDUCED},
        "stack_cpu_pct_core": w.core_pct(*STACK),
        "stack_cpu_pct_of_target_cores": w.core_pct(*STACK) / CORES_TARGET,
        "stack_pss_mib": w.last_mem(*STACK).pss / 1024,
        "stack_pss_mib_per_platform": w.last_mem(*STACK).pss / 1024 / k,
        "platform_pss_mib_mean": w.last.mean_pss() / 1024,
        "exporter_session_pss_mib_mean": (statistics.fmean(m.pss for m in sessions.values())
                                          / 1024 if sessions else 0.0),
        "tsdb_bytes": main.tsdb[1], "head_series": main.series,
        "samples_per_s": main.samples_per_s, "restarts": w.restarts,
        "metrics_scan_ms": main.scan_cost * 1000, "processes_on_machine": main.scanned,
    }
    out["target_met"] = out["stack_cpu_pct_of_target_cores"] <= TARGET_PCT
    if quiet is not None:
        out["quiet_cpu_pct_core"] = {g: quiet.core_pct(g) for g in STACK + SHARED + INDUCED}
    if base is not None:
        b = base.window
        out["baseline"] = {"stack_cpu_pct_core": b.core_pct(*STACK),
                           "stack_pss_mib": b.last_mem(*STACK).pss / 1024}
    return out


def report(args: argparse.Namespace, main: Phase, quiet: Window | None, base: Phase | None,
           notes: list[str]) -> tuple[str, bool]:
    w = main.window
    k = w.platforms
    assert w.first is not None and w.last is not None
    first, last = w.first, w.last
    sessions, nprocs = last.session, last.nprocs
    stack_pct = w.core_pct(*STACK) / CORES_TARGET
    met = stack_pct <= TARGET_PCT
    b = base.window if base is not None else None

    def cpu_row(label: str, *groups: str) -> list[str]:
        pids = sorted(p for g in groups for p in w.pids.get(g, ()))
        row = [label, (", ".join(map(str, pids)) if len(pids) <= 5 else f"{len(pids)} processes")
               or "—", f"{sum(w.cpu.get(g, 0.0) for g in groups):.2f}",
               f"{w.core_pct(*groups):.2f}", f"{w.core_pct(*groups) / CORES_TARGET:.2f}"]
        if b is not None:
            row += [f"{b.core_pct(*groups):.2f}",
                    f"{(w.core_pct(*groups) - b.core_pct(*groups)) / k:.3f}"]
        if quiet is not None:
            row += [f"{quiet.core_pct(*groups):.2f}",
                    f"{w.core_pct(*groups) - quiet.core_pct(*groups):+.2f}"]
        return row

    head = ["process", "pid(s)", f"CPU s in {w.seconds:.0f} s", "% of one core",
            f"% of {CORES_TARGET} cores"]
    if b is not None:
        head += ["K=0: % of one core", "marginal per platform, % of one core"]
    if quiet is not None:
        head += ["Prometheus stopped: % of one core", "difference (its monitoring share)"]
    rows = [cpu_row(g, g) for g in STACK]
    rows.append(cpu_row("**the stack**", *STACK))
    rows += [cpu_row("agent (with its /metrics)", "agent"),
             cpu_row("API (with the SD documents)", "api"),
             cpu_row("worker (with its Prometheus/Alertmanager sync)", "worker"),
             cpu_row("Caddy (the probes pass through it)", "caddy"),
             cpu_row(f"the {k} platforms (app + PostgreSQL)", "platforms"),
             cpu_row("of which postgres_exporter's sessions", "pg_sessions")]
    cpu_table = md_table(head, rows)

    stack_mem = w.last_mem(*STACK)
    own = [m.pss for m in last.own.values()]
    sess = sum((m for m in sessions.values()), Mem())
    mhead = ["process", "PSS MiB (end)", "PSS max MiB", "private MiB", "RSS MiB"]
    if b is not None:
        mhead += ["K=0: PSS MiB", "marginal per platform, PSS MiB"]

    def mem_row(label: str, *groups: str) -> list[str]:
        m = w.last_mem(*groups)
        row = [label, mib(m.pss), mib(sum(w.max_pss(g) for g in groups)), mib(m.private),
               mib(m.rss)]
        if b is not None:
            row += [mib(b.last_mem(*groups).pss),
                    f"{(m.pss - b.last_mem(*groups).pss) / 1024 / k:.2f}"]
        return row

    mrows = [mem_row(g, g) for g in STACK] + [mem_row("**the stack**", *STACK)]
    mrows.append(["postgres_exporter's sessions in the platforms' clusters", mib(sess.pss), "",
                  mib(sess.private), mib(sess.rss)] + (["", ""] if b is not None else []))
    mrows += [mem_row("agent (with its /metrics)", "agent"), mem_row("API", "api"),
              mem_row("worker", "worker")]
    mem_table = md_table(mhead, mrows)
    per_platform = md_table(
        ["per platform (MiB PSS)", "mean", "min", "max"],
        [["the platform's own (app + PostgreSQL, without the exporter's session)",
          mib(statistics.fmean(own)), mib(min(own)), mib(max(own))],
         ["the stack / K", mib(stack_mem.pss / k), "", ""],
         ["postgres_exporter's session in its cluster",
          mib(sess.pss / max(1, len(sessions))), "", ""]]
        + ([["marginal stack PSS per platform (K=0 → K)",
             f"{(stack_mem.pss - b.last_mem(*STACK).pss) / 1024 / k:.2f}", "", ""]]
           if b is not None else []))
    kinds = md_table(
        ["a platform's processes, by kind", "PSS MiB per platform, window start",
         "at its end"],
        [[name, mib(first.kinds.get(name, 0) / k), mib(last.kinds.get(name, 0) / k)]
         for name in sorted(set(first.kinds) | set(last.kinds))]
        + [["**all**", mib(first.mean_pss()), mib(last.mean_pss())]])
    tsdb_rows = [[f"K={k} after {w.seconds:.0f} s", f"{main.tsdb[0] / 2**20:.1f}",
                  f"{main.tsdb[1] / 2**20:.1f}", f"{main.series:.0f}",
                  f"{main.samples_per_s:.0f}"]]
    if base is not None:
        tsdb_rows.insert(0, [f"K=0 after {b.seconds:.0f} s", f"{base.tsdb[0] / 2**20:.1f}",
                             f"{base.tsdb[1] / 2**20:.1f}", f"{base.series:.0f}",
                             f"{base.samples_per_s:.0f}"])
    tsdb = md_table(["Prometheus TSDB", "files MiB (apparent)", "allocated MiB",
                     "head series", "samples appended / s"], tsdb_rows)

    share = ""
    if quiet is not None:
        def diff(*groups: str) -> float:
            return sum(max(0.0, w.core_pct(g) - quiet.core_pct(g)) for g in groups)

        with_shares = (w.core_pct(*STACK) + diff("agent", "api")) / CORES_TARGET
        with_worker = with_shares + diff("worker") / CORES_TARGET
        share = (f"With the agent's and the API's monitoring shares (the differences in the "
                 f"last column below, {diff('agent', 'api'):.2f} % of one core) the total is "
                 f"**{with_shares:.2f} % of {CORES_TARGET} cores**; with the worker's too "
                 f"(an upper bound, see below) {with_worker:.2f} %. The API serves one SD "
                 f"request a second, so its share is about {10 * diff('api'):.1f} ms of CPU "
                 "per request.")
    scan_pct = 100 * main.scan_cost / 5
    share += (f" Each scrape of the agent's /metrics runs a rogue scan of every process on the "
              f"machine ({main.scanned} here): run in the bench's own process, one took "
              f"{1000 * main.scan_cost:.1f} ms of CPU, i.e. {scan_pct:.2f} % of one core at one "
              "scrape every 5 s; the agent's other work hides it in the difference below.")
    body = f"""
{k} platforms of size `s` (bodyshop 1.0.0, one tenant each) on a fresh `tenantry up` with
its monitoring stack (5 s scrape and evaluation interval). Prometheus had every target
healthy and every platform responding with its database up after {main.wait:.0f} s; after
{args.settle:.0f} s more, /proc was sampled every 5 s for **{w.seconds:.0f} s** (Prometheus
asked nothing meanwhile). CPU = utime+stime+cutime+cstime of each program and its
descendants, from /proc/PID/stat; memory from /proc/PID/smaps_rollup at the end of the
window. The machine has {CORES} cores; the target is stated for {CORES_TARGET}.

**The stack used {w.core_pct(*STACK):.2f} % of one core = {stack_pct:.2f} % of
{CORES_TARGET} cores (target ≤ {TARGET_PCT:g} %): {'PASS' if met else 'FAIL'}.**
{share}

{cpu_table}

The last two columns come from a quiet window of {quiet.seconds if quiet else 0:.0f} s right
after, with Prometheus stopped (SIGSTOP: no scrape, probe, discovery or rule evaluation):
what a process does less then is what monitoring costs it, within the noise of a short
window. The worker's difference is an upper bound (its calls to the stopped Prometheus
wait for their 5 s time-out, so it does fewer rounds of everything); the platforms'
includes the app answering the probe's `/health` and the exporter's queries.

Memory of the stack: **{mib(stack_mem.pss)} MiB PSS for {k} platforms, {mib(stack_mem.pss / k)}
MiB per platform, beside the platform's own {mib(statistics.fmean(own))} MiB PSS**
({min(nprocs.values())}–{max(nprocs.values())} processes each).

{mem_table}

{per_platform}

{kinds}

{tsdb}
"""
    if w.restarts:
        notes.append("restarted during the window: " + "; ".join(w.restarts))
    if notes:
        body += "\nNotes:\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    return body, met


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--platforms", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--compare", action="store_true",
                    help="measure with no platform first (for the same --seconds)")
    ap.add_argument("--quiet", type=float, default=60.0,
                    help="seconds with Prometheus stopped afterwards (0: none)")
    ap.add_argument("--settle", type=float, default=15.0)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--short", action="store_true",
                    help="2 platforms, 20 s, 8 s quiet; no report unless --report")
    ap.add_argument("--report", action="store_true", help="append to docs/benchmarks.md")
    args = ap.parse_args()
    if args.short:
        args.platforms, args.seconds, args.quiet, args.settle = 2, 20.0, 8.0, 5.0
    write_report = args.report or not args.short
    if args.platforms < 1:
        ap.error("--platforms must be at least 1")
    # SIGTERM (a test's time-out) goes through the finally below like Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    facts = machine_facts()
    root = short_tmp("tnb-monf-")
    notes: list[str] = []
    base = quiet = None
    with running_plane(root) as cp:
        assert cp.process is not None
        others = other_tenantry_ups([cp.process.pid])
        if others:
            notes.append(f"{len(others)} other `tenantry up` process(es) ran on the machine "
                         "meanwhile (other people's work): CPU times are per process and "
                         "unaffected, but PSS shares the programs' binaries with their "
                         "copies (see the private column)")
        load0 = os.getloadavg()
        setup_isv(cp, root)
        sup = int((cp.data_dir / "agent" / "services" / "supervisord.pid").read_text())
        where = Where(cp.process.pid, str(cp.data_dir), sup)
        if args.compare:
            notes.append("the K=0 window came first: Prometheus's memory grows with time as "
                         "well as with series (its head block keeps up to 2–3 h of samples), "
                         "so the marginal PSS per platform is an upper bound")
            base = run_phase(cp, where, 0, args.seconds, args.settle)
            print(f"K=0: stack {base.window.core_pct(*STACK):.2f} % of one core", flush=True)
        print(f"creating {args.platforms} platforms, {args.concurrency} at a time ...",
              flush=True)
        t0 = time.monotonic()
        create_many(cp, args.platforms, args.concurrency, "m")
        print(f"created in {time.monotonic() - t0:.0f} s", flush=True)
        main_phase = run_phase(cp, where, args.platforms, args.seconds, args.settle)
        if args.quiet > 0:
            prom = sorted(main_phase.window.end_classes.roots.get("prometheus", ())
                          if main_phase.window.end_classes else ())
            with stopped(prom):
                time.sleep(2)  # scrapes and probes under way finish
                quiet = measure(where, Window("quiet", args.platforms), args.quiet)
        load1 = os.getloadavg()
        notes.append(f"load average (1 min) {load0[0]:.2f} at start, {load1[0]:.2f} at end")

    missing = [g for g in STACK if not main_phase.window.pids.get(g)]
    if missing:
        notes.append("not found: " + ", ".join(missing))
    body, met = report(args, main_phase, quiet, base, notes)
    print(body)
    print("RESULT " + json.dumps(results(main_phase, quiet, base)))
    if write_report:
        append_report("Monitoring footprint (bench/monitoring_footprint.py)", facts, body)
    if missing:
        return 2
    return 0 if met or args.short else 1


if __name__ == "__main__":
    sys.exit(main())
