"""The agent's own /metrics, in Prometheus text format 0.0.4.

What only the agent knows: when it last reached the control plane, how many app processes
each platform slot runs against how many it should, which clusters it runs (so a cluster
missing from postgres_exporter's series is "down", not "gone"), and rogue processes.

The agent refreshes a `HostSnapshot` on every pass; a scrape renders the latest one plus a
fresh rogue scan, so it never waits on supervisord or the control plane.
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
from typing import Any

from tenantry.agent import converge, releases
from tenantry.agent.backups import BackupMetrics
from tenantry.agent.rogues import Known, Rogue, RogueReport, RogueScanner
from tenantry.agent.services import ProgramStatus
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
    """`restarts`: unexpected exits since the agent started, by program (supervisord's
    name: `<platform id>-…` for a platform's)."""
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
        Family("tenantry_agent_heartbeat_timestamp_seconds",
               "Unix time of the agent's last successful report to the control plane "
               "(0: none since it started).", "gauge", [({}, heartbeat)]),
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
               "CPU used by a top rogue process since the previous scrape, in cores.",
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


class AgentMetrics:
    """The latest snapshot, the heartbeat and the rogue scanner, rendered on demand."""

    SOURCE_TTL = 2.0  # s a snapshot made for a scrape serves the next ones

    def __init__(self, scanner: RogueScanner | None = None) -> None:
        self.snapshot = HostSnapshot()
        # What makes a snapshot, when one is asked for (a scrape): a host nobody scrapes
        # spends nothing on it.
        self.source: Callable[[], HostSnapshot] | None = None
        self._made_at = -1e9
        self._lock = threading.Lock()
        self.heartbeat = 0.0
        self.scanner = scanner or RogueScanner()
        self.restarts: dict[str, int] = {}  # program -> unexpected exits since the start

    def use(self, source: Callable[[], HostSnapshot]) -> None:
        """Make snapshots with `source` from now on (the next scrape makes a new one)."""
        with self._lock:
            self.source, self._made_at = source, -1e9

    def count_exits(self, programs: Iterable[str]) -> None:
        restarts = dict(self.restarts)
        for program in programs:
            restarts[program] = restarts.get(program, 0) + 1
        self.restarts = restarts  # replaced whole: a scrape reads one or the other

    def text(self) -> str:
        with self._lock:
            source = self.source
            if source is not None and time.monotonic() - self._made_at >= self.SOURCE_TTL:
                self.snapshot = source()
                self._made_at = time.monotonic()
        snapshot = self.snapshot  # one reference: the agent replaces it whole
        return render(families(snapshot, self.heartbeat, self.scanner.scan(snapshot.known),
                               self.restarts))


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
