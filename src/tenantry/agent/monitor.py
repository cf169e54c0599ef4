"""The agent's monitoring duties on its host: the exporters, /metrics, and where to scrape.

On every pass (and while the control plane is away, since clusters still come and go) the
agent calls `keep`: it converges the exporters, tells /metrics how to make its snapshots of
the host (`AgentMetrics.use`) and the prober which platforms to ask (prober.py), and
refreshes the targets it reports (`HostObserved.monitoring`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pwd
import time
import traceback
from collections.abc import Collection
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tenantry.agent import backups, converge, dbusage, exporters, pgcluster, unixusers
from tenantry.agent.metrics import (
    AgentMetrics,
    ExpectedDatabase,
    HostSnapshot,
    MetricsServer,
    slot_processes,
)
from tenantry.agent.ports import listening_ports
from tenantry.agent.prober import ARM_AFTER, Prober, ProbeTarget
from tenantry.agent.rogues import Known
from tenantry.agent.services import ProgramStatus, ServiceManager
from tenantry.core.errors import TenantryError
from tenantry.core.pgserver import SERVICE_USER
from tenantry.monitoring.prometheus import DSN_REPLAN
from tenantry.platforms.contract import DesiredHost, DesiredPlatform

log = logging.getLogger("tenantry.agent")

KEEP_VERIFY = 30.0  # s: the exporters are planned again at least this often


class HostMonitoring:
    def __init__(self, paths: converge.HostPaths, services: ServiceManager, *, host: str,
                 avoid: Collection[int] = ()) -> None:
        self.paths = paths
        self.services = services
        self.host = host  # where the exporters and /metrics listen
        self.avoid = avoid  # ports never to choose (the platforms' range, the ingress)
        self.metrics = AgentMetrics()
        self.prober = Prober()
        self.metrics.live = self.prober
        self._certs: dict[str, tuple[bytes, float]] = {}  # PEM -> (DER, expiry)
        self._web_up_since: dict[str, float] = {}  # unarmed platform -> its web runs since
        self.targets: dict[str, str] = {}  # job → host:port, as reported
        self._server: MetricsServer | None = None
        self._ports: exporters.MonitoringPorts | None = None
        self._db_seen: set[str] = set()  # clusters seen running since their platform started
        self._db_memory = dbusage.MemoryCache()
        self._backups = backups.MetricsReader()
        self._uids: dict[str, int | None] = {}  # Unix user -> uid (None: no such user yet)
        self._kept: tuple[object, ...] | None = None  # what the exporters were planned for
        self._kept_at = 0.0
        self._dsns_put_at = -math.inf  # when postgres_exporter last got a new DSN list
        self._measured: DesiredHost | None = None  # what /metrics is made from

    @property
    def ports_file(self) -> Path:
        return self.paths.root / exporters.PORTS_FILE

    def ports(self, *, save: bool = True) -> exporters.MonitoringPorts:
        """The kept ports, chosen (and kept, with `save`) on first use."""
        if self._ports is None:
            ports = exporters.load_or_choose_ports(self.ports_file, self.host,
                                                   avoid=self.avoid, save=save)
            if not save:
                return ports
            self._ports = ports
        return self._ports

    # ------------------------------------------------------------ /metrics

    def start(self) -> None:
        """Serve /metrics on the kept port, or a new one if another program took it
        meanwhile. Failing that the agent runs on without it: monitoring never stops
        hosting."""
        for attempt in range(2):
            ports = self.ports()
            try:
                self._server = MetricsServer(self.host, ports.agent, self.metrics.text)
                break
            except OSError as exc:
                log.warning("metrics: cannot listen on %s (%s)",
                            exporters.address(self.host, ports.agent), exc)
                if attempt == 0:
                    self._save(ports.with_new("agent", self.host, self.avoid))
        if self._server is not None:
            self._server.start()
            log.info("metrics on http://%s/metrics",
                     exporters.address(self.host, self._server.port))

    def stop(self) -> None:
        """Stop serving /metrics, and the thread that renders it."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.metrics.close()
        self.prober.close()

    def _save(self, ports: exporters.MonitoringPorts) -> None:
        ports.save(self.ports_file)
        self._ports = ports

    # ------------------------------------------------------------ each pass

    def plan(self, desired: DesiredHost, programs: dict[str, ProgramStatus], *,
             hold: Collection[str] = ()) -> list[converge.Action]:
        clusters = exporters.running_clusters(desired.platforms, programs)
        specs = exporters.wanted(self.paths, self.ports(save=False),  # --plan writes nothing
                                 host=self.host, clusters=clusters)
        return exporters.plan(specs, programs, self.services, hold=hold)

    def keep(self, desired: DesiredHost) -> None:
        try:
            self._keep(desired)
        except (TenantryError, OSError) as exc:
            log.warning("monitoring: %s", exc)
        except Exception:  # a bug in monitoring must not stop the agent hosting
            log.error("monitoring crashed:\n%s", traceback.format_exc())

    def _keep(self, desired: DesiredHost) -> None:
        self.ports()
        if desired is not self._measured:
            # A new desired state: /metrics is made from it from now on. The same one again
            # (the agent keeps its object while nothing changed) is left alone: the
            # refresher looks again every few seconds anyway, and telling it of a change
            # makes the next scrape wait for the new page. The source is called on that
            # refresher thread only, so `snapshot`'s state needs no lock.
            self._measured = desired
            self.metrics.use(lambda: self.snapshot(desired, self.services.observe()))
            self.prober.use(("127.0.0.1", desired.host.ingress_port),
                            self.probe_targets(desired))
        programs = self.services.observe()
        self._arm(desired, programs)
        seen = _followed(desired, programs)
        if seen == self._kept and time.monotonic() - self._kept_at < KEEP_VERIFY:
            return  # nothing changed that the exporters follow
        self._repick_taken_ports(programs)
        # A new DSN list waits until DSN_REPLAN s after the last one went in; meanwhile every
        # pass plans again, so the held list goes in once that time is up.
        hold = ({exporters.POSTGRES_EXPORTER}
                if time.monotonic() - self._dsns_put_at < DSN_REPLAN else set())
        for action in self.plan(desired, programs, hold=hold):
            log.info("%s", action.description)
            action.run()
            if action.description == f"run {exporters.POSTGRES_EXPORTER}":
                self._dsns_put_at = time.monotonic()
        programs = self.services.observe()
        self._kept = None if hold else _followed(desired, programs)
        self._kept_at = time.monotonic()
        self.targets = exporters.targets(self.ports(), host=self._scrape_host(desired),
                                         agent_up=self._server is not None, programs=programs)

    def probe_targets(self, desired: DesiredHost) -> list[ProbeTarget]:
        """The platforms the ingress should serve: those it has a route for (running)."""
        targets = []
        certs = {}
        for p in desired.platforms:
            route = p.route
            slot = p.slots.get(route.slot) if route is not None else None
            if route is None or slot is None or p.absent or not p.running:
                continue
            release = next((r for r in p.releases if r.id == slot.release_id), None)
            pem = route.cert_pem
            der, expiry = certs[pem] = self._certs.get(pem) or _der_and_expiry(pem)
            targets.append(ProbeTarget(
                platform_id=p.id, isv=p.isv, platform=f"{p.isv}/{p.name}",
                hostname=route.hostname,
                path=release.manifest.health_path if release is not None else "/",
                cert_der=der, not_after=expiry))
        self._certs = certs  # parsed once each, as long as a platform holds it
        return targets

    def _arm(self, desired: DesiredHost, programs: dict[str, ProgramStatus]) -> None:
        """Platforms whose routed slot's web processes have all run for ARM_AFTER s are
        reported by the prober even if they never answered. Looks only at the platforms not
        armed yet: none, once each answered."""
        unarmed = self.prober.unarmed()
        if not unarmed:
            self._web_up_since.clear()
            return
        now = time.monotonic()
        by_id = {p.id: p for p in desired.platforms if p.id in unarmed}
        for pid in unarmed:
            p = by_id.get(pid)
            if p is None or not _web_running(p, programs):
                self._web_up_since.pop(pid, None)
            elif now - self._web_up_since.setdefault(pid, now) >= ARM_AFTER:
                self.prober.arm(pid)
                self._web_up_since.pop(pid, None)
        for pid in set(self._web_up_since) - unarmed:
            del self._web_up_since[pid]

    def _repick_taken_ports(self, programs: dict[str, ProgramStatus]) -> None:
        if not any((s := programs.get(n)) and s.state == "FATAL" for n in exporters.PROGRAMS):
            return
        ports = self.ports()
        for job in exporters.taken_ports(ports, programs, listening_ports()):
            new = ports.with_new(job, self.host, self.avoid)
            log.warning("monitoring: port %d of the %s exporter is taken; it moves to %d",
                        ports.port(job), job, new.port(job))
            ports = new
        if ports != self._ports:
            self._save(ports)

    def _scrape_host(self, desired: DesiredHost) -> str:
        """The address Prometheus reaches us at: the host's own when we listen on all."""
        return desired.host.address if self.host in ("", "0.0.0.0", "::") else self.host

    def snapshot(self, desired: DesiredHost, programs: dict[str, ProgramStatus],
                 ) -> HostSnapshot:
        """A cluster is expected once seen running (a new platform does not look down while
        its cluster is made), or when its program failed; until its platform stops."""
        wanted = {p.id for p in desired.platforms if p.running and not p.absent}
        running = {p.id for p in exporters.running_clusters(desired.platforms, programs)}
        self._db_seen = (self._db_seen | running) & wanted
        failed = {pid for pid in wanted if (s := programs.get(f"{pid}-db")) is not None
                  and s.state in ("FATAL", "BACKOFF", "EXITED", "STOPPED")}
        postmasters = {pid: s.pid for pid in running
                       if (s := programs.get(f"{pid}-db")) is not None and s.pid}
        self._db_memory.keep_only(set(postmasters.values()))
        databases = tuple(
            ExpectedDatabase(
                server=exporters.server_label(self.paths.socket_dir(p.id), p.database.port),
                isv=p.isv, platform=f"{p.isv}/{p.name}", running=p.id in running,
                memory_bytes=(self._db_memory.of(postmasters[p.id]) if p.id in postmasters
                              else None),
                memory_budget_bytes=dbusage.memory_budget(p.size),
                wal_free_bytes=(dbusage.free_bytes(self.paths.platform(p.id) / "pgdata"
                                                   / "pg_wal") if p.id in running else None))
            for p in sorted(desired.platforms, key=lambda p: p.id)
            if p.id in self._db_seen | failed)
        backed_up = sorted((p for p in desired.platforms if p.backup is not None and not p.absent),
                           key=lambda p: p.id)
        self._backups.keep_only({self.paths.platform(p.id) for p in backed_up})
        found = tuple(self._backups.of(self.paths.platform(p.id), p) for p in backed_up)
        return HostSnapshot(slots=tuple(slot_processes(self.paths, desired.platforms, programs)),
                            databases=databases, backups=found, known=self._known(desired),
                            platforms=tuple((p.id, p.isv, f"{p.isv}/{p.name}")
                                            for p in sorted(desired.platforms,
                                                            key=lambda p: p.id)
                                            if not p.absent))

    def _known(self, desired: DesiredHost) -> Known:
        """Our tree and our supervisord's; the platforms' and tenantry's Unix users."""
        roots = {os.getpid()}
        with contextlib.suppress(OSError, ValueError):
            roots.add(int((self.paths.services / "supervisord.pid").read_text()))
        users = [u for p in desired.platforms if (u := converge.unix_user(p.id))]
        if unixusers.running_as_root():
            users += [SERVICE_USER, pgcluster.TEMPLATE_USER]
        # A user's uid does not change while it exists; looking each up at every refresh
        # read /etc/passwd once per platform. One not there yet is looked up again.
        self._uids = {u: uid if (uid := self._uids.get(u)) is not None else _uid(u)
                      for u in users}
        return Known(roots=frozenset(roots),
                     uids=frozenset(uid for uid in self._uids.values() if uid is not None))


def _uid(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def _der_and_expiry(pem: str) -> tuple[bytes, float]:
    cert = x509.load_pem_x509_certificate(pem.encode())
    return cert.public_bytes(Encoding.DER), cert.not_valid_after_utc.timestamp()


def _web_running(p: DesiredPlatform, programs: dict[str, ProgramStatus]) -> bool:
    route = p.route
    if route is None or not (slot := p.slots.get(route.slot)) or not slot.ports:
        return False
    return all((s := programs.get(converge.program_name(p.id, route.slot, "web", i)))
               is not None and s.state == "RUNNING" for i in range(len(slot.ports)))


def _followed(desired: DesiredHost, programs: dict[str, ProgramStatus]) -> tuple[object, ...]:
    """What the exporters follow: the platforms' clusters and every program's state."""
    return (desired.host.address,
            tuple((p.id, p.running, p.absent, p.database.port) for p in desired.platforms),
            tuple((n, s.state, s.pid) for n, s in programs.items()))
