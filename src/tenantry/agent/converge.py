"""Convergence: observe the host, compare with the desired state, act on the difference.

`plan_platform` is pure: facts and the desired platform in, a list of actions out. The
agent applies the actions in order; each is idempotent, so a pass cut short by a crash is
simply planned and applied again. `--plan` prints the actions instead of applying them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

from tenantry.agent import backups, drill, files, ingress, pgcluster, ports, releases, unixusers
from tenantry.agent.services import ProgramSpec, ProgramStatus, ServiceManager
from tenantry.core.crypto import write_private
from tenantry.core.errors import InvalidInput
from tenantry.platforms.contract import (
    BackupReport,
    BackupTask,
    DesiredHost,
    DesiredMigration,
    DesiredPlatform,
    DesiredRelease,
    DesiredSlot,
    PlatformReport,
    SlotName,
    SlotReport,
)

INGRESS_PROGRAM = "ingress"
MIGRATION_TIMEOUT = 600


@dataclass(frozen=True)
class Action:
    description: str
    run: Callable[[], None] = field(compare=False, repr=False)


@dataclass
class HostPaths:
    root: Path

    @property
    def platforms(self) -> Path:
        return self.root / "platforms"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def bundles(self) -> Path:
        return self.root / "bundles"

    @property
    def pg_template(self) -> Path:
        return self.root / "pg-template"

    @property
    def ingress(self) -> Path:
        return self.root / "ingress"

    @property
    def services(self) -> Path:
        return self.root / "services"

    def platform(self, pid: str) -> Path:
        return self.platforms / pid

    def socket_dir(self, pid: str) -> Path:
        """Unix socket paths are short (108 bytes): keep them under the temp dir."""
        return self.sockets / pid

    @property
    def sockets(self) -> Path:
        tag = hashlib.sha256(str(self.root).encode()).hexdigest()[:8]
        return Path(tempfile.gettempdir()) / f"tnt-{tag}"

    def ingress_admin(self) -> str:
        return f"unix/{self.sockets / 'caddy-admin.sock'}"

    def prepare(self) -> None:
        for d in (self.root, self.platforms, self.releases, self.bundles, self.ingress):
            d.mkdir(parents=True, exist_ok=True)
        # Platform users must be able to walk to their own directory and to the releases.
        for d in (self.root, self.platforms, self.releases):
            d.chmod(0o711 if d != self.releases else 0o755)
        self.sockets.mkdir(mode=0o711, exist_ok=True)
        # A clean stop removes the sockets' dir (it is under /tmp, which a reboot empties as
        # well), and the new supervisord starts each database before any pass: without its
        # socket dir, PostgreSQL exits at once ("could not create lock file") and stays down
        # until the platform's next pass.
        for home in self.platforms.iterdir():
            sock = self.socket_dir(home.name)
            if (home / "pgdata" / "PG_VERSION").exists() and not sock.exists():
                with contextlib.suppress(InvalidInput):  # no user: the next pass makes both
                    pgcluster.make_socket_dir(sock, unix_user(home.name))


@dataclass
class PlatformFacts:
    """What is true on this host for one platform, read before planning."""

    programs: dict[str, ProgramStatus]
    cluster_initialized: bool
    database_marker: str | None
    built: set[str]
    migrations: dict[str, str]
    healthy_ports: set[int]
    user_exists: bool
    dir_exists: bool
    files_dir_exists: bool = True
    taken_ports: set[int] = field(default_factory=set)  # ours on paper, held by another program
    conf_current: bool = True  # tenantry.conf says what the desired state asks
    backup_config_current: bool = True
    needs_stanza: bool = False
    backup_tasks: list[BackupTask] = field(default_factory=list)  # to start
    backup: BackupReport | None = None
    restore_state: str | None = None  # of the restore asked for: None (not run), ok, failed
    target_unreached: bool = False  # PostgreSQL stopped: no commit after the restore's time
    promoted_asleep: bool = False  # restored and promoted; its checkpointer not woken yet
    drill_next: str | None = None  # the drill's phase to carry out here (see agent.drill)


def program_name(pid: str, slot: str, proc: str, i: int) -> str:
    """supervisord's name for process `i` of kind `proc` (web, worker...) in a slot."""
    return f"{pid}-{slot}-{proc}-{i}"


def unix_user(pid: str) -> str | None:
    return f"tp-{pid}" if unixusers.running_as_root() else None


def cluster_spec(paths: HostPaths, p: DesiredPlatform) -> pgcluster.ClusterSpec:
    extra = backups.archive_settings(paths.platform(p.id), p)
    return pgcluster.ClusterSpec(datadir=paths.platform(p.id) / "pgdata",
                                 port=p.database.port, owner=unix_user(p.id),
                                 size=p.size, socket_dir=paths.socket_dir(p.id),
                                 extra=tuple(sorted(extra.items())))


def database_marker(p: DesiredPlatform) -> str:
    db = p.database
    return hashlib.sha256(json.dumps([db.role, db.dbname, db.password.get_secret_value()]
                                     ).encode()).hexdigest()


def slot_programs(paths: HostPaths, p: DesiredPlatform, slot: str,
                  info: DesiredSlot) -> list[ProgramSpec]:
    release = p.release(info.release_id)
    rpath = releases.release_dir(paths.releases, release.digest)
    db = p.database
    base_env = {
        **releases.process_env(rpath),
        "DATABASE_URL": pgcluster.database_url(role=db.role,
                                               password=db.password.get_secret_value(),
                                               dbname=db.dbname, port=db.port),
        "TENANTRY_PLATFORM": f"{p.isv}/{p.name}",
        "TENANTRY_TENANTS": ",".join(p.tenants),
        "TENANTRY_RELEASE": f"{release.app}@{release.version}",
        "HOME": str(paths.platform(p.id)),
        "TENANTRY_FILES_DIR": str(files.files_dir(paths.platform(p.id))),
    }
    logs = paths.platform(p.id) / "logs"
    specs: list[ProgramSpec] = []
    for proc, argv in sorted(release.manifest.processes.items()):
        count = len(info.ports) if proc == "web" else 1
        for i in range(count):
            name = program_name(p.id, slot, proc, i)
            env = dict(base_env)
            if proc == "web":
                env["PORT"] = str(info.ports[i])
            specs.append(ProgramSpec(name=name, command=tuple(argv), environment=env,
                                     user=unix_user(p.id),
                                     directory=str(releases.app_dir(rpath)),
                                     log_file=str(logs / f"{name}.log"), start_seconds=1))
    return specs


def db_program(paths: HostPaths, p: DesiredPlatform) -> ProgramSpec:
    return pgcluster.program_spec(cluster_spec(paths, p), name=f"{p.id}-db",
                                  log_file=str(paths.platform(p.id) / "logs" / "postgres.log"))


def _migrations_file(paths: HostPaths, pid: str) -> Path:
    return paths.platform(pid) / "migrations.json"


def read_migrations(paths: HostPaths, pid: str) -> dict[str, str]:
    path = _migrations_file(paths, pid)
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {str(k): str(v) for k, v in data.items()}


def observe_platform(paths: HostPaths, p: DesiredPlatform,
                     programs: dict[str, ProgramStatus],
                     runner: backups.BackupRunner | None = None,
                     drills: drill.Drills | None = None) -> PlatformFacts:
    pid = p.id
    root = paths.platform(pid)
    marker = root / "database.marker"
    built = {r.id for r in p.releases
             if (releases.release_dir(paths.releases, r.digest) / releases.BUILT).exists()}
    mine = {n: s for n, s in programs.items() if n.startswith(f"{pid}-")}
    healthy: set[int] = set()
    for slot, info in p.slots.items():
        if info.release_id not in built:
            continue
        path = p.release(info.release_id).manifest.health_path
        for i, port in enumerate(info.ports):
            status = mine.get(program_name(pid, slot, "web", i))
            if status and status.state == "RUNNING" and _healthy(port, path):
                healthy.add(port)
    user = unix_user(pid)
    initialized = (root / "pgdata" / "PG_VERSION").exists() and paths.socket_dir(pid).is_dir()
    spec = cluster_spec(paths, p)
    facts = PlatformFacts(
        programs=mine,
        # The socket dir lives under /tmp, which may be wiped (a reboot, our own clean stop).
        cluster_initialized=initialized,
        database_marker=marker.read_text() if marker.exists() else None,
        built=built,
        migrations=read_migrations(paths, pid),
        healthy_ports=healthy,
        taken_ports=_taken_ports(p, mine),
        user_exists=user is None or _user_exists(user),
        dir_exists=root.exists(),
        files_dir_exists=files.files_dir(root).is_dir(),
        conf_current=not initialized or pgcluster.conf_current(spec),
    )
    if p.backup is not None and runner is not None and not p.absent:
        db = mine.get(f"{pid}-db")
        facts.backup_config_current = runner.config_current(root, p, spec)
        facts.needs_stanza = runner.needs_stanza(root, p, spec)
        facts.backup_tasks = runner.tasks_to_start(root, p)
        facts.restore_state = runner.restore_state(root, p)
        facts.target_unreached = pgcluster.target_unreached(spec, root / "logs" / "postgres.log")
        facts.promoted_asleep = backups.wake_file(root).exists() and \
            not (spec.datadir / "recovery.signal").exists()
        facts.backup = runner.report(root, p, spec,
                                     database_up=db is not None and db.state == "RUNNING")
        if drills is not None:
            facts.drill_next = drills.pending(pid, p.backup.drill)
            facts.backup.drill = drills.report(pid, p.backup.drill)
    return facts


def _taken_ports(p: DesiredPlatform, mine: dict[str, ProgramStatus]) -> set[int]:
    """Ports of this platform that something else listens on: its own program is not up."""
    wanted: dict[int, str] = {p.database.port: f"{p.id}-db"}
    for slot, info in p.slots.items():
        for i, port in enumerate(info.ports):
            wanted[port] = program_name(p.id, slot, "web", i)
    listening = ports.listening_now()
    return {port for port, name in wanted.items() if port in listening and (
        mine.get(name) is None or mine[name].state not in ("RUNNING", "STARTING", "STOPPING"))}


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


HEALTH_TIMEOUT = 1.0  # s for an app process to answer its health path


def _healthy(port: int, path: str) -> bool:
    """Whether the app process on `port` answers `path` with a 200 within HEALTH_TIMEOUT.

    A bare socket reading the status line, not an HTTP client: the agent asks every web
    process of every platform, and httpx's own work per request cost more than the app's
    answer (a tenth of the agent's time on a host of 100 idle platforms). The path has no
    whitespace (bundles.py refuses it), so it goes into the request line as it is.
    """
    deadline = time.monotonic() + HEALTH_TIMEOUT
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Connection: close\r\n\r\n").encode()
    head = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=HEALTH_TIMEOUT) as sock:
            sock.sendall(request)
            while b"\r\n" not in head and len(head) < 4096:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
    except OSError:  # refused, reset, or timed out
        return False
    status = head.split(b"\r\n", 1)[0].split()
    return len(status) >= 2 and status[0].startswith(b"HTTP/1.") and status[1] == b"200"


def release_python() -> str:
    """The interpreter release virtualenvs are made from.

    Every platform user must be able to execute it, so not one under a private home (a
    pyenv in /root, say): the system's python3 (Debian python3-venv) when there is one.
    """
    system = Path("/usr/bin/python3")
    return str(system) if system.exists() else sys.executable


class Effects:
    """The side effects the plan's actions call; one object so tests can swap it."""

    def __init__(self, paths: HostPaths, services: ServiceManager,
                 fetch_bundle: Callable[[str, Path], None],
                 backups: backups.BackupRunner | None = None,
                 drills: drill.Drills | None = None) -> None:
        self.paths = paths
        self.services = services
        self.fetch_bundle = fetch_bundle
        self.backups = backups
        self.drills = drills

    def make_home(self, p: DesiredPlatform) -> None:
        user = unix_user(p.id)
        root = self.paths.platform(p.id)
        (root / "logs").mkdir(parents=True, exist_ok=True)
        if user:  # the home first: a user whose home is gone is an orphan (remove_orphans)
            unixusers.ensure_user(user, home=root)
        root.chmod(0o700)
        unixusers.chown_tree(root, user)
        # Logs are written by the service manager (root), read by the operator.
        (root / "logs").chmod(0o700)
        backups.ensure_files_dir(root, user)

    def init_cluster(self, p: DesiredPlatform) -> None:
        pgcluster.init_cluster(cluster_spec(self.paths, p), template_dir=self.paths.pg_template)

    def configure_cluster(self, p: DesiredPlatform) -> None:
        pgcluster.configure(cluster_spec(self.paths, p))

    def configure_backups(self, p: DesiredPlatform) -> None:
        assert self.backups is not None
        self.backups.configure(self.paths.platform(p.id), p, cluster_spec(self.paths, p))

    def restore(self, p: DesiredPlatform) -> None:
        assert self.backups is not None
        spec = cluster_spec(self.paths, p)
        name = f"{p.id}-db"
        if name in self.services.observe():  # never a server starting on half the files
            self.services.stop(name)
        self.backups.restore(self.paths.platform(p.id), p, spec)
        pgcluster.init_cluster(spec)  # settings, socket dir: the cluster itself is there

    def drill(self, p: DesiredPlatform, phase: str) -> None:
        assert self.drills is not None and p.backup is not None and p.backup.drill is not None
        task, spec = p.backup.drill, cluster_spec(self.paths, p)
        if phase == "load":
            self.drills.load(p.id, task, spec, p.database.dbname)
        elif phase == "destroy":
            self.drills.destroy(p.id, task, spec,
                                backups.backup_dir(self.paths.platform(p.id)) / "spool",
                                self.paths.platform(p.id))
        elif phase == "verify":
            self.drills.verify(p.id, task, spec, p.database.dbname)

    def create_stanza(self, p: DesiredPlatform) -> None:
        assert self.backups is not None
        self.backups.create_stanza(self.paths.platform(p.id), p, cluster_spec(self.paths, p))

    def start_backup(self, p: DesiredPlatform, task: BackupTask) -> None:
        assert self.backups is not None
        self.backups.start(self.paths.platform(p.id), p, cluster_spec(self.paths, p), task)

    def wake_checkpointer(self, p: DesiredPlatform) -> None:
        pgcluster.wake_checkpointer(cluster_spec(self.paths, p))
        backups.wake_file(self.paths.platform(p.id)).unlink(missing_ok=True)

    def ensure_database(self, p: DesiredPlatform) -> None:
        spec = cluster_spec(self.paths, p)
        pgcluster.wait_ready(spec, timeout=60)
        db = p.database
        pgcluster.ensure_database(spec, role=db.role, password=db.password.get_secret_value(),
                                  dbname=db.dbname)
        (self.paths.platform(p.id) / "database.marker").write_text(database_marker(p))

    def build(self, release: DesiredRelease) -> None:
        tarball = self.paths.bundles / f"{release.digest.removeprefix('sha256:')}.tar.gz"
        if not tarball.exists():
            self.fetch_bundle(release.digest, tarball)
        releases.build_release(tarball=tarball, digest=release.digest,
                               releases_dir=self.paths.releases, python=release_python())

    def migrate(self, p: DesiredPlatform, migration: DesiredMigration) -> None:
        """Run the release command once; its outcome is recorded before anything else."""
        spec = cluster_spec(self.paths, p)
        pgcluster.wait_ready(spec, timeout=60)
        release = p.release(migration.release_id)
        command = release.manifest.release_command
        assert command is not None  # the control plane asks only for releases that have one
        rpath = releases.release_dir(self.paths.releases, release.digest)
        env = dict(slot_programs(self.paths, p, "m",
                                 DesiredSlot(release_id=release.id, ports=[0]))[0].environment)
        env.pop("PORT", None)
        argv = unixusers.run_as(unix_user(p.id), command)
        try:
            done = subprocess.run(argv, cwd=releases.app_dir(rpath), env=env, capture_output=True,
                                  text=True, timeout=MIGRATION_TIMEOUT)
            ok = done.returncode == 0
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        except (OSError, subprocess.TimeoutExpired) as exc:
            ok, tail = False, str(exc)
        results = read_migrations(self.paths, p.id)
        results[migration.id] = "ok" if ok else f"failed: {tail or 'exit status non-zero'}"
        write_private(_migrations_file(self.paths, p.id), json.dumps(results).encode())

    def remove_platform(self, p: DesiredPlatform) -> None:
        for name in list(self.services.observe()):
            if name.startswith(f"{p.id}-"):
                self.services.remove(name)
        if (self.paths.platform(p.id) / "pgdata").exists() or \
                self.paths.socket_dir(p.id).exists():
            pgcluster.remove_cluster(cluster_spec(self.paths, p))
        shutil.rmtree(self.paths.platform(p.id), ignore_errors=True)
        user = unix_user(p.id)
        if user:
            with unixusers.GROUPS:
                unixusers.remove_user(user)
                unixusers.remove_group_if_empty(backups.isv_group(p.isv))


def plan_platform(p: DesiredPlatform, facts: PlatformFacts, fx: Effects) -> list[Action]:
    pid = p.id
    actions: list[Action] = []
    if p.absent:
        if facts.programs or facts.dir_exists or (unix_user(pid) and facts.user_exists):
            actions.append(Action(f"{pid}: remove every process, the cluster, files and user",
                                  lambda: fx.remove_platform(p)))
        return actions
    if not facts.dir_exists or not facts.user_exists or not facts.files_dir_exists:
        actions.append(Action(f"{pid}: create home and Unix user", lambda: fx.make_home(p)))
    backing_up = p.backup is not None and fx.backups is not None
    if backing_up and facts.drill_next == "destroy" and fx.drills is not None:
        return [Action(f"{pid}: drill: destroy the database", lambda: fx.drill(p, "destroy"))]
    restore = p.backup.restore if backing_up and p.backup else None
    drill_task = p.backup.drill if backing_up and p.backup else None
    if drill_task is not None and drill_task.phase == "destroy" and restore is None:
        return actions  # the recovery is on another host: nothing is made again here
    restore_pending = restore is not None and facts.restore_state is None
    restore_failed = restore is not None and (facts.restore_state or "").startswith("failed")
    db_now = facts.programs.get(f"{pid}-db")
    db_down = db_now is None or db_now.state not in ("RUNNING", "STARTING", "BACKOFF",
                                                              "STOPPING")
    if restore is not None and restore_pending and (
            not facts.cluster_initialized or (db_down and not p.running)):
        actions.append(Action(f"{pid}: restore PostgreSQL from backup ({restore.id})",
                              lambda: fx.restore(p)))
    elif not facts.cluster_initialized and not restore_failed:
        actions.append(Action(f"{pid}: create PostgreSQL cluster on port "
                              f"{p.database.port}", lambda: fx.init_cluster(p)))
    elif not facts.conf_current:
        actions.append(Action(f"{pid}: write PostgreSQL settings",
                              lambda: fx.configure_cluster(p)))
    if backing_up and not facts.backup_config_current:
        actions.append(Action(f"{pid}: write pgBackRest configuration",
                              lambda: fx.configure_backups(p)))
    wanted: dict[str, ProgramSpec] = {}
    dbspec = db_program(fx.paths, p)
    running = p.running
    current_db = facts.programs.get(dbspec.name)
    # Never start a cluster a restore is about to replace, nor one a restore left broken.
    db_blocked = p.database.port in facts.taken_ports or restore_pending or restore_failed
    if running and not db_blocked and facts.target_unreached:
        actions.append(Action(f"{pid}: recover to the end of the archive (no commit after the "
                              "restore's target time)",
                              lambda: pgcluster.drop_recovery_target(cluster_spec(fx.paths, p))))
    if running and not db_blocked:
        if current_db is None or current_db.digest != dbspec.digest() or \
                current_db.state not in ("RUNNING", "STARTING"):
            actions.append(Action(f"{pid}: run PostgreSQL", lambda: fx.services.put(dbspec)))
        if facts.database_marker != database_marker(p):
            actions.append(Action(f"{pid}: create role and database",
                                  lambda: fx.ensure_database(p)))
        if facts.promoted_asleep and current_db is not None and current_db.state == "RUNNING":
            actions.append(Action(f"{pid}: checkpoint after the recovery (archive_timeout "
                                  "holds again)", lambda: fx.wake_checkpointer(p)))
        if backing_up and facts.drill_next in ("load", "verify") and fx.drills is not None:
            phase = facts.drill_next
            actions.append(Action(f"{pid}: drill: {phase}", partial(fx.drill, p, phase)))
        if backing_up and (facts.needs_stanza or not facts.backup_config_current):
            actions.append(Action(f"{pid}: create pgBackRest stanza",
                                  lambda: fx.create_stanza(p)))
        elif backing_up:
            for task in facts.backup_tasks:
                actions.append(Action(f"{pid}: start {task.type} backup {task.id}",
                                      partial(fx.start_backup, p, task)))
    wanted[dbspec.name] = dbspec
    for release in p.releases:
        if release.id not in facts.built:
            actions.append(Action(f"build {release.app}@{release.version}",
                                  partial(fx.build, release)))
    done = dict(facts.migrations)
    for migration in p.migrations:
        if migration.id not in done and running:
            release = p.release(migration.release_id)
            actions.append(Action(
                f"{pid}: run release command of {release.app}@{release.version}",
                partial(fx.migrate, p, migration)))
            done[migration.id] = "pending"
    idle: set[str] = set()  # programs of a slot that is not to run (a restore stops the app)
    for slot, info in sorted(p.slots.items()):
        after = info.after_migration
        if after and not done.get(after, "").startswith(("ok", "pending")):
            continue  # never start code whose migration failed or has not run
        for spec in slot_programs(fx.paths, p, slot, info):
            wanted[spec.name] = spec
            if not (running and info.running):
                idle.add(spec.name)
                continue
            if int(spec.environment.get("PORT", "0")) in facts.taken_ports:
                continue  # reported as a conflict; the control plane hands out another port
            current = facts.programs.get(spec.name)
            # FATAL stays FATAL: restarting it here would hide a broken release from the job.
            if current is None or current.digest != spec.digest() or current.state in (
                    "STOPPED", "EXITED"):
                actions.append(Action(f"{pid}: run {spec.name}",
                                      partial(fx.services.put, spec)))
    for name, status in sorted(facts.programs.items()):
        if name not in wanted:
            actions.append(Action(f"{pid}: remove {name}",
                                  partial(fx.services.remove, name)))
        elif (not running or name in idle) and status.state in ("RUNNING", "STARTING",
                                                                 "BACKOFF"):
            actions.append(Action(f"{pid}: stop {name}",
                                  partial(fx.services.stop, name)))
    return actions


def report_platform(p: DesiredPlatform, facts: PlatformFacts, paths: HostPaths,
                    error: str | None, route_slot: SlotName | None) -> PlatformReport:
    if p.absent:
        gone = not facts.programs and not facts.dir_exists
        return PlatformReport(gen=p.gen, absent=gone, error=error)
    dbname = f"{p.id}-db"
    db_status = facts.programs.get(dbname)
    if facts.target_unreached:
        database = "recovering"  # to the end of the archive now (see plan_platform)
    elif db_status is not None and db_status.state == "FATAL":
        database = "error: PostgreSQL exited: " + _log_tail(
            paths.platform(p.id) / "logs", ["postgres"])
    elif db_status is None or db_status.state != "RUNNING":
        database = "stopped"
    elif (paths.platform(p.id) / "pgdata" / "recovery.signal").exists():
        database = "recovering"  # replaying WAL after a restore; promoted when done
    elif facts.database_marker == database_marker(p):
        database = "ready"
    else:
        database = "starting"
    slots: dict[SlotName, SlotReport] = {}
    for slot, info in p.slots.items():
        names = [n for n in facts.programs if n.startswith(f"{p.id}-{slot}-")]
        states = {facts.programs[n].state for n in names}
        ports = info.ports
        after = info.after_migration
        if after and facts.migrations.get(after, "").startswith("failed"):
            slots[slot] = SlotReport(state="failed", healthy=False,
                                     detail=f"migration {after} failed")
            continue
        state: Literal["running", "starting", "stopped", "failed"]
        if not names:
            state = "stopped"
        elif states & {"FATAL"}:
            state = "failed"
        elif states <= {"RUNNING"}:
            state = "running"
        elif states & {"RUNNING", "STARTING", "BACKOFF"}:
            state = "starting"
        else:
            state = "stopped"
        detail = ""
        if state == "failed":
            detail = _log_tail(paths.platform(p.id) / "logs", names)
        slots[slot] = SlotReport(state=state,
                                 healthy=bool(ports) and set(ports) <= facts.healthy_ports,
                                 detail=detail)
    return PlatformReport(gen=p.gen, database=database, conflicts=sorted(facts.taken_ports),
                          releases={rid: "built" for rid in facts.built},
                          migrations=facts.migrations, slots=slots, route_slot=route_slot,
                          absent=False, error=error, backup=facts.backup)


def _log_tail(logs: Path, names: list[str]) -> str:
    for name in sorted(names):
        path = logs / f"{name}.log"
        if path.exists():
            lines = path.read_text(errors="replace").strip().splitlines()[-3:]
            if lines:
                return " | ".join(lines)[-500:]
    return "the process exited (no output)"


def ingress_routes(paths: HostPaths, desired: DesiredHost) -> list[ingress.Route]:
    routes = []
    for p in desired.platforms:
        route = p.route
        if not route or p.absent or not p.running:
            continue
        slot = p.slots.get(route.slot)
        if not slot:
            continue
        routes.append(ingress.Route(
            hostname=route.hostname,
            upstreams=tuple(f"127.0.0.1:{port}" for port in slot.ports),
            cert_pem=route.cert_pem, key_pem=route.key_pem.get_secret_value()))
    return routes
