"""The agent's own /metrics, in Prometheus text format 0.0.4.

What only the agent knows: when it last reached the control plane, how many app processes
each platform slot runs against how many it should, which clusters it runs (so a cluster
missing from postgres_exporter's series is "down", not "gone"), and rogue processes.

A scrape does no work of its own: while Prometheus scrapes, a background thread of
`AgentMetrics` makes a `HostSnapshot` every `REFRESH` seconds (supervisord's view, clusters'
memory and WAL space, backups), takes the rogue scan's latest result (a scan every
`ROGUE_SCAN` seconds) and renders them; a scrape serves
the latest rendering plus the heartbeat, rendered then. So a scrape never waits on
supervisord, /proc or the control plane, except after a change, for at most `WAIT`.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from tenantry.agent import converge, releases
from tenantry.agent.backups import BackupMetrics
from tenantry.agent.rogues import Known, Rogue, RogueReport, RogueScanner
from tenantry.agent.services import ProgramStatus
from tenantry.core.errors import TenantryError
from tenantry.platforms.contract import DesiredPlatform, DesiredSlot

log = logging.getLogger("tenantry.agent")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class SlotProcesses:
    isv: str
    platform: str  # ISV/NAME
    slot: str
    running: int
    expected: int


@dataclass(frozen=True)
class ExpectedDatabase:
    server: str  # as postgres_exporter labels the cluster's series
    isv: str
    platform: str
    running: bool = True  # its program runs (the service manager's word)
    memory_bytes: int | None = None  # PSS of the postmaster and its children
    memory_budget_bytes: int | None = None  # what its size is set up to use
    wal_free_bytes: int | None = None  # free on pg_wal's filesystem


@dataclass(frozen=True)
class HostSnapshot:
    slots: tuple[SlotProcesses, ...] = ()
    databases: tuple[ExpectedDatabase, ...] = ()
    backups: tuple[BackupMetrics, ...] = ()
    known: Known = field(default_factory=Known)
    platforms: tuple[tuple[str, str, str], ...] = ()  # (id, isv, ISV/NAME) on the host


# ---------------------------------------------------------------- the text format


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    type: str
    samples: Sequence[tuple[Mapping[str, str], float]]


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if float(v).is_integer() and abs(v) < 2**53 else repr(float(v))


def render(families: Iterable[Family]) -> str:
    lines = []
    for fam in families:
        lines += [f"# HELP {fam.name} {_escape_help(fam.help)}", f"# TYPE {fam.name} {fam.type}"]
        for labels, value in fam.samples:
            text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
            lines.append(f"{fam.name}{{{text}}} {_value(value)}" if text
                         else f"{fam.name} {_value(value)}")
    return "\n".join(lines) + "\n"


def families(snapshot: HostSnapshot, heartbeat: float, rogues: RogueReport,
             restarts: Mapping[str, int] | None = None) -> list[Family]:
    """All of /metrics, the heartbeat first. `restarts`: unexpected exits since the agent
    started, by program (supervisord's name: `<platform id>-…` for a platform's)."""
    return [heartbeat_family(heartbeat), *host_families(snapshot, rogues, restarts)]


def heartbeat_family(heartbeat: float) -> Family:
    return Family("tenantry_agent_heartbeat_timestamp_seconds",
                  "Unix time of the agent's last successful report to the control plane "
                  "(0: none since it started).", "gauge", [({}, heartbeat)])


def host_families(snapshot: HostSnapshot, rogues: RogueReport,
                  restarts: Mapping[str, int] | None = None) -> list[Family]:
    """Every family but the heartbeat (`restarts` as for `families`): what the refresher
    renders ahead of the scrapes."""
    restarts = restarts or {}
    ours = {pid for pid, _, _ in snapshot.platforms}

    def restarted(pid: str) -> int:
        return sum(n for program, n in restarts.items() if program.split("-", 1)[0] == pid)

    def slot(s: SlotProcesses) -> dict[str, str]:
        return {"isv": s.isv, "platform": s.platform, "slot": s.slot}

    def rogue(r: Rogue) -> dict[str, str]:
        return {"pid": str(r.pid), "comm": r.comm}

    def of(b: BackupMetrics) -> dict[str, str]:
        return {"isv": b.isv, "platform": b.platform}

    def db(d: ExpectedDatabase) -> dict[str, str]:
        return {"server": d.server, "isv": d.isv, "platform": d.platform}

    return [
        Family("tenantry_platform_processes", "App processes running in a platform slot.",
               "gauge", [(slot(s), s.running) for s in snapshot.slots]),
        Family("tenantry_platform_processes_expected",
               "App processes that should run in a platform slot (0 when stopped).",
               "gauge", [(slot(s), s.expected) for s in snapshot.slots]),
        Family("tenantry_database_expected",
               "A platform cluster the agent runs; `server` as postgres_exporter labels it.",
               "gauge", [(db(d), 1) for d in snapshot.databases]),
        Family("tenantry_database_running",
               "1 while the cluster's program runs, 0 while it is down or restarting: a "
               "database down is known from here at once, whatever the exporter does.",
               "gauge", [(db(d), int(d.running)) for d in snapshot.databases]),
        Family("tenantry_database_memory_bytes",
               "Memory of a cluster's processes (PSS of the postmaster and its children).",
               "gauge", [(db(d), d.memory_bytes) for d in snapshot.databases
                         if d.memory_bytes is not None]),
        Family("tenantry_database_memory_budget_bytes",
               "What a cluster's size is set up to use: shared_buffers, work_mem per "
               "connection, maintenance_work_mem and a base.", "gauge",
               [(db(d), d.memory_budget_bytes) for d in snapshot.databases
                if d.memory_budget_bytes is not None]),
        Family("tenantry_database_wal_free_bytes",
               "Bytes free for the cluster's owner on the filesystem of its pg_wal.", "gauge",
               [(db(d), d.wal_free_bytes) for d in snapshot.databases
                if d.wal_free_bytes is not None]),
        Family("tenantry_backup_last_timestamp_seconds",
               "Unix time the platform's newest database backup finished.", "gauge",
               [(of(b), b.last_backup_at) for b in snapshot.backups
                if b.last_backup_at is not None]),
        Family("tenantry_backup_archive_pending_segments",
               "WAL segments written but not yet in the backup repository.", "gauge",
               [(of(b), b.archive_pending) for b in snapshot.backups]),
        Family("tenantry_backup_archive_lag_seconds",
               "How long the oldest WAL segment not yet in the repository has waited "
               "(0: none waits).", "gauge",
               [(of(b), b.archive_lag) for b in snapshot.backups]),
        Family("tenantry_backup_check_ok",
               "1 when the platform's latest verify or restore test passed, 0 when it "
               "failed.", "gauge",
               [({**of(b), "check": name}, int(ok)) for b in snapshot.backups
                for name, ok in b.checks]),
        Family("tenantry_platform_restarts_total",
               "Unexpected exits of a platform's programs (supervisord started them again) "
               "since the agent started.", "counter",
               [({"isv": isv, "platform": name}, restarted(pid))
                for pid, isv, name in snapshot.platforms]),
        Family("tenantry_host_restarts_total",
               "Unexpected exits of the host's own programs (Caddy, the exporters) since the "
               "agent started.", "counter",
               [({}, sum(n for program, n in restarts.items()
                         if program.split("-", 1)[0] not in ours))]),
        Family("tenantry_rogue_processes",
               "Processes of no platform and no known service over the CPU or memory "
               "threshold.", "gauge", [({}, rogues.count)]),
        Family("tenantry_rogue_process_cpu_ratio",
               "CPU used by a top rogue process since the agent's previous look, in cores.",
               "gauge", [(rogue(r), r.cpu_ratio) for r in rogues.top]),
        Family("tenantry_rogue_process_rss_bytes", "Resident memory of a top rogue process.",
               "gauge", [(rogue(r), r.rss_bytes) for r in rogues.top]),
    ]


# ---------------------------------------------------------------- from the agent's state


def slot_processes(paths: converge.HostPaths, platforms: Sequence[DesiredPlatform],
                   programs: Mapping[str, ProgramStatus]) -> list[SlotProcesses]:
    """Per slot of each platform (and per retired slot whose programs still run): programs
    RUNNING, against those that should."""
    found = []
    by_platform: dict[str, list[tuple[str, ProgramStatus]]] = {}  # one pass, not one each
    for n, s in programs.items():
        by_platform.setdefault(n.split("-", 1)[0], []).append((n, s))
    for p in platforms:
        if p.absent:
            continue
        migrations = converge.read_migrations(paths, p.id) if p.running else {}
        infos = {str(slot): info for slot, info in p.slots.items()}
        mine = by_platform.get(p.id, [])
        seen = {n.split("-")[1] for n, _ in mine if n.count("-") >= 3}
        for slot in sorted(set(infos) | seen):
            running = sum(1 for n, s in mine
                          if n.startswith(f"{p.id}-{slot}-") and s.state == "RUNNING")
            found.append(SlotProcesses(
                isv=p.isv, platform=f"{p.isv}/{p.name}", slot=slot, running=running,
                expected=_expected(paths, p, infos.get(slot), migrations)))
    return found


def _expected(paths: converge.HostPaths, p: DesiredPlatform, info: DesiredSlot | None,
              migrations: Mapping[str, str]) -> int:
    """What the plan runs now: nothing for a stopped platform or slot, nor before the slot's
    release is built and its migration went through."""
    if info is None or not (p.running and info.running):
        return 0
    release = next((r for r in p.releases if r.id == info.release_id), None)
    if release is None or not (releases.release_dir(paths.releases, release.digest)
                               / releases.BUILT).exists():
        return 0
    if info.after_migration and not migrations.get(info.after_migration, "").startswith("ok"):
        return 0
    return sum(len(info.ports) if proc == "web" else 1 for proc in release.manifest.processes)


class Live(Protocol):
    """Families rendered at each scrape, told of it (the prober's)."""

    def scraped(self) -> None: ...

    def families(self) -> list[Family]: ...


class AgentMetrics:
    """The agent's /metrics, rendered ahead of the scrapes by a thread of its own.

    While someone scrapes, the refresher makes a snapshot (from `source`, or `snapshot` when
    there is none), runs the rogue scan and renders them, then again `REFRESH` s later. A
    scrape (`text`) serves that rendering with the heartbeat rendered at that moment, so its
    cost does not grow with the platforms and it never waits on the source, except right
    after a change (`use`, or a new `snapshot`): then it waits for the new rendering, at
    most `WAIT` s, and serves the newest one it has. The refresher starts with the first
    scrape and stops working once nobody scraped for `idle_after` s: a host nobody scrapes
    spends nothing on its metrics. `close` ends it. `live`, when set, is told of each
    scrape and its families rendered then (the probes' results, see prober.py).
    """

    REFRESH = 2.0  # s between two renderings while scraped (Prometheus scrapes every 3 s)
    # s between two rogue scans: each reads every process's /proc/PID/stat (thousands on a
    # full host), and the rogue check holds for a minute anyway
    ROGUE_SCAN = 10.0
    WAIT = 1.0  # s a scrape waits for the rendering of a change: half its 2 s timeout

    def __init__(self, scanner: RogueScanner | None = None, *,
                 idle_after: float = 60.0) -> None:
        self.source: Callable[[], HostSnapshot] | None = None
        self.heartbeat = 0.0  # read at every scrape: the "host silent" check's series
        self.scanner = scanner or RogueScanner(every=self.ROGUE_SCAN)
        self.restarts: dict[str, int] = {}  # program -> unexpected exits since the start
        self.idle_after = idle_after
        self.live: Live | None = None
        self._snapshot = HostSnapshot()
        # Guards what follows; the refresher and the scrapes signal each other through it.
        self._changed = threading.Condition()
        # Changes are numbered: `_asked` is the latest a scrape should see, `_done` the one
        # the refresher last rendered (or failed to). A rendering started before a change is
        # not the change's, even when it ends after it.
        self._asked = 0
        self._done = -1
        self._body: str | None = None  # replaced whole by the refresher
        self._scraped_at = -math.inf
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def snapshot(self) -> HostSnapshot:
        """The latest snapshot: set by the refresher from `source`, or by hand when there is
        none (the next scrape then serves it)."""
        return self._snapshot

    @snapshot.setter
    def snapshot(self, snapshot: HostSnapshot) -> None:
        with self._changed:
            self._snapshot = snapshot
            self._ask()

    def use(self, source: Callable[[], HostSnapshot]) -> None:
        """Make snapshots with `source` from now on; the next scrape serves one of its."""
        with self._changed:
            self.source = source
            self._ask()

    def count_exits(self, programs: Iterable[str]) -> None:
        restarts = dict(self.restarts)
        for program in programs:
            restarts[program] = restarts.get(program, 0) + 1
        self.restarts = restarts  # replaced whole: the refresher reads one or the other

    def text(self) -> str:
        """The page for one scrape. It does not look at the host itself, and waits at most
        `WAIT` s (only after a change, or when the refresher was idle)."""
        with self._changed:
            now = time.monotonic()
            if now - self._scraped_at >= self.idle_after:
                self._ask()  # first scrape, or the first after an idle spell: body is old
            self._scraped_at = now
            if not self._closed:
                self._start()
                self._changed.notify_all()  # an idle refresher waits for a scrape
                asked = self._asked
                self._changed.wait_for(lambda: self._done >= asked, timeout=self.WAIT)
            body = self._body
        fresh = [heartbeat_family(self.heartbeat)]
        if self.live is not None:
            self.live.scraped()
            fresh += self.live.families()
        return render(fresh) + (body or "")

    def make_body(self) -> str:
        """One refresh: a snapshot, the rogue scan, every family but the heartbeat."""
        source = self.source
        snapshot = source() if source is not None else self._snapshot
        if source is not None:
            self._snapshot = snapshot
        return render(host_families(snapshot, self.scanner.scan(snapshot.known),
                                    self.restarts))

    def close(self) -> None:
        """Stop the refresher for good, waiting a little for a rendering under way to end;
        later scrapes get the last page."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    def _ask(self) -> None:
        """A change: the rendering we have is stale. (Called holding `_changed`.)"""
        self._asked += 1
        self._changed.notify_all()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._refresh, name="metrics-refresh",
                                            daemon=True)
            self._thread.start()

    def _refresh(self) -> None:
        due = 0.0  # monotonic time of the next rendering without a change
        while True:
            with self._changed:
                while not self._closed:
                    now = time.monotonic()
                    if now - self._scraped_at >= self.idle_after:
                        self._changed.wait()  # nobody scrapes: until one does, or close()
                    elif self._asked > self._done or now >= due:
                        break
                    else:
                        self._changed.wait(due - now)
                if self._closed:
                    return
                asked = self._asked  # before reading the source, so a later use() counts
            try:
                body: str | None = self.make_body()
            except (TenantryError, OSError) as exc:  # supervisord gone (a stop), say
                log.warning("metrics: cannot look at the host (%s); /metrics serves the "
                            "previous page", exc)
                body = None
            except Exception:  # the scrapes go on with the previous rendering
                log.exception("metrics: looking at the host failed; /metrics serves the "
                              "previous page")
                body = None
            with self._changed:
                if body is not None:
                    self._body = body
                self._done = asked  # failed or not: the scrapes waiting for it go on
                self._changed.notify_all()
            due = time.monotonic() + self.REFRESH


class MetricsServer:
    """GET /metrics on its own threads; anything else is 404."""

    def __init__(self, host: str, port: int, text: Callable[[], str]) -> None:
        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True

        self._server = Server((host, port), _handler(text))
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(text: Callable[[], str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            try:
                body = text().encode()
            except Exception:  # a scrape must never take the agent down
                log.exception("rendering /metrics failed")
                self.send_error(500)
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
