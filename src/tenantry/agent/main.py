"""The host agent: enroll once, then pull desired state, converge, report, repeat.

The agent holds no state the control plane cannot give back, except its credentials and
the outcome of release commands it ran. It survives the control plane going away: the
services it started keep running under the service manager, and it catches up when the
control plane answers again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import shutil
import signal
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from tenantry.agent import converge, exits, exporters, ingress, logfiles, pgcluster, unixusers
from tenantry.agent.backups import BackupRunner
from tenantry.agent.client import ControlPlaneClient, Credentials, enroll
from tenantry.agent.disk import DiskGuard
from tenantry.agent.drill import Drills
from tenantry.agent.exits import ExitLog
from tenantry.agent.feed import DesiredFeed
from tenantry.agent.firewall import HostFirewall
from tenantry.agent.hostaccess import HostAccess
from tenantry.agent.monitor import HostMonitoring
from tenantry.agent.ports import busy_ports
from tenantry.agent.services import ProgramSpec, ProgramStatus, ServiceManager
from tenantry.agent.supervisord import SupervisordManager
from tenantry.core import cgroup, delays, hang, leftovers
from tenantry.core.errors import TenantryError, Unavailable
from tenantry.core.steps import Steps
from tenantry.platforms.contract import (
    QUIET_HEARTBEAT_RANGE,
    DesiredHost,
    DesiredPlatform,
    DiskReport,
    HostReport,
    PlatformReport,
    ProcessExit,
    SlotName,
)

log = logging.getLogger("tenantry.agent")

IDLE_WAIT = 2.0  # s between two passes while everything is converged
POLL_WAIT = 55.0  # s a long poll for the desired state is held (a change answers it at once);
# as long as the idle timeout of a load balancer between agent and API allows (60 s is
# common): each poll that ends with nothing new is a call the API serves for nothing, 40 a
# second at 1,000 hosts with 25 s
QUIET_HEARTBEAT = float(QUIET_HEARTBEAT_RANGE[0])  # s between heartbeats with nothing new
# (6); news goes with the next pass.
# The control plane's answer to each heartbeat may make it longer: a large fleet's hosts
# beat less often (contract.PACE_HEADER). It calls a host offline after three are missed.
INGRESS_VERIFY = 30.0  # s: Caddy's config is compared with the routes at least this often
# Two nets under the generations: every change the control plane makes to a host's desired
# state bumps its generation, and every report that differs from the last one sent goes at
# the next pass. What the nets catch is a fault of those (a write that bumped nothing, a
# store restored from a backup). At once a minute they were most of what a fleet of idle
# hosts cost the control plane (a document built and decrypted, 20 platforms' rows written).
DESIRED_REFRESH = 300.0  # s: the whole desired state is fetched at least this often, changed
# or not (a change that did not bump the host's generation is not missed for longer)
FULL_REPORT = 300.0  # s: every platform's report is sent at least this often, changed or not
# Each of the two waits a random 60-100 % of its period, drawn again each time: agents that
# start together (all of them, after the control plane's restart) soon no longer fetch their
# whole documents and send their full reports in the same second.
SPREAD = (0.6, 1.0)
# The long poll's wait and the quiet heartbeat's pace are each a random 80-100 % of theirs,
# drawn again each time, for the same reason: with fixed periods, agents that started
# together stay in step for good, and ask the API in waves (at 1,000 hosts, bench/fleet.py,
# a wave of 300-400 long polls ending within 5 s made them 0.2-0.3 s late at the median).
JITTER = (0.8, 1.0)


def jittered(period: float) -> float:
    return period * random.uniform(*JITTER)

RECHECK = 5.0  # a platform not well, or whose app asks for restarts, is observed this often
RECHECK_IDLE = 30.0  # ... and a well one about this often (24-36 s, spread by its id); an
# exit of one of its programs has it observed at once
SERVICES_CHECK = 0.5  # how often the agent looks whether its service manager still lives
STOPPED_AFTER = 3.0  # s supervisord, Caddy or a postmaster may be stopped (state T) ...
DB_HUNG_AFTER = 3.0  # ... or a postmaster give no answer, before it is killed
SILENT_AFTER = 10.0  # s supervisord or Caddy may not answer, using no CPU, before it is killed
ARCHIVER_GRACE = 15.0  # seconds pgBackRest's archivers get to empty their queue at a stop


@dataclass
class AgentOptions:
    data_dir: Path
    server: str | None = None
    enroll_token: str | None = None
    ca_file: Path | None = None  # the CA to trust for an https:// server (mutual TLS)
    region: str = "local"
    name: str | None = None
    ingress_port: int = 8443
    port_min: int = 20000
    port_max: int = 29999
    stop_services_on_exit: bool = False
    host_access: bool = False  # manage sshd, principals, KRL, sudo and ship host logs
    etc_root: Path = Path("/")
    sshd_pid_file: Path = Path("/run/sshd.pid")
    sshd_log: Path | None = None
    ssh_port: int = 22  # sshd's port: host access writes it, the firewall lets it in
    firewall: bool = False  # keep the nftables table inet tenantry (ingress + SSH only)
    firewall_netns: str | None = None  # apply it in this network namespace (tests)
    metrics_host: str = "127.0.0.1"  # where the exporters and the agent's /metrics listen
    disk_reserve: int | None = None  # bytes held in reserve on the data disk (None: 1 %)


class _Serialized(ServiceManager):
    """Platforms converge in parallel threads; the service manager sees one call at a time.

    Observations are shared for a moment (OBSERVE_TTL) between the threads, since asking
    supervisord costs more the more programs it runs; any change invalidates them.
    """

    OBSERVE_TTL = 0.3

    def __init__(self, inner: ServiceManager) -> None:
        self._inner = inner
        self._lock = threading.RLock()
        self._seen: tuple[float, dict[str, ProgramStatus]] | None = None
        self._shut = False  # after shutdown nothing starts again, whichever thread asks

    def _open(self) -> None:
        if self._shut:
            raise Unavailable("the agent is stopping: the service manager was shut down")

    def ensure_started(self, stopping: threading.Event | None = None) -> None:
        with self._lock:
            self._open()
            self._inner.ensure_started(stopping)

    def observe(self) -> dict[str, ProgramStatus]:
        with self._lock:
            if self._seen is not None and time.monotonic() - self._seen[0] < self.OBSERVE_TTL:
                return dict(self._seen[1])
            result = self._inner.observe()
            self._seen = (time.monotonic(), result)
            return dict(result)

    def _change(self, method: Callable[..., None], *args: Any) -> None:
        with self._lock:
            self._seen = None
            method(*args)

    def put(self, spec: ProgramSpec) -> None:
        with self._lock:
            self._open()
            self._change(self._inner.put, spec)

    def start(self, name: str) -> None:
        with self._lock:
            self._open()
            self._change(self._inner.start, name)

    def stop(self, name: str) -> None:
        self._change(self._inner.stop, name)

    def remove(self, name: str) -> None:
        self._change(self._inner.remove, name)

    def shutdown(self) -> None:
        with self._lock:
            self._shut = True
            self._change(self._inner.shutdown)

    def daemon_pid(self) -> int | None:
        return self._inner.daemon_pid()

    def has_daemon(self) -> bool:
        return self._inner.has_daemon()

    def ended_unwatched(self) -> int | None:
        return self._inner.ended_unwatched()

    def responds(self, timeout: float = 2.0) -> bool:
        return self._inner.responds(timeout)  # not behind the lock: a change may hang on it

    def last_seen(self) -> dict[str, ProgramStatus]:
        """The last observation, however old, without asking the manager."""
        seen = self._seen
        return dict(seen[1]) if seen is not None else {}


class Agent:
    def __init__(self, options: AgentOptions, services: ServiceManager | None = None) -> None:
        self.options = options
        self.paths = converge.HostPaths(options.data_dir)
        # The host's cgroup for this data dir, where it has one: supervisord starts in it.
        self.cgroup = cgroup.group_for(options.data_dir) if services is None else None
        self.services = _Serialized(services or SupervisordManager(self.paths.services,
                                                                   self.cgroup))
        self._loaded_hosts: frozenset[str] = frozenset()
        self._last_reports: dict[str, PlatformReport] = {}
        self._inflight: dict[str, Future[None]] = {}
        self._checked: dict[str, float] = {}
        # web program -> (pid that answered its health check, since when it has not)
        self._answered: dict[str, tuple[int, float | None]] = {}
        self._db_silence: dict[str, hang.Silence] = {}  # platform -> its postmaster's silence
        self._ingress_wanted = False  # Caddy has been started: it should answer
        # (generation, Caddy's pid) whose routes Caddy has, and when that was checked
        self._ingress_done: tuple[int, int | None] | None = None
        self._ingress_at = 0.0
        self._heartbeat_at = 0.0
        # the quiet pace the control plane last said, less a random part (JITTER)
        self._quiet_for = QUIET_HEARTBEAT
        self._full_report_at = 0.0
        self._full_report_every = FULL_REPORT
        self._fetched_at = -1e9  # when the whole desired state was last fetched
        self._refresh_every = DESIRED_REFRESH
        self._held: DesiredHost | None = None  # the last desired state fetched and accepted
        self._sent_host: dict[str, Any] | None = None  # the host part the plane has
        self._sent: dict[str, PlatformReport] = {}  # what the control plane has, by platform
        # Reports go one at a time, each platform's the latest: a pass's heartbeat (with a
        # platform's report of the last generation) and the platform's converge thread (with
        # the new one) sending at once let the older arrive last; the control plane kept it,
        # and the agent, having sent the newer, did not send it again (a creation on a host
        # of 230 platforms waited 180 s for a pgBackRest stanza its host had made).
        self._report_lock = threading.Lock()
        self._sent_ingress: str | None = None
        self._ingress_error: str | None = None
        self._desired_error: str | None = None  # why the last desired state was refused
        self._ours: set[int] = set()
        self._access: HostAccess | None = None
        self._firewall: HostFirewall | None = None
        self.stopping = threading.Event()
        self._client: ControlPlaneClient | None = None
        self._caddy = ingress.CaddyAdmin(self.paths.ingress_admin())
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="converge")
        self.monitoring = HostMonitoring(
            self.paths, self.services, host=options.metrics_host,
            avoid={*range(options.port_min, options.port_max + 1), options.ingress_port})
        self._desired: DesiredHost | None = None  # the last one, kept while the plane is away
        self.backups = BackupRunner(on_done=self._backup_done,
                                    releases_root=self.paths.releases)
        self._services_silence = hang.Silence(SILENT_AFTER)
        self._caddy_silence = hang.Silence(SILENT_AFTER)
        self._silent_cpu: dict[str, int | None] = {}  # their CPU time when they fell silent
        self._stopped = hang.Stopped()
        self.disk = DiskGuard(options.data_dir, options.disk_reserve)
        self._disk: DiskReport | None = None
        self._disk_checked = 0.0
        self._logs_rotated = time.monotonic()  # the first look a minute after the start
        self.exits = ExitLog(exits.supervisord_log(self.paths.services),
                             exits.state_path(self.paths.services))
        self.drills = Drills()

    @property
    def credentials_file(self) -> Path:
        return self.options.data_dir / "agent.json"

    def connect(self) -> ControlPlaneClient:
        creds = Credentials.load(self.credentials_file)
        if creds is None:
            if not (self.options.server and self.options.enroll_token):
                raise Unavailable("this agent is not enrolled: give --server and --enroll-token")
            self.options.data_dir.mkdir(parents=True, exist_ok=True)
            creds = enroll(server=self.options.server, token=self.options.enroll_token,
                           name=self.options.name, region=self.options.region,
                           ingress_port=self.options.ingress_port,
                           port_min=self.options.port_min, port_max=self.options.port_max,
                           ca_file=self.options.ca_file, tls_dir=self.options.data_dir)
            creds.save(self.credentials_file)
            log.info("enrolled as host %s", creds.host_id)
        elif self.options.server and self.options.server != creds.server:
            creds = dataclasses.replace(creds, server=self.options.server)
            creds.save(self.credentials_file)
        self._client = ControlPlaneClient(creds)
        return self._client

    # ------------------------------------------------------------ one pass

    def plan(self, desired: DesiredHost) -> list[converge.Action]:
        fx = self._effects()
        programs = self.services.observe()
        actions: list[converge.Action] = []
        for p in desired.platforms:
            facts = converge.observe_platform(self.paths, p, programs, self.backups,
                                              self.drills)
            actions.extend(converge.plan_platform(p, facts, fx))
        actions.extend(self._plan_orphans(desired, programs))
        actions.extend(self.monitoring.plan(desired, programs))
        return actions

    def _effects(self) -> converge.Effects:
        assert self._client is not None
        return converge.Effects(self.paths, self.services, self._client.download_bundle,
                                self.backups, self.drills)

    def _backup_done(self, pid: str) -> None:
        """A backup ended (in the runner's thread): tell the control plane now, not at the
        platform's next check."""
        desired, last = self._desired, self._last_reports.get(pid)
        p = next((x for x in desired.platforms if x.id == pid), None) if desired else None
        if p is None or last is None:
            return
        facts = converge.observe_platform(self.paths, p, self.services.observe(), self.backups,
                                          self.drills)
        report = last.model_copy(update={"backup": facts.backup})
        self._last_reports[pid] = report
        try:
            self._report({pid: report})
        except (httpx.HTTPError, TenantryError) as exc:
            log.warning("report failed (%s); it goes with the next heartbeat", exc)

    def _plan_orphans(self, desired: DesiredHost, programs: dict[str, ProgramStatus],
                      busy: Collection[str] = ()) -> list[converge.Action]:
        """Processes of platforms the control plane no longer knows (the host's own
        programs, the ingress and the exporters, are not a platform's)."""
        known = {p.id for p in desired.platforms} | set(busy)
        host_programs = {converge.INGRESS_PROGRAM, *exporters.PROGRAMS}
        actions = []
        for name in sorted(programs):
            if name not in host_programs and name.split("-", 1)[0] not in known:
                actions.append(converge.Action(f"remove orphan process {name}",
                                               partial(self.services.remove, name)))
        return actions

    def converge_platform(self, p: DesiredPlatform, fx: converge.Effects) -> PlatformReport:
        error: str | None = None
        for _ in range(3):  # a pass may enable the next (cluster up → database → migration)
            programs = self.services.observe()
            facts = converge.observe_platform(self.paths, p, programs, self.backups,
                                              self.drills)
            actions = converge.plan_platform(p, facts, fx)
            if not actions:
                break
            for action in actions:
                log.info("%s", action.description)
                try:
                    action.run()
                except (TenantryError, OSError, httpx.HTTPError) as exc:
                    error = f"{action.description}: {exc}"
                    log.warning("%s", error)
                    break
                except Exception as exc:
                    error = f"{action.description}: {type(exc).__name__}: {exc}"
                    log.error("%s\n%s", error, traceback.format_exc())
                    break
            if error:
                break
        programs = self.services.observe()
        facts = converge.observe_platform(self.paths, p, programs, self.backups, self.drills)
        self._liveness(p, facts)
        return converge.report_platform(p, facts, self.paths, error, self._route_slot(p))

    def _liveness(self, p: DesiredPlatform, facts: converge.PlatformFacts) -> None:
        """For apps whose manifest opts in (`[health] restart_after = N`): a web process
        that answered its health check and then stopped answering for N seconds (hung, not
        crashed: supervisord sees it running) is killed, process group and all; supervisord
        starts it again, and the exit is told like any other. One that has not answered yet
        since it started is starting, not hung; one whose database does not answer either
        waits for its database. Without the setting a hang is left to the monitoring, which
        tells it (an app's health path is not always a fair sign of life)."""
        now = time.monotonic()
        db_answers = self._database_liveness(p, facts)
        for slot, info in p.slots.items():
            release = p.release(info.release_id)
            hung_after = release.manifest.restart_after
            if not hung_after:
                continue
            for i, port in enumerate(info.ports):
                name = converge.program_name(p.id, slot, "web", i)
                status = facts.programs.get(name)
                if status is None or status.state != "RUNNING" or status.pid is None:
                    self._answered.pop(name, None)
                    continue
                if port in facts.healthy_ports:
                    self._answered[name] = (status.pid, None)
                    continue
                seen = self._answered.get(name)
                if seen is None or seen[0] != status.pid:
                    continue  # never answered: still starting
                since = seen[1] if seen[1] is not None else now
                self._answered[name] = (status.pid, since)
                if now - since < hung_after:
                    continue
                if db_answers is None:
                    db_answers = pgcluster.ping(converge.cluster_spec(self.paths, p)) == "ok"
                if not db_answers:
                    # Its database does not answer: killing the app would not help. The
                    # app's clock starts again when the database is back, so an app still
                    # catching up with its database is not taken for hung.
                    self._answered[name] = (status.pid, None)
                    continue
                log.warning("%s (pid %s) has not answered its health check for %.0f s; "
                            "killing it (supervisord starts it again)", name, status.pid,
                            now - since)
                with contextlib.suppress(ProcessLookupError):
                    if os.getpgid(status.pid) == status.pid:  # supervisord's own group
                        os.killpg(status.pid, signal.SIGKILL)
                    else:
                        os.kill(status.pid, signal.SIGKILL)
                self._answered.pop(name, None)

    def _database_liveness(self, p: DesiredPlatform,
                           facts: converge.PlatformFacts) -> bool | None:
        """A platform whose app does not answer may have a frozen database (stopped,
        wedged: supervisord sees it running). Its postmaster is asked, only then; one that
        gives no answer at all for DB_HUNG_AFTER seconds is killed with its backends, and
        supervisord starts it again (crash recovery keeps every committed transaction). A
        database that answers "starting" or "shutting down" is left alone. Whether the
        database accepts connections, when asked; None when not asked."""
        db = facts.programs.get(f"{p.id}-db")
        ports = [port for info in p.slots.values() if info.running for port in info.ports]
        if db is None or db.state != "RUNNING" or db.pid is None or \
                all(port in facts.healthy_ports for port in ports):
            self._db_silence.pop(p.id, None)
            return None
        answer = pgcluster.ping(converge.cluster_spec(self.paths, p))
        silence = self._db_silence.setdefault(p.id, hang.Silence(DB_HUNG_AFTER))
        if silence.observe(answer != "no response"):
            log.error("%s: PostgreSQL (pid %s) has not answered for %.0f s: frozen; killing "
                      "it with its backends (supervisord starts it again)", p.id, db.pid,
                      silence.silent_for())
            hang.kill_tree(db.pid)
            self._db_silence.pop(p.id, None)
        return answer == "ok"

    def _route_slot(self, p: DesiredPlatform) -> SlotName | None:
        route = p.route
        if not route or not p.running or p.absent:
            return None
        return route.slot if route.hostname in self._loaded_hosts else None

    def converge_ingress(self, desired: DesiredHost) -> None:
        spec = ingress.program_spec(name=converge.INGRESS_PROGRAM, root=self.paths.ingress,
                                    admin=self.paths.ingress_admin(),
                                    log_file=str(self.paths.ingress / "caddy.log"))
        current = self.services.observe().get(converge.INGRESS_PROGRAM)
        running = current is not None and current.state == "RUNNING" and \
            current.digest == spec.digest()
        if running and current is not None and \
                self._ingress_done == (desired.generation, current.pid) and \
                time.monotonic() - self._ingress_at < INGRESS_VERIFY:
            return  # the same routes, loaded into the same Caddy
        if not running:
            self.services.put(spec)
        deadline = time.monotonic() + 15
        while not self._caddy.is_up():
            if time.monotonic() > deadline:
                raise Unavailable("Caddy's admin API did not come up; see "
                                  f"{self.paths.ingress / 'caddy.log'}")
            time.sleep(0.05)
        routes = converge.ingress_routes(self.paths, desired)
        config = ingress.render_config(
            listen=f"127.0.0.1:{desired.host.ingress_port}",
            admin=self.paths.ingress_admin(), routes=routes,
            storage_dir=str(ingress.storage_of(self.paths.ingress)),
            log_file=str(self.paths.ingress / "access.log"))
        if self._caddy.current() != config:
            log.info("ingress: load %d route(s)", len(routes))
            self._caddy.load(config)
        self._ingress_wanted = True
        route_slots = {r.hostname for r in routes}
        self._loaded_hosts = frozenset(route_slots)
        now = self.services.observe().get(converge.INGRESS_PROGRAM)
        self._ingress_done = (desired.generation, now.pid if now is not None else None)
        self._ingress_at = time.monotonic()

    def tick(self, desired: DesiredHost) -> bool:
        """Start converging every platform that needs it; True when all are settled.

        Platforms converge in their own threads and report the moment they are done, so
        a new platform never waits for a slow neighbour, nor for the pass before it.
        """
        platforms = {p.id: p for p in desired.platforms}
        self._ours = {port for p in platforms.values() for port in p.ports()}
        try:
            self.converge_ingress(desired)
            self._ingress_error = None
        except (TenantryError, OSError, httpx.HTTPError) as exc:
            self._ingress_error = str(exc)
            log.warning("ingress: %s", exc)
        fx = self._effects()
        # A platform whose program just ended unexpectedly is looked at now, not at its next
        # RECHECK: it may need more than a restart (its port taken meanwhile, say).
        for ended in self._read_exits():
            self._checked.pop(ended.program.split("-", 1)[0], None)
        now = time.monotonic()
        for pid, p in platforms.items():
            running = self._inflight.get(pid)
            if running is not None and not running.done():
                continue
            last = self._last_reports.get(pid)
            fresh = (last is not None and last.gen == p.gen and _settled(p, last)
                     and now - self._checked.get(pid, 0) < _recheck_every(p, last))
            if not fresh:
                self._checked[pid] = now
                self._inflight[pid] = self._pool.submit(self._converge_and_report, p, fx)
        for pid in list(self._inflight):
            if pid not in platforms and self._inflight[pid].done():
                del self._inflight[pid]
                self._last_reports.pop(pid, None)
        busy = {pid for pid, f in self._inflight.items() if not f.done()}
        for action in self._plan_orphans(desired, self.services.observe(), busy):
            log.info("%s", action.description)
            action.run()
        self._desired = desired
        self.monitoring.keep(desired)
        self._heartbeat(platforms, now)
        return not busy and self._ingress_error is None and all(
            _settled(p, self._last_reports.get(pid)) for pid, p in platforms.items())

    def poll_wait(self) -> float:
        """How long the next long poll asks to be held (JITTER)."""
        return jittered(POLL_WAIT)

    def _heartbeat(self, platforms: dict[str, DesiredPlatform], now: float) -> None:
        """A pass's heartbeat: at most one every IDLE_WAIT s, and only with something to say
        (a report, news of the host) or once the quiet pace (QUIET_HEARTBEAT s, or what the
        control plane said) went by without one."""
        if now - self._heartbeat_at < IDLE_WAIT:
            return
        reports = self._heartbeat_reports(platforms, now)
        part = self._host_part()  # read once: for the news, and for the report it sends
        if reports or now - self._heartbeat_at >= self._quiet_for or \
                self._host_news(part):
            self._heartbeat_at = now
            self._report(reports, part)

    def _heartbeat_reports(self, platforms: dict[str, DesiredPlatform],
                           now: float) -> dict[str, PlatformReport]:
        """What a heartbeat carries: the reports the control plane does not have yet (one
        that failed to go, say), and those of platforms that are not well, whose state it
        judges over time (`ready` turns `degraded` after a hold); every FULL_REPORT s, all.
        An idle, healthy host's heartbeat carries none: its cost does not grow with its
        platforms."""
        full = now - self._full_report_at >= self._full_report_every
        if full:
            self._full_report_at = now
            self._full_report_every = FULL_REPORT * random.uniform(*SPREAD)
        # an ingress error is every platform's problem, and so is its end
        full = full or self._ingress_error is not None or self._sent_ingress is not None
        # A copy (one step under the GIL): the converge threads and the backup runner add
        # reports meanwhile, and iterating the dict itself then ends the agent.
        last = dict(self._last_reports)
        return {pid: r for pid, r in last.items() if pid in platforms and (
            full or self._sent.get(pid) != r or not _well(platforms[pid], r))}

    def _converge_and_report(self, p: DesiredPlatform, fx: converge.Effects) -> None:
        try:
            report = self.converge_platform(p, fx)
        except Exception as exc:  # a bug must not kill the agent: report it
            log.error("converging %s crashed:\n%s", p.id, traceback.format_exc())
            report = PlatformReport(gen=p.gen, error=f"{type(exc).__name__}: {exc}")
        if self._last_reports.get(p.id) != report:
            self._last_reports[p.id] = report
            try:
                self._report({p.id: report})
            except (httpx.HTTPError, TenantryError) as exc:
                log.warning("report failed (%s); it goes with the next heartbeat", exc)

    def _read_exits(self) -> list[ProcessExit]:
        """The unexpected exits supervisord logged since the last look, counted for the
        metrics (a crash loop is an alert: the catalog's `restarts`)."""
        new = self.exits.read()
        if new:
            self.monitoring.metrics.count_exits(e.program for e in new)
        return new

    def _host_part(self) -> dict[str, Any]:
        """What a report says of the host itself (HostObserved's fields but the clock)."""
        return {"ingress_error": self._ingress_error,
                "busy_ports": busy_ports(self.options.port_min, self.options.port_max,
                                         self._ours),
                "firewall": self._firewall.status() if self._firewall else None,
                "monitoring": dict(self.monitoring.targets), "disk": self._disk,
                "desired_error": self._desired_error}

    def _host_news(self, part: dict[str, Any]) -> bool:
        """Whether a heartbeat has something to say of the host: process exits, or a host
        part (`part`, read now) that differs from the one the control plane has."""
        self._read_exits()
        return self.exits.pending() or part != self._sent_host

    def _report(self, reports: dict[str, PlatformReport],
                part: dict[str, Any] | None = None) -> None:
        """Send a heartbeat with `reports` and the host part (`part` when the caller has
        just read it)."""
        assert self._client is not None
        with self._report_lock:
            reports = {pid: self._last_reports.get(pid, r) for pid, r in reports.items()}
            self._read_exits()
            exits = self.exits.take()
            part = self._host_part() if part is None else part
            try:
                pace = self._client.report(HostReport(platforms=reports, agent_time=time.time(),
                                                      process_exits=exits, **part))
            except BaseException:
                self.exits.put_back(exits)
                raise
            self._quiet_for = jittered(float(pace or QUIET_HEARTBEAT))
            self._sent.update(reports)
            self._sent_ingress = self._ingress_error
            self._sent_host = part
        self.monitoring.metrics.heartbeat = time.time()

    def fetch_desired(self, client: ControlPlaneClient, *, generation: int,
                      wait: float) -> DesiredHost | None:
        """The desired state, or None when the control plane sent one that does not validate:
        it is refused whole (nothing is changed on the host; running services keep running)
        and the agent asks again. The error names the fields, never their values (secrets)."""
        try:
            held = self._held
            got = None
            if held is not None and held.generation == generation and \
                    time.monotonic() - self._fetched_at < self._refresh_every:
                change = client.desired_if_changed(held=generation, wait=wait)
                if change is None:
                    return held  # ours is current
                got = change.merged(held)  # None: not a change to ours; the whole one
            if got is None:
                got = client.desired(generation=generation, wait=wait)
                self._fetched_at = time.monotonic()
                self._refresh_every = DESIRED_REFRESH * random.uniform(*SPREAD)
            self._held = got
            self._desired_error = None
            return got
        except ValidationError as exc:
            error = f"it does not validate: {describe_invalid(exc)}"
            if error != self._desired_error:
                log.error("refused the desired state from the control plane, %s; services "
                          "keep running as they are", error)
            self._desired_error = error
            return None

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        self.paths.prepare()
        self.stop_leftovers("left by an earlier run", services_live=True)
        gone = unixusers.remove_orphans()
        if gone:
            log.info("removed Unix accounts of platforms whose data dir is gone: %s",
                     ", ".join(gone))
        self.monitoring.start()
        try:
            self._run()
        except Exception:
            if not self.stopping.is_set():
                # Not a stop anybody asked for: the platforms go on under their supervisord,
                # for the next agent to adopt (`up` starts one), whatever
                # --stop-services-on-exit. (An error on the way of an asked stop still
                # stops them.)
                log.critical("the agent ends on an error; the platforms keep running")
            raise
        finally:
            self.monitoring.stop()
            self._stop_at_exit(asked=self.stopping.is_set())

    # ------------------------------------------------------------ processes left behind

    def stop_leftovers(self, why: str, *, services_live: bool, spare_own: bool = False,
                       spare_archivers: bool = True) -> list[str]:
        """Stop the processes of this host's data dir that nothing runs any more (a crash
        of the agent or its supervisord leaves databases, apps, Caddy, backups), saying
        what they were. The live supervisord's tree is adopted, not stopped; pgBackRest's
        detached archivers finish their queue by themselves."""
        live = self.services.daemon_pid() if services_live else None
        def tell(found: list[leftovers.Leftover]) -> None:
            log.warning("found %d process(es) of %s %s; stopping them: %s", len(found),
                        self.options.data_dir, why, "; ".join(x.describe() for x in found))

        lines = leftovers.sweep(self.options.data_dir, tell=tell,
                                spare_trees=[live] if live else [], spare_own=spare_own,
                                spare=(lambda x: x.archiver) if spare_archivers else
                                (lambda _: False))
        for line in lines:
            log.warning("%s", line)
        return lines

    def _stop_at_exit(self, *, asked: bool) -> None:
        """A clean stop leaves nothing of the data dir running but what is meant to go on:
        the services when they keep running (always, when the agent ends on an error: an
        agent's bug must not stop every platform of its host). Backups cut short run again
        at the next start."""
        steps = Steps()  # logged at the end
        stop_services = asked and self.options.stop_services_on_exit
        if stop_services:
            archivers = [x for x in leftovers.find(self.options.data_dir) if x.archiver]
            if leftovers.wait_gone([x.pid for x in archivers], ARCHIVER_GRACE):
                log.warning("pgBackRest's archiver did not finish within %g s",
                            ARCHIVER_GRACE)
            steps.done(f"{len(archivers)} pgBackRest archivers")
        self.stop_leftovers("still running at the agent's stop",
                            services_live=not stop_services, spare_archivers=not stop_services)
        steps.done("the sweep")
        if not self.backups.join(30):
            log.warning("backup tasks still running after 30 s")
        steps.done("backup tasks")
        log.info("the agent's last steps: %s", steps)
        if stop_services and self.cgroup is not None:
            cgroup.remove(self.cgroup)  # empty now; one that is not stays, to be found

    def _keep_services(self) -> None:
        """The service manager died under the agent (an OOM kill can take a process tree):
        within a second, what it left is stopped (its programs hold their ports), a new one
        is started, and every platform converges again."""
        probed = 0.0
        ran: int | None = None  # the pid it last ran as: its end is told once
        while not self.stopping.wait(SERVICES_CHECK):
            self._check_disk()
            self._rotate_logs()
            pid = self.services.daemon_pid()
            if pid is not None:
                ran = pid
                if self._kill_stopped(pid):
                    continue
                if time.monotonic() - probed >= 1.0:  # a question each second at most
                    probed = time.monotonic()
                    self._check_answers(pid)
                continue
            log.error("the service manager (supervisord) is gone; stopping what it left "
                      "and starting it again")
            self._tell_services_ended(ran)
            ran = None
            try:
                self.stop_leftovers("left by the service manager that died",
                                    services_live=False, spare_own=True)
                if self.stopping.is_set():
                    return
                self.services.ensure_started()
            except (TenantryError, OSError) as exc:
                log.error("could not start the service manager again: %s", exc)
                continue
            self._checked.clear()  # every platform is looked at in the next pass
            log.warning("the service manager runs again (pid %s)", self.services.daemon_pid())

    def _tell_services_ended(self, ran: int | None) -> None:
        """Tell the end of the service manager, as its programs' exits are told: the one
        this agent saw run as `ran`, or one that died while no agent watched it (between
        two agents, or before this one adopted it), which its pid file names. It is no child
        of ours: how it ended is not known; one the agent killed for being frozen said so in
        its log."""
        pid = ran if ran is not None else self.services.ended_unwatched()
        if pid is not None:
            self.exits.put_back([ProcessExit(program="supervisord", how=f"pid {pid} gone",
                                             at=time.time())])

    def _rotate_logs(self) -> None:
        """Each minute: the logs programs write themselves, rotated when grown large."""
        now = time.monotonic()
        if now - self._logs_rotated < logfiles.ROTATE_EVERY:
            return
        self._logs_rotated = now
        for path in logfiles.rotate(self.services.log_files()):
            log.info("logs: rotated %s", path)

    def _check_disk(self) -> None:
        """Each second: release the disk reserve the moment free space falls below it
        (tenantry.agent.disk); a change is reported at once."""
        now = time.monotonic()
        if now - self._disk_checked < 1.0:
            return
        self._disk_checked = now
        try:
            report = self.disk.check()
        except OSError as exc:
            log.warning("cannot look at the data disk: %s", exc)
            return
        changed = self._disk is None or self._disk.low != report.low
        self._disk = report
        if changed and self._client is not None:
            with contextlib.suppress(httpx.HTTPError, TenantryError):
                self._report(dict(self._last_reports))

    def _stop_limits(self, services_pid: int) -> dict[int, tuple[str, float]]:
        """The processes a stop (state T) must not hold for long, with their limits:
        supervisord, Caddy, every postmaster, and the web processes of apps whose manifest
        asks for restarts (`restart_after`); from the last observation, asking nothing."""
        limits = {services_pid: ("the service manager (supervisord)", STOPPED_AFTER)}
        seen = self.services.last_seen()
        web: dict[str, int] = {}
        for p in self._desired.platforms if self._desired else ():
            for slot, info in p.slots.items():
                after = p.release(info.release_id).manifest.restart_after
                for i in range(len(info.ports)):
                    if after:
                        web[converge.program_name(p.id, slot, "web", i)] = after
        for name, status in seen.items():
            if status.pid is None or status.state != "RUNNING":
                continue
            if name == converge.INGRESS_PROGRAM:
                limits[status.pid] = ("Caddy", STOPPED_AFTER)
            elif name.endswith("-db"):
                limits[status.pid] = (f"{name} (PostgreSQL)", STOPPED_AFTER)
            elif name in web:
                limits[status.pid] = (name, float(web[name]))
        return limits

    def _kill_stopped(self, services_pid: int) -> bool:
        """Kill what has been stopped by a signal for longer than its limit (with what it
        started: a postmaster's backends); supervisord starts it again, or, for supervisord
        itself, its death is handled as any other. True when supervisord was killed."""
        limits = self._stop_limits(services_pid)
        for pid, held in self._stopped.look({pid: limit for pid, (_, limit) in limits.items()}):
            what = limits[pid][0]
            log.error("%s (pid %s) has been stopped (SIGSTOP or the like) for %.0f s: frozen; "
                      "killing it%s", what, pid, held,
                      "" if pid == services_pid else " (supervisord starts it again)")
            if pid == services_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            else:
                hang.kill_tree(pid)
            self._stopped.forget(pid)
            if pid == services_pid:
                return True
        return False

    def _frozen(self, what: str, silence: hang.Silence, answered: bool, pid: int) -> bool:
        """It has not answered for SILENT_AFTER seconds and used no CPU meanwhile (a busy
        supervisord starting hundreds of programs may be slow to answer; it is not frozen)."""
        if answered:
            silence.reset()
            self._silent_cpu.pop(what, None)
            return False
        if not silence.silent_for():
            self._silent_cpu[what] = hang.cpu_ticks(pid)
        if not silence.observe(False):
            return False
        ticks = hang.cpu_ticks(pid)
        if ticks != self._silent_cpu.get(what):  # busy (or gone): not frozen; count again
            silence.reset()
            self._silent_cpu.pop(what, None)
            return False
        return True

    def _check_answers(self, services_pid: int) -> None:
        """supervisord and Caddy run; do they answer? One that has not for SILENT_AFTER
        seconds, using no CPU meanwhile, is wedged and is killed: supervisord's death is then
        handled as any other (within a second, above), and supervisord starts Caddy again."""
        if self._frozen("supervisord", self._services_silence,
                        self.services.responds(1.0), services_pid):
            log.error("the service manager (supervisord, pid %s) has not answered for "
                      "%.0f s: wedged; killing it", services_pid,
                      self._services_silence.silent_for())
            with contextlib.suppress(ProcessLookupError):
                os.kill(services_pid, signal.SIGKILL)
            self._services_silence.reset()
            return
        if not self._ingress_wanted or self._services_silence.silent_for():
            return
        status = self.services.last_seen().get(converge.INGRESS_PROGRAM)
        if status is None or status.state != "RUNNING" or status.pid is None:
            return  # starting, or not there: converging the ingress sees to it
        if self._frozen("caddy", self._caddy_silence, self._caddy.answers(), status.pid):
            log.error("Caddy (pid %s) has not answered for %.0f s: wedged; killing it "
                      "(supervisord starts it again)", status.pid,
                      self._caddy_silence.silent_for())
            self._caddy_silence.reset()
            hang.kill_tree(status.pid)

    def _run(self) -> None:
        if self.options.firewall:  # before connecting: the host closes even if the plane is away
            self._firewall = HostFirewall(ingress_port=self.options.ingress_port,
                                          ssh_port=self.options.ssh_port,
                                          netns=self.options.firewall_netns)
            threading.Thread(target=self._firewall.keep, args=(self.stopping,),
                             name="firewall", daemon=True).start()
        if not self.credentials_file.exists():
            delays.delay("agent.enroll", self.stopping)
            if self.stopping.is_set():
                return
        client = self.connect()
        if self.options.host_access:
            self._access = HostAccess(client=client, state_dir=self.options.data_dir,
                                      etc_root=self.options.etc_root,
                                      sshd_pid_file=self.options.sshd_pid_file,
                                      sshd_log=self.options.sshd_log,
                                      ssh_port=self.options.ssh_port)
        delays.delay("agent.services", self.stopping)
        if not self.stopping.is_set():  # asked to stop while it started: start nothing
            self._tell_services_ended(None)  # (starting it again forgets the pid file)
            self.services.ensure_started(self.stopping)  # (nor the rest, asked meanwhile)
            if self.services.has_daemon():  # even if it already died again: this sees to it
                threading.Thread(target=self._keep_services, name="keep-services",
                                 daemon=True).start()
        started = time.monotonic()

        def ceiling() -> float:
            # Soon after the start (the control plane may be starting beside us) the agent
            # asks every second at most; later, while it is away, every 10 s at most.
            return 1.0 if time.monotonic() - started < 60 else 10.0

        feed = DesiredFeed(lambda g, w: self.fetch_desired(client, generation=g, wait=w),
                           self.stopping, wait=self.poll_wait, backoff=ceiling).start()
        settled, reachable, backoff = False, False, 0.5
        while not self.stopping.is_set():
            got = feed.next(IDLE_WAIT if settled else 0.25)
            try:
                if got is not None and got.error is not None:
                    raise got.error
                if got is not None and got.refused:  # say why, with the host part
                    self._report({})
                    settled = False
                    continue
                reachable = reachable or got is not None
                desired = feed.latest
                if desired is None or not reachable:
                    continue  # nothing to converge to yet, or the control plane away
                if self._firewall is not None:  # the port the ingress really listens on
                    self._firewall.ingress_port = desired.host.ingress_port
                settled = self.tick(desired)
                if self._access is not None:
                    try:
                        self._access.converge(desired.generation)
                    except (TenantryError, OSError) as exc:
                        log.warning("host access: %s", exc)
                backoff = 0.5
            except (httpx.HTTPError, Unavailable) as exc:
                log.warning("control plane unreachable (%s); services keep running", exc)
                if self._desired is not None and not self.stopping.is_set():
                    self.monitoring.keep(self._desired)  # (at a stop the API goes first)
                settled = False
                if got is not None and got.error is not None:
                    reachable = False  # the feed paces its next question
                else:  # a report failed: the next pass waits a little
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, ceiling())
        feed.wake()
        client.close()
        self._pool.shutdown(wait=True)
        self.backups.close()
        if self.options.stop_services_on_exit:
            log.info("stopping every service on this host")
            self.services.shutdown()
            shutil.rmtree(self.paths.sockets, ignore_errors=True)

    def stop(self, *_: object) -> None:
        self.stopping.set()


def describe_invalid(exc: ValidationError) -> str:
    """Where and why a document is invalid, without the values (they may be secrets)."""
    errors = exc.errors(include_input=False, include_url=False)
    text = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(document)'}: {e['msg']}"
                     for e in errors[:5])
    return text + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")


def _recheck_every(p: DesiredPlatform, report: PlatformReport) -> float:
    """How long a settled platform goes unobserved. A crash needs no look to be noticed
    (supervisord tells its exits), a hang does: apps that ask to be restarted when they hang
    (`restart_after`) and platforms that are not well are looked at every RECHECK s; the rest,
    on a slow schedule spread by the platform's id so that a host's checks do not come at
    once."""
    if not _well(p, report) or any(p.release(s.release_id).manifest.restart_after
                                   for s in p.slots.values()):
        return RECHECK
    return RECHECK_IDLE * (0.8 + 0.4 * (zlib.crc32(p.id.encode()) % 1000) / 1000)


def _well(p: DesiredPlatform, report: PlatformReport) -> bool:
    """Nothing in the report the control plane would judge a problem (hosts.health_problems)."""
    if report.error or report.gen < p.gen:
        return False
    if not p.running or p.absent:
        return True
    return report.database == "ready" and all(s.healthy for s in report.slots.values())


def _settled(p: DesiredPlatform, report: PlatformReport | None) -> bool:
    report = report if report is not None else PlatformReport()
    if report.error:
        return False
    if p.absent:
        return report.absent
    if not p.running:
        return True
    return (report.database == "ready"
            and all(s.healthy or s.state == "failed" for s in report.slots.values())
            and (p.route is None or report.route_slot == p.route.slot))


def run_agent(options: AgentOptions) -> None:
    agent = Agent(options)
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)
    agent.run()
