"""`tenantry up`: run the whole control plane and a local agent in the foreground.

Process tree: this process supervises three children (API, worker, agent), each in its own
process group so that Ctrl-C reaches us alone and we stop them in order. Each child gets
PR_SET_PDEATHSIG, so if this process is killed outright its children die with it; the
platforms do not, because the agent's service manager runs in a session of its own.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tenantry.cli.up_exits import ExitTeller, how_it_ended
from tenantry.core import cgroup, delays, hang, leftovers
from tenantry.core.config import Settings, parse_listen
from tenantry.core.crypto import write_private
from tenantry.core.errors import InvalidInput, TenantryError, Unavailable
from tenantry.core.pgserver import (
    API_CONNECTIONS,
    MAX_CONNECTIONS,
    ControlPlaneDatabase,
    pg_bin,
)
from tenantry.core.runtime import Runtime
from tenantry.core.steps import Steps

REQUIRED_BINARIES = {"caddy": "caddy", "supervisord": "supervisor"}
LOCAL_HOST = "local"  # the name of the host `up`'s own agent enrolls as
STOP_SETTLE = 2.0  # s a clean stop keeps looking for processes of the data dir
WORKER_GRACE = 15.0  # seconds the worker has on Ctrl-C to finish its running jobs
STORE_BACKOFF_MAX = 60.0  # seconds between attempts to start a store that keeps failing
STORE_GRACE = 3.0  # seconds more than `frozen_after` the store may not answer before it is killed
FIRST_BEAT = 30.0  # seconds a starting child has to begin its heartbeat
# Seconds `watch` may go without a turn before `up` stops its service manager's watchdog pings
# (tenantry.core.sdnotify): longer than its slowest step (starting the store again).
WATCH_STALL = 120.0


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setpgid(0, 0)


def check_binaries() -> None:
    pg_bin("postgres")
    import shutil

    for binary, package in REQUIRED_BINARIES.items():
        if shutil.which(binary) is None:
            raise Unavailable(f"{binary} is missing: install the Debian package {package}")


def check_monitoring_binaries() -> None:
    import shutil

    from tenantry.monitoring.stack import BINARIES

    for binary in BINARIES.values():
        if shutil.which(binary) is None and not Path(f"/usr/bin/{binary}").exists():
            raise Unavailable(f"{binary} is missing: install the Debian package {binary} "
                              "(scripts/install does), or run with TENANTRY_MONITORING=false")


def check_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot create data dir {path}: {exc.strerror}",
                           field="data_dir") from None
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise InvalidInput(f"data dir {path} is not a writable directory", field="data_dir")


def check_port_free(host: str, port: int, field_name: str) -> None:
    listener(host, port, field_name, backlog=None).close()


def listener(host: str, port: int, field_name: str, *, backlog: int | None = 2048
             ) -> socket.socket:
    """A socket bound to HOST:PORT (listening, unless `backlog` is None); a port taken is
    refused naming the setting."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        if backlog is not None:
            sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"{host}:{port} is not free ({exc.strerror})",
                           field=field_name) from None
    return sock


@dataclass
class Child:
    name: str
    argv: list[str]
    log_file: Path
    env: dict[str, str] | None = field(default=None, repr=False)
    # A file the child touches every second from a thread of its own (tenantry.cli.run);
    # None for programs that keep none (Prometheus and the like).
    heartbeat: Path | None = None
    pass_fds: tuple[int, ...] = ()  # descriptors it inherits (the API's listening sockets)
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0

    def start(self) -> None:
        env = {**os.environ, **(self.env or {})}
        if self.heartbeat is not None:
            self.heartbeat.unlink(missing_ok=True)  # an old one would tell of the old child
            env[hang.HEARTBEAT_ENV] = str(self.heartbeat)
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                                        env=env, pass_fds=self.pass_fds)
        log.close()
        self.started_at = time.monotonic()

    def frozen_for(self, after: float) -> float | None:
        """Seconds since a running child last beat, when that is `after` or more (or it has
        not begun in FIRST_BEAT); None while it beats, or keeps no heartbeat."""
        if self.heartbeat is None or not self.alive():
            return None
        age = hang.heartbeat_age(self.heartbeat)
        if age is None:
            waited = time.monotonic() - self.started_at
            return waited if waited >= max(after, FIRST_BEAT) else None
        return age if age >= after else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM) without waiting; `stop` waits."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60) -> None:
        if not self.alive():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class StartupWait:
    """One part `up` waits for before doing anything that needs it: a condition polled until it
    holds, bounded, with a progress line; on time-out the error names the part and its log."""

    def __init__(self, what: str, log_file: Path, ready: Callable[[], bool], *,
                 timeout: float, say: Callable[[str], None],
                 stopping: threading.Event) -> None:
        self.what, self.log_file, self.ready = what, log_file, ready
        self.timeout, self.say, self.stopping = timeout, say, stopping

    def wait(self, every: float = 0.2, progress_every: float = 5.0) -> float:
        """Seconds it took; Unavailable after the time-out (or when `up` is stopping)."""
        start = time.monotonic()
        told = start
        while not self.stopping.is_set():
            if self.ready():
                return time.monotonic() - start
            now = time.monotonic()
            if now - start >= self.timeout:
                raise Unavailable(f"{self.what} did not come up within {self.timeout:g} s; "
                                  f"see {self.log_file}")
            if now - told >= progress_every:
                told = now
                self.say(f"tenantry: still waiting for {self.what} ({now - start:.0f} s of "
                         f"{self.timeout:g} s; log: {self.log_file})")
            self.stopping.wait(every)
        raise Unavailable(f"stopped while waiting for {self.what}")


@dataclass
class ControlPlane:
    settings: Settings
    children: list[Child] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    say: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr,
                                                                  flush=True))
    # When the local agent was (re)started: a report before this is from an earlier run.
    agent_started_at: dt.datetime | None = None
    # Prometheus, Alertmanager and the blackbox prober (TENANTRY_MONITORING, on by default).
    monitoring: list[Child] = field(default_factory=list)
    # The API's listening sockets (`listen`, then `agent_tls_listen`), bound by `preflight`.
    listeners: list[socket.socket] = field(default_factory=list, repr=False)
    prometheus_url: str | None = None
    _lock_fd: int | None = field(default=None, repr=False)
    _store_failures: int = 0
    _store_retry_at: float = 0.0
    _store_silence: hang.Silence | None = None
    _store_probed_at: float = 0.0
    turned_at: float = field(default_factory=time.monotonic)  # `watch`'s last turn
    exits: ExitTeller | None = None  # tells the restarts below as events
    _store_end: str | None = None  # how the store ended, when `up` ended it (frozen)

    def tell_exit(self, name: str, how: str) -> None:
        if self.exits is not None:
            self.exits.tell(name, how)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def running_marker(self) -> Path:
        return self.data_dir / "run" / "up.running"

    @property
    def api_url(self) -> str:
        host, port = parse_listen(self.settings.listen)
        return f"http://{host}:{port}"

    @property
    def store_connections(self) -> int:
        return MAX_CONNECTIONS + API_CONNECTIONS * (self.settings.api_processes - 1)

    def preflight(self) -> None:
        check_data_dir(self.data_dir)
        self._lock_data_dir()
        check_binaries()
        if self.settings.monitoring:
            check_monitoring_binaries()
        self.stop_leftovers("left by an earlier run that did not stop cleanly",
                            spare_services=True)
        # `up` holds the API's sockets from here to its end; its API processes share them.
        host, port = parse_listen(self.settings.listen)
        self.listeners = [listener(host, port, "listen")]
        if self.settings.agent_tls_listen:
            tls_host, tls_port = parse_listen(self.settings.agent_tls_listen,
                                              field="agent_tls_listen")
            if (tls_host, tls_port) == (host, port):
                raise InvalidInput("agent_tls_listen must differ from listen",
                                   field="agent_tls_listen")
            self.listeners.append(listener(tls_host, tls_port, "agent_tls_listen"))
        if self._agent_services_pid() is None:
            check_port_free("127.0.0.1", self.settings.ingress_port, "ingress_port")

    def _lock_data_dir(self) -> None:
        """One `up` per data dir: a second one would take the first one's processes for
        leftovers. The lock goes with this process, however it ends."""
        path = self.data_dir / "up.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise InvalidInput(f"another tenantry up (pid {holder}) runs on data dir "
                               f"{self.data_dir}", field="data_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _agent_services_pid(self) -> int | None:
        """The local host's supervisord, when a killed `up` left it (and the platforms, and
        their ingress) serving: that is fine, the agent adopts it."""
        pidfile = self.data_dir / "agent" / "services" / "supervisord.pid"
        try:
            pid = int(pidfile.read_text().strip())
            if b"supervisord" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return None
        except (OSError, ValueError):
            return None
        return pid

    def _store_pid(self) -> int | None:
        """The control plane's PostgreSQL, when a killed `up` left it running."""
        return ControlPlaneDatabase(self.data_dir).postmaster_pid()

    def stop_leftovers(self, why: str, *, spare_services: bool) -> None:
        """Stop what an earlier run of this data dir left running, and say what it was. At
        the start, the platforms' supervisord and the store's PostgreSQL are adopted, not
        stopped: a killed `up` takes no platform down."""
        # A frozen one (stopped by a signal, as a frozen `up` tree leaves it) is not adopted:
        # it would answer nothing, and its watcher would kill it only after its hang limit.
        live = [pid for pid in (self._agent_services_pid(), self._store_pid())
                if pid is not None and not hang.stopped(pid)] if spare_services else []
        def tell(found: list[leftovers.Leftover]) -> None:
            self.say(f"tenantry: found {len(found)} process(es) of {self.data_dir} {why}; "
                     "stopping them (databases with a fast shutdown)")

        lines = leftovers.sweep(self.data_dir, tell=tell, spare_trees=live,
                                spare=(lambda x: x.archiver) if spare_services else
                                (lambda _: False))
        for line in lines:
            self.say(f"tenantry:   {line}")

    def prepare_store(self) -> None:
        from tenantry.access.service import bootstrap_admin
        from tenantry.core import migrate
        from tenantry.core.runtime import make_runtime

        if self.settings.database_url is None:
            ControlPlaneDatabase(self.data_dir).start(self.store_connections)
        runtime = make_runtime(self.settings, pool_size=2)
        try:
            migrate.upgrade(runtime.engine)
            with runtime.sessions() as session:
                made = bootstrap_admin(session=session)
            if made is not None:
                password, token = made
                write_private(self.data_dir / "admin-password",
                              (password.get_secret_value() + "\n").encode())
                write_private(self.data_dir / "admin-token",
                              (token.get_secret_value() + "\n").encode())
            self._enroll_token = self._local_enroll_token(runtime)
            if self.settings.monitoring:
                self._prepare_monitoring(runtime)
        finally:
            runtime.engine.dispose()
        (self.data_dir / "api-url").write_text(self.api_url + "\n")

    def _prepare_monitoring(self, runtime: Runtime) -> None:
        """Configs, fresh bearer tokens and kept ports of Prometheus, Alertmanager and the
        blackbox prober (the proxy's probe); they start once the API answers (their
        discovery and webhook)."""
        from tenantry.monitoring import local
        from tenantry.monitoring.service import overrides

        ports = local.ports(self.data_dir)
        runtime.ca  # noqa: B018 - made now: DATA_DIR/ca.pem, which clients of the ingress trust
        with runtime.sessions() as session:
            tokens = local.issue_tokens(session)
            found = overrides(session)
        local.write_configs(self.data_dir, api_url=self.api_url, tokens=tokens,
                            overrides=found, ports_=ports)
        self.monitoring = [
            Child(spec.name, list(spec.command),
                  Path(spec.log_file or self.data_dir / "logs" / f"{spec.name}.log"),
                  env=dict(spec.environment))
            for spec in local.central_programs(self.data_dir, ports)]
        self.prometheus_url = f"http://127.0.0.1:{ports.prometheus}"

    def _local_enroll_token(self, runtime: Runtime) -> str | None:
        if (self.data_dir / "agent" / "agent.json").exists():
            return None
        from tenantry.access.principal import Principal
        from tenantry.platforms.hosts import create_enroll_token

        with runtime.sessions() as session:
            system = Principal(user_id="system", username="system", role="provider-admin")
            return create_enroll_token(session=session, principal=system).token

    def _argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "tenantry.cli.run", *args]

    def _agent_tls_argv(self) -> list[str]:
        listen = self.settings.agent_tls_listen
        return ["--agent-tls-listen", listen] if listen else []

    def spawn(self) -> None:
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        beats = self.data_dir / "run"
        common = ["--data-dir", str(self.data_dir)]
        agent = ["agent", "--data-dir", str(self.data_dir / "agent"), "--server", self.api_url,
                 "--region", "local", "--name", LOCAL_HOST,
                 "--ingress-port", str(self.settings.ingress_port),
                 "--port-range", self.settings.port_range, "--stop-services-on-exit"]
        fds = [sock.fileno() for sock in self.listeners]
        fd_args = [arg for flag, fd in zip(("--listen-fd", "--agent-tls-fd"), fds, strict=False)
                   for arg in (flag, str(fd))]
        # Each API process accepts from the sockets `up` holds: a connection goes to one that
        # is free, and waits in the queue while all of them (or the one) restart.
        apis = [Child("api", self._argv("serve-api", *common, "--listen", self.settings.listen,
                                        *self._agent_tls_argv(), *fd_args), logs / "api.log",
                      heartbeat=beats / ("api.beat" if n == 1 else f"api-{n}.beat"),
                      pass_fds=tuple(fds))
                for n in range(1, self.settings.api_processes + 1)]
        self.children = [
            *apis,
            Child("worker", self._argv("serve-worker", *common), logs / "worker.log",
                  heartbeat=beats / "worker.beat"),
            # The one-time token goes through the environment: argv is world-readable.
            Child("agent", self._argv(*agent), logs / "agent.log",
                  env={"TENANTRY_ENROLL_TOKEN": self._enroll_token or ""},
                  heartbeat=beats / "agent.beat"),
        ]
        # An enrolled agent starts with the API: it brings the platforms' supervisord up (and
        # with it every platform, from their program files) while the API starts, and reaches
        # the API once it answers. One not enrolled yet enrolls through the API: it waits.
        enrolled = (self.data_dir / "agent" / "agent.json").exists()
        self.agent_started_at = dt.datetime.now(dt.UTC)
        local_agent = self._child("agent")
        for child in self.children:
            if child is not local_agent or enrolled:
                child.start()
        self.wait_api()
        if not enrolled:
            self.agent_started_at = dt.datetime.now(dt.UTC)
            local_agent.start()
        for child in self.monitoring:
            child.start()
            self.children.append(child)
        if self.monitoring:
            self.say(f"tenantry: monitoring: Prometheus at {self.prometheus_url}, logs in "
                     f"{self.data_dir / 'monitoring' / 'log'}")

    def _child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def wait_api(self) -> None:
        """The agent enrolls through the API, so the API comes first."""
        api = self._child("api")

        def answering() -> bool:
            if not api.alive():
                tail = api.log_file.read_text(errors="replace").strip().splitlines()[-5:]
                raise Unavailable("the API process exited: " + " | ".join(tail))
            try:
                return httpx.get(f"{self.api_url}/api/v1/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        StartupWait(f"the API on {self.api_url}", api.log_file, answering,
                    timeout=self.settings.startup_timeout, say=self.say,
                    stopping=self.stopping).wait(every=0.1)

    def local_agent_online(self) -> bool:
        """The local agent has enrolled and reported since it was started: it places work."""
        from tenantry.cli.client import Client

        try:
            hosts = Client.local(self.data_dir).get("/hosts")
        except TenantryError:
            return False
        assert self.agent_started_at is not None
        for host in hosts:
            if host["name"] == LOCAL_HOST and host["state"] == "online" and host["last_seen_at"]:
                seen = dt.datetime.fromisoformat(host["last_seen_at"])
                return seen >= self.agent_started_at
        return False

    def wait_agent(self) -> float:
        """Wait for the local agent to come online; the seconds it took."""
        self.say("tenantry: waiting for the local agent to enroll and report ...")
        took = StartupWait("the local agent", self._child("agent").log_file,
                           self.local_agent_online, timeout=self.settings.startup_timeout,
                           say=self.say, stopping=self.stopping).wait(every=0.25)
        self.say(f"tenantry: local agent online after {took:.1f} s")
        return took

    def after_start(self, tasks: Sequence[tuple[str, Callable[[], None]]]) -> None:
        """What `up` does for the user once its parts run (the demo, say), in a thread of its
        own beside `watch`: each waits for what it needs, and a failure is reported, never
        fatal: the control plane keeps running for the user to look at."""
        try:
            self.wait_agent()
        except Unavailable as exc:
            if not self.stopping.is_set():
                self.say(f"tenantry: {exc.message}")
                for name, _ in tasks:
                    self.say(f"tenantry: {name} not started: it needs the local agent. "
                             "Still running; Ctrl-C stops.")
            return
        for name, task in tasks:
            if self.stopping.is_set():
                return
            try:
                task()
            except Exception as exc:  # reported, never fatal: the plane keeps running
                if self.stopping.is_set():
                    return
                reason = exc.message if isinstance(exc, TenantryError) else \
                    f"{type(exc).__name__}: {exc}"
                self.say(f"tenantry: {name} failed: {reason}")
                self.say(f"tenantry: still running for you to look: the portal at "
                         f"{self.api_url}/, the logs api.log, worker.log and agent.log in "
                         f"{self.data_dir / 'logs'}; Ctrl-C stops.")

    def watch(self) -> None:
        """Restart a child that died (for example killed) or froze (stopped, wedged: no
        heartbeat for HUNG_AFTER seconds), and the store's PostgreSQL, until we are asked to
        stop."""
        while not self.stopping.wait(0.5):
            self.turned_at = time.monotonic()
            if self.settings.database_url is None:
                self.keep_store()
            for child in self.children:
                after = self.settings.frozen_after
                frozen = child.frozen_for(after) if after else None
                how = None
                if frozen is not None and not self.stopping.is_set():
                    assert child.process is not None
                    self.say(f"tenantry: {child.name} (pid {child.process.pid}) has not beat "
                             f"for {frozen:.0f} s: frozen; killing it")
                    hang.kill_tree(child.process.pid)
                    child.process.wait()
                    how = f"frozen: no heartbeat for {frozen:.0f} s; killed"
                if not child.alive() and not self.stopping.is_set():  # (Ctrl-C reaches all)
                    assert child.process is not None
                    self.tell_exit(child.name, how or how_it_ended(child.process.returncode))
                    child.restarts += 1
                    self.say(f"tenantry: {child.name} exited; restarting it (log: "
                             f"{child.log_file})")
                    if child.name == "agent":
                        self.agent_started_at = dt.datetime.now(dt.UTC)
                    child.start()

    def keep_store(self) -> None:
        """The control plane's PostgreSQL died (killed, say): start it again, with a backoff
        that doubles up to STORE_BACKOFF_MAX while it keeps failing, saying each time why.
        The API answers 503 meanwhile; it, the worker and the agent reconnect by themselves
        once it is back."""
        pid = self._store_pid()
        if pid is not None:
            if self._store_failures:
                self.say("tenantry: the control plane's PostgreSQL runs again")
            self._store_failures = 0
            self._check_store_answers(pid)
            return
        now = time.monotonic()
        if now < self._store_retry_at or self.stopping.is_set():
            return
        db = ControlPlaneDatabase(self.data_dir)
        if not self._store_failures:
            self.tell_exit("store", self._store_end or "its postmaster is gone")
            self._store_end = None
            self.say("tenantry: the control plane's PostgreSQL is not running; starting it "
                     f"again (log: {db.log_file})")
            delays.delay("up.store_restart", self.stopping)
            if self.stopping.is_set():
                return
        try:
            db.start(self.store_connections)
        except TenantryError as exc:
            self._store_failures += 1
            wait = min(2.0 ** self._store_failures, STORE_BACKOFF_MAX)
            self._store_retry_at = time.monotonic() + wait
            self.say(f"tenantry: the control plane's PostgreSQL did not start "
                     f"({self._store_failures} attempt(s)): {exc}; next attempt in "
                     f"{wait:.0f} s; see {db.log_file}")
            return
        self.say("tenantry: the control plane's PostgreSQL runs again")
        self._store_failures = 0

    def _check_store_answers(self, pid: int) -> None:
        """A store that runs but does not answer (stopped, wedged) for `frozen_after` +
        STORE_GRACE seconds is killed with its backends; the next look starts it again
        (crash recovery keeps every committed transaction). Asked every second at most: a
        probe is a connection attempt."""
        if not self.settings.frozen_after:
            return
        if self._store_silence is None:
            self._store_silence = hang.Silence(self.settings.frozen_after + STORE_GRACE)
        now = time.monotonic()
        if now - self._store_probed_at < 1.0:
            return
        self._store_probed_at = now
        answers = ControlPlaneDatabase(self.data_dir).responds()
        if self._store_silence.observe(answers) and not self.stopping.is_set():
            self.say(f"tenantry: the control plane's PostgreSQL (pid {pid}) has not answered "
                     f"for {self._store_silence.silent_for():.0f} s: frozen; killing it to "
                     "start it again")
            self._store_end = (f"frozen: no answer for "
                               f"{self._store_silence.silent_for():.0f} s; killed")
            hang.kill_tree(pid)
            self._store_silence.reset()
            leftovers.wait_gone([pid], 10)

    def shutdown(self) -> None:
        """Stop in order: no new jobs, no new requests, then the host, then the store. The
        monitoring programs depend on none of these: they are told at once and stop
        alongside. A job the worker is running resumes from its recorded step at the next
        start, so the worker gets WORKER_GRACE, not a minute, to finish it."""
        self.stopping.set()
        steps = Steps()  # said at the end
        for child in self.monitoring:
            child.terminate()
        for name in ("worker", "api", "agent", *(c.name for c in self.monitoring)):
            for child in self.children:
                if child.name == name:
                    child.stop(WORKER_GRACE if name == "worker" else 60)
            steps.done("the agent and its services" if name == "agent" else name)
            if name == "api":
                for sock in self.listeners:  # the port is free again once no API runs
                    sock.close()
        if self.settings.database_url is None:
            try:
                ControlPlaneDatabase(self.data_dir).stop()
            except TenantryError as exc:  # said, and what is left is stopped below
                self.say(f"tenantry: {exc}")
            steps.done("the store")
        self.stop_leftovers("still running after the stop", spare_services=False)
        # Something of the data dir may still be starting as the sweep looks (a supervisord
        # that was daemonizing when its agent died starts its programs a moment later): look
        # again over STOP_SETTLE seconds, and stop what shows.
        for _ in range(int(STOP_SETTLE / 0.5)):
            time.sleep(0.5)
            if leftovers.find(self.data_dir):
                self.stop_leftovers("started while the stop swept", spare_services=False)
        for group in cgroup.recorded(self.data_dir):  # the agent's, if it could not remove it
            cgroup.remove(group)
        steps.done("the last sweep")
        self.say(f"tenantry: stopped in {steps.total():.1f} s ({steps})")
        self.running_marker.unlink(missing_ok=True)  # a clean stop (see up_exits)
        # The last look, broader than the sweep's: whatever still names the data dir is told
        # with its parent and start, so that a leftover of any kind identifies itself.
        for line in leftovers.naming(self.data_dir):
            self.say(f"tenantry: still running after the stop and naming {self.data_dir}: "
                     f"{line}")
