"""The host's exporters, run by the agent under its service manager like platform programs.

- `node-exporter` always;
- `postgres-exporter`, one for all of the host's platform clusters that run (a DSN each, as
  the superuser over the cluster's Unix socket; pg_ident maps root to it). A DSN that does
  not answer costs postgres_exporter 0.11 about a second of every scrape, one after the
  other, so a cluster is listed only while its program runs: a crashed one then shows as
  "expected by the agent, absent from the exporter" (`tenantry_database_expected`).

Their ports and the agent's own /metrics port are chosen once among free ports and kept in
`monitoring.json` in the agent's data dir, so restarts keep Prometheus's targets.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from collections.abc import Collection, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

from tenantry.agent import converge
from tenantry.agent.services import ProgramSpec, ProgramStatus, ServiceManager
from tenantry.core.crypto import write_private
from tenantry.core.errors import InvalidInput
from tenantry.monitoring import stack
from tenantry.platforms.contract import DesiredPlatform

NODE_EXPORTER = "node-exporter"
POSTGRES_EXPORTER = "postgres-exporter"
PROGRAMS = frozenset({NODE_EXPORTER, POSTGRES_EXPORTER})
JOBS = ("node", "agent", "postgres")  # the scrape jobs, as HostObserved.monitoring names them
PORTS_FILE = "monitoring.json"
_PATH_RE = re.compile(r"^/[A-Za-z0-9_./-]+$")  # what a DSN and the `server` label can carry


@dataclass(frozen=True)
class MonitoringPorts:
    node: int
    agent: int
    postgres: int

    @classmethod
    def load(cls, path: Path) -> MonitoringPorts | None:
        try:
            data = json.loads(path.read_text())
            ports = cls(**{job: int(data[job]) for job in JOBS})
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return ports if all(1 <= p <= 65535 for p in asdict(ports).values()) else None

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(asdict(self), sort_keys=True).encode())

    def port(self, job: str) -> int:
        return int(asdict(self)[job])

    def with_new(self, job: str, host: str, avoid: Collection[int] = ()) -> MonitoringPorts:
        """A fresh free port for `job` (its own was taken while it was not listening)."""
        taken = {*avoid, *asdict(self).values()}
        return replace(self, **{job: free_ports(host, 1, avoid=taken)[0]})


def free_ports(host: str, count: int, *, avoid: Collection[int] = ()) -> list[int]:
    """Ports the kernel calls free on `host`, all different and none in `avoid`. The sockets
    stay bound until all are chosen, so one call never returns the same port twice."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    found: list[int] = []
    with ExitStack() as held:
        for _ in range(count + 100):
            if len(found) == count:
                return found
            sock = held.enter_context(socket.socket(family, socket.SOCK_STREAM))
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
            if port not in avoid:
                found.append(port)
    raise OSError(f"no free port on {host} outside the platforms' range")


def load_or_choose_ports(path: Path, host: str, *, avoid: Collection[int] = (),
                         save: bool = True) -> MonitoringPorts:
    ports = MonitoringPorts.load(path)
    if ports is None:
        ports = MonitoringPorts(*free_ports(host, len(JOBS), avoid=avoid))
        if save:
            ports.save(path)
    return ports


def address(host: str, port: int) -> str:
    """host:port as a scrape target (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---------------------------------------------------------------- postgres_exporter


def _checked(socket_dir: Path) -> str:
    path = str(socket_dir)
    if not _PATH_RE.fullmatch(path):
        raise InvalidInput(f"socket dir {path!r} cannot go into a DSN list", field="socket_dir")
    return path


def cluster_dsn(socket_dir: Path, port: int) -> str:
    """The superuser over the cluster's Unix socket, peer-authenticated (no password)."""
    return (f"postgresql://postgres@:{port}/postgres?host={_checked(socket_dir)}"
            "&sslmode=disable")


def server_label(socket_dir: Path, port: int) -> str:
    """How postgres_exporter 0.11 labels that DSN's series: `server="SOCKETDIR:PORT"`
    (its fingerprint is the DSN's host and port; checked on Debian 12 in
    tests/agent/test_exporters.py)."""
    return f"{_checked(socket_dir)}:{port}"


def running_clusters(platforms: Sequence[DesiredPlatform],
                     programs: Mapping[str, ProgramStatus]) -> list[DesiredPlatform]:
    """Platforms whose cluster runs now, in id order."""
    return sorted((p for p in platforms if not p.absent and p.running
                   and (s := programs.get(f"{p.id}-db")) is not None and s.state == "RUNNING"),
                  key=lambda p: p.id)


# ---------------------------------------------------------------- the programs


def wanted(paths: converge.HostPaths, ports: MonitoringPorts, *, host: str,
           clusters: Sequence[DesiredPlatform]) -> list[ProgramSpec]:
    """The exporters this host should run; none whose binary is not installed. Their logs
    go where the service manager keeps its own programs' logs."""
    listen = f"[{host}]" if ":" in host else host
    specs = []
    if _installed("node_exporter"):
        specs.append(stack.node_exporter(NODE_EXPORTER, host=listen, port=ports.node))
    if clusters and _installed("postgres_exporter"):
        dsns = [cluster_dsn(paths.socket_dir(p.id), p.database.port) for p in clusters]
        specs.append(stack.postgres_exporter(POSTGRES_EXPORTER, host=listen,
                                             port=ports.postgres, dsns=dsns))
    return specs


def _installed(program: str) -> bool:
    return shutil.which(stack.binary(program)) is not None


def plan(specs: Sequence[ProgramSpec], programs: Mapping[str, ProgramStatus],
         services: ServiceManager, *, hold: Collection[str] = ()) -> list[converge.Action]:
    """Put an exporter only when its spec changed (a new DSN list) or it stopped; remove
    one no longer wanted. FATAL stays FATAL, as for platforms (see `taken_ports`). One
    named in `hold` that runs keeps its old spec for now (see DSN_REPLAN)."""
    actions = []
    for spec in specs:
        current = programs.get(spec.name)
        if current is None or current.state in ("STOPPED", "EXITED") or (
                current.digest != spec.digest() and not held(spec.name, programs, hold)):
            actions.append(converge.Action(f"run {spec.name}", partial(services.put, spec)))
    names = {spec.name for spec in specs}
    for name in sorted(PROGRAMS - names):
        if name in programs:
            actions.append(converge.Action(f"remove {name}", partial(services.remove, name)))
    return actions


def held(name: str, programs: Mapping[str, ProgramStatus], hold: Collection[str]) -> bool:
    """Whether a change of this exporter's spec waits: it is held and it runs."""
    status = programs.get(name)
    return name in hold and status is not None and status.state in (
        "RUNNING", "STARTING", "BACKOFF")


def taken_ports(ports: MonitoringPorts, programs: Mapping[str, ProgramStatus],
                listening: Collection[int]) -> list[str]:
    """Jobs whose exporter gave up (FATAL) while something else listens on its port: most
    likely the port was taken while the exporter was down (a reboot). They get a new one."""
    jobs = []
    for job, name in (("node", NODE_EXPORTER), ("postgres", POSTGRES_EXPORTER)):
        status = programs.get(name)
        if status is not None and status.state == "FATAL" and ports.port(job) in listening:
            jobs.append(job)
    return jobs


def targets(ports: MonitoringPorts, *, host: str, agent_up: bool,
            programs: Mapping[str, ProgramStatus]) -> dict[str, str]:
    """Where to scrape this host, by job. The node exporter is listed while it is configured,
    even down (a silent host must alert); the postgres exporter only while it runs, since
    with no cluster running there is none."""
    found = {}
    if NODE_EXPORTER in programs:
        found["node"] = address(host, ports.node)
    status = programs.get(POSTGRES_EXPORTER)
    if status is not None and status.state in ("RUNNING", "STARTING"):
        found["postgres"] = address(host, ports.postgres)
    if agent_up:
        found["agent"] = address(host, ports.agent)
    return dict(sorted(found.items()))
