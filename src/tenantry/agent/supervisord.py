"""ServiceManager on supervisord, for hosts without systemd (containers, CI, laptops).

supervisord runs detached in its own session (it daemonizes itself), so killing the agent,
or its whole process group, leaves the platforms running; the next agent adopts it through
the pidfile and the XML-RPC socket. Each program is one file `programs/<name>.conf`
(mode 0600: its environment holds secrets) whose first line records the spec digest.

Crash safety: `observe` asks supervisord to re-read its files (`reloadConfig`, like
`supervisorctl reread`) and reports any program whose file and running config differ with
an empty digest, so the convergence loop puts or removes it again.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import xmlrpc.client
from functools import partial
from pathlib import Path
from typing import Any, cast

from tenantry.agent import logfiles, ports, unixusers
from tenantry.agent.services import ProgramSpec, ProgramStatus, ServiceManager
from tenantry.core import cgroup as cgroups
from tenantry.core.errors import InvalidInput, NotFound, Unavailable
from tenantry.core.steps import Steps

log = logging.getLogger(__name__)

_DIGEST_PREFIX = "; tenantry-digest: "
_LOG_PREFIX = "; tenantry-log: "  # the log the program writes itself (log_files)
SH = "/bin/sh"
# The shell's script: the log file is its first argument, the program's argv the rest.
TO_LOG = 'f=$1; shift; exec "$@" >>"$f" 2>&1'
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")
# The calls that change nothing supervisord runs; any other forgets the last look, or the
# state of the program it names. (A multicall that changes something forgets it itself.)
_READS = frozenset({"getAllProcessInfo", "getProcessInfo", "getState", "getPID",
                    "reloadConfig", "tenantry.readProgram", "system.multicall"})
# Our namespace in supervisord (supervisor_plugin.py): the module's name there, and where its
# copy goes under the service root.
_PLUGIN = "tenantry_supervisor"
_PLUGIN_DIR = "plugin"
# s a look may be reused while supervisord's log says nothing happened: the net under a
# change it did not log.
OBSERVE_NET = 30.0
# What supervisord logs of a program's change of state (supervisor/process.py), each line
# naming it: a look after such lines asks for those programs alone (`_named_in_log`).
_STATE_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ (?:"
    r"spawned: '(?P<spawned>[^']+)' with pid \d+"
    r"|success: (?P<success>\S+) entered RUNNING state,.*"
    r"|exited: (?P<exited>\S+) \(.*\)"
    r"|stopped: (?P<stopped>\S+) \(.*\)"
    r"|gave up: (?P<gave_up>\S+) entered FATAL state,.*"
    r"|waiting for (?P<waiting>\S+) to stop"
    r"|killing '(?P<killing>[^']+)' \(\d+\) with signal \w+"
    r")$")
# More programs named than this since the last look: asking for all is as cheap.
NAMED_MAX = 40
# A new supervisord's start of its programs: at most START_WINDOW of those given a PORT are
# started and not listening on it yet (twice the cores: an app's start is mostly CPU), each
# holding its place until it listens, or START_HOLD s at most (one that never listens, a
# broken release, does not hold the others back for long).
START_WINDOW = 2 * (os.cpu_count() or 1)
START_HOLD = 10.0
_PORT_RE = re.compile(r'(?:^environment=|,)PORT="(\d+)"', re.M)
# supervisor.xmlrpc.Faults
_UNKNOWN_METHOD, _BAD_NAME, _NOT_RUNNING, _ALREADY_STARTED, _ALREADY_ADDED = 1, 10, 70, 60, 90
_LAST = "-db"  # programs stopped last at a shutdown: the databases (tenantry.agent.converge)
# configparser (as supervisord sets it up) cuts a value at whitespace followed by ; or #.
_INLINE_COMMENT = re.compile(r"\s[;#]")
_MINIMAL_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self._path = path
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixHTTPConnection(self._path, self._timeout)


def _ini(value: str, what: str) -> str:
    """Make `value` safe for supervisord's config parser ('%' is expanded, so write '%%')."""
    if any(c in value for c in "\r\n\0"):
        raise InvalidInput(f"{what} must not contain a newline or NUL", field=what)
    if _INLINE_COMMENT.search(value):
        raise InvalidInput(f"{what} must not contain whitespace before ';' or '#'", field=what)
    if "%(here)s" in value:  # supervisord replaces this literally, even inside '%%(here)s'
        raise InvalidInput(f"{what} must not contain '%(here)s'", field=what)
    return value.replace("%", "%%")


def _quote_arg(arg: str) -> str:
    """Quote for shlex.split (POSIX): a backslash before each special character.

    Backslashes keep ';' and '#' from following whitespace, which configparser would take
    for an inline comment; whitespace itself is single-quoted, since configparser strips a
    trailing backslash-space.
    """
    if arg == "":
        return "''"
    if any(c in arg for c in "\r\n\0"):
        raise InvalidInput("command arguments must not contain a newline or NUL", field="command")
    if "%(here)s" in arg:
        raise InvalidInput("command arguments must not contain '%(here)s'", field="command")
    quoted = "".join(
        c if c.isalnum() or c in "_./-=:,@+" else f"'{c}'" if c.isspace() else "\\" + c for c in arg
    )
    return quoted.replace("%", "%%")


def _env_value(value: str) -> str:
    """Quote for supervisord's `environment=` (a non-POSIX shlex, then strip of quotes)."""
    if value[:1] in ("'", '"') or value[-1:] in ("'", '"'):
        raise InvalidInput(
            "environment values must not start or end with a quote", field="environment"
        )
    quote = '"' if '"' not in value else "'"
    if quote in value:
        raise InvalidInput(
            "environment values must not hold both kinds of quotes", field="environment"
        )
    return quote + _ini(value, "environment") + quote


def render_program(spec: ProgramSpec, *, default_log: Path, as_root: bool) -> str:
    """A program's file. The program writes its own log (`spec.log_file`, else
    `default_log`) through a shell that opens it, as the program's user, and execs it
    (`TO_LOG`): supervisord carrying every line through a pipe woke its loop for each
    one, and each wake-up walks every program (at 100 idle platforms, 41 wake-ups a
    second for the apps' request lines). What does reach supervisord, only what the shell
    says before the exec (a log it cannot open), goes to `default_log`, in supervisord's
    own directory: supervisord runs as root and never opens a file in a directory a
    platform's user owns. The agent rotates the program logs (tenantry.agent.logfiles)."""
    log_file = spec.log_file or str(default_log)
    command = (SH, "-c", TO_LOG, "tenantry-log", log_file, *spec.command)
    lines = [
        f"{_DIGEST_PREFIX}{spec.digest()}",
        f"{_LOG_PREFIX}{_ini(log_file, 'log_file')}",
        f"[program:{spec.name}]",
        "command=" + " ".join(_quote_arg(a) for a in command),
        # Started by the agent (ensure_started starts what is configured, one request per
        # program, the databases first): supervisord starting hundreds by itself when it
        # starts answered nothing for longer than the agent waits for it.
        "autostart=false",
        "autorestart=true",
        "stopasgroup=true",
        "killasgroup=true",
        "stopwaitsecs=10",
        f"stopsignal={spec.stop_signal}",
        f"startsecs={spec.start_seconds}",
        "redirect_stderr=true",
        "stdout_logfile=" + _ini(str(default_log), "log_file"),
        "stdout_logfile_maxbytes=1MB",
        "stdout_logfile_backups=1",
    ]
    if spec.environment:
        pairs = (f"{k}={_env_value(v)}" for k, v in sorted(spec.environment.items()))
        lines.append("environment=" + ",".join(pairs))
    if spec.directory:
        lines.append("directory=" + _ini(spec.directory, "directory"))
    # user= needs a root supervisord; without root every program runs as the agent's user.
    if spec.user and as_root:
        lines.append("user=" + _ini(spec.user, "user"))
    return "\n".join(lines) + "\n"


def _write_private(path: Path, content: str) -> None:
    """Write atomically with mode 0600 (never briefly world-readable)."""
    if path.exists() and path.read_text() == content:
        os.chmod(path, 0o600)
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an orphan reparented to us (a subreaper, or PID 1 in a container) may be a zombie
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class SupervisordManager(ServiceManager):
    def __init__(self, root: Path, cgroup: Path | None = None) -> None:
        """`cgroup`: a group (tenantry.core.cgroup) supervisord starts in, and with it
        every program it runs."""
        self.cgroup = cgroup
        root = Path(root).absolute()
        if not _SAFE_PATH.fullmatch(str(root)):
            raise InvalidInput(f"service root {str(root)!r} has unsafe characters", field="root")
        self.root = root
        self.conf = root / "supervisord.conf"
        self.sock = root / "supervisor.sock"
        self.pidfile = root / "supervisord.pid"
        self.programs = root / "programs"
        self.logs = root / "logs"
        if len(str(self.sock)) > 100:
            raise InvalidInput(f"service root {str(root)!r} is too long for a unix socket")
        # Whether supervisord may hold another config than the program files say: true at
        # first, and after every change, until a reread finds nothing to do. Rereading makes
        # supervisord parse every program's file, so an idle host does not.
        self._maybe_stale = True
        self._digests: dict[str, tuple[int, str]] = {}  # name -> (file's mtime_ns, digest)
        # The last look: supervisord's log mark before it, when, and what it saw.
        self._seen: tuple[tuple[int, int, int | None], float, dict[str, ProgramStatus]] | \
            None = None
        # Programs this manager changed since the last look (put, start, stop, remove).
        self._touched: set[str] = set()

    # --- plumbing -------------------------------------------------------------------------

    def _rpc(self, timeout: float = 30, namespace: str = "supervisor") -> Any:
        proxy = xmlrpc.client.ServerProxy(
            "http://localhost/RPC2", transport=_UnixTransport(str(self.sock), timeout)
        )
        return getattr(proxy, namespace)

    def _call(self, method: str, *args: Any, ignore: tuple[int, ...] = ()) -> Any:
        """supervisord's `method` (ours when named `tenantry.NAME`)."""
        if method not in _READS:
            program = str(args[0]).split(":", 1)[0] if args and isinstance(args[0], str) \
                else ""
            if program:  # the next look asks for it
                self._touched.add(program)
            else:  # supervisord as a whole (shutdown)
                self._seen = None
        namespace, _, name = method.rpartition(".")
        try:
            return getattr(self._rpc(namespace=namespace or "supervisor"), name)(*args)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode in ignore:
                return None
            if exc.faultCode == _BAD_NAME:
                raise NotFound(f"supervisord: {method}: {exc.faultString}") from None
            raise Unavailable(f"supervisord: {method}: {exc.faultString}") from None
        except OSError as exc:
            raise Unavailable(f"supervisord at {self.sock} is not reachable: {exc}") from None

    def _daemon_pid(self) -> int | None:
        """The pid of a live supervisord answering on our socket, else None."""
        try:
            return int(self._rpc(timeout=5).getPID())
        except (OSError, xmlrpc.client.Error):
            return None

    def responds(self, timeout: float = 2.0) -> bool:
        try:
            self._rpc(timeout=timeout).getState()
        except (OSError, xmlrpc.client.Error):
            return False
        return True

    def daemon_pid(self) -> int | None:
        pid = self._pidfile_pid()
        return pid if pid is not None and self._runs(pid) else None

    def has_daemon(self) -> bool:
        return True

    def ended_unwatched(self) -> int | None:
        # supervisord removes its pid file when it ends cleanly; ensure_started removes one
        # left by a killed daemon before it starts the next
        pid = self._pidfile_pid()
        return pid if pid is not None and not self._runs(pid) else None

    def _pidfile_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def _write_main_conf(self) -> None:
        content = f"""\
; written by tenantry; rewritten at every start of supervisord
[unix_http_server]
file={self.sock}
chmod=0700

[supervisord]
pidfile={self.pidfile}
logfile={self.logs}/supervisord.log
logfile_maxbytes=10MB
logfile_backups=3
childlogdir={self.logs}
directory={self.root}
nodaemon=false
umask=022

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[rpcinterface:tenantry]
supervisor.rpcinterface_factory = {_PLUGIN}:make_tenantry_rpcinterface
programs = {self.programs}

[supervisorctl]
serverurl=unix://{self.sock}

[include]
files = {self.programs}/*.conf
"""
        _write_private(self.conf, content)
        plugin = self.root / _PLUGIN_DIR / f"{_PLUGIN}.py"
        # (its source, not imported: supervisor is the system Python's, not ours)
        plugin.parent.mkdir(mode=0o700, exist_ok=True)
        _write_private(plugin, Path(__file__).with_name("supervisor_plugin.py").read_text())

    # --- contract -------------------------------------------------------------------------

    def ensure_started(self, stopping: threading.Event | None = None) -> None:
        for d in (self.root, self.programs, self.logs):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        # A running supervisord is adopted with the config file it was started with: it
        # reads that file again at each reread, and one started by an older agent could not
        # import a namespace a newer file names.
        if self._daemon_pid() is not None:
            return
        pid = self._pidfile_pid()
        if pid is not None and self._runs(pid):
            # Possibly still starting up: give it a moment to open its socket.
            if self._wait_up(5):
                return
            raise Unavailable(f"supervisord pid {pid} runs but does not answer on {self.sock}")
        self._write_main_conf()
        self.pidfile.unlink(missing_ok=True)
        self.sock.unlink(missing_ok=True)
        binary = shutil.which("supervisord") or "/usr/bin/supervisord"
        if not os.path.exists(binary):
            raise Unavailable("supervisord not found: install the Debian package supervisor")
        out = self.logs / "supervisord.out"
        with open(out, "ab") as log:
            # supervisord forks, calls setsid and the parent exits: nothing of it stays in
            # the agent's session, process group or child list.
            proc = subprocess.run(
                [binary, "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # our namespace's module (the plugin takes PYTHONPATH out again on import)
                env={**_MINIMAL_ENV, "PYTHONPATH": str(self.root / _PLUGIN_DIR)},
                cwd=self.root,
                start_new_session=True,
                preexec_fn=partial(cgroups.join, self.cgroup) if self.cgroup else None,
                timeout=30,
                check=False,
            )
        if proc.returncode != 0 or not self._wait_up(15):
            raise Unavailable(
                "supervisord did not start:\n"
                + _tail(out)
                + "\n"
                + _tail(self.logs / "supervisord.log")
            )
        self._start_configured(stopping or threading.Event())

    def _start_configured(self, stopping: threading.Event) -> None:
        """A new supervisord starts every program configured in its files, as the agent
        asks it: one request per program, the databases before the rest, so that it answers
        between two (on its own it started them all in one go and answered nothing for
        that long). No desired state is needed: a host whose control plane is away still
        brings its platforms back.

        The apps start START_WINDOW at a time: one given a PORT (tenantry.agent.converge's
        web processes) holds its place until it listens there. Hundreds of apps importing
        at once on two cores each took longer than alone, and supervisord and the agent,
        starved by them, asked for the next ones ever more slowly.

        Once `stopping` is set it asks for no more: a stop during a long start (hundreds of
        platforms) waited for every one to start, then stopped them all."""
        names = [str(i["group"]) for i in self._call("getAllProcessInfo")]
        starting: dict[str, tuple[int, float]] = {}  # name -> (its PORT, asked at)
        for asked, name in enumerate(sorted(names, key=lambda n: (not n.endswith(_LAST), n))):
            port = self._ready_port(name)
            while port is not None and len(starting) >= START_WINDOW \
                    and not stopping.wait(0.02):
                listening, now = ports.listening_ports(), time.monotonic()
                starting = {n: (p, at) for n, (p, at) in starting.items()
                            if p not in listening and now - at < START_HOLD}
            if stopping.is_set():
                log.info("stopping: %d program(s) left not started", len(names) - asked)
                return
            try:
                self._call("startProcess", f"{name}:{name}", False,
                           ignore=(_ALREADY_STARTED, _BAD_NAME))
            except Unavailable as exc:  # that one's command fails: the agent tells it
                log.warning("%s", exc)
                continue
            if port is not None:
                starting[name] = (port, time.monotonic())

    def _ready_port(self, name: str) -> int | None:
        """The PORT a program's file gives it, where it will listen once started."""
        try:
            found = _PORT_RE.search((self.programs / f"{name}.conf").read_text())
        except OSError:
            return None
        return int(found.group(1)) if found else None

    @staticmethod
    def _runs(pid: int) -> bool:
        """`pid` is a live supervisord (not a zombie, nor a process that reused its pid)."""
        if not _pid_alive(pid):
            return False
        try:
            return b"supervisord" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    def _wait_up(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._daemon_pid() is not None:
                return True
            time.sleep(0.05)
        return False

    def _reread(self) -> tuple[list[str], list[str], list[str]]:
        self._maybe_stale = True
        added, changed, removed = self._call("reloadConfig")[0]
        return list(added), list(changed), list(removed)

    def _reread_one(self, name: str) -> tuple[list[str], list[str], list[str]]:
        """What a reread says of program `name`, from its file alone (supervisor_plugin.py):
        a reread parses every program's file, and a put or remove on a full host then cost
        supervisord as much as parsing 600 files. A supervisord started without our
        namespace (by an older agent, adopted) is asked to reread everything instead."""
        stale = self._maybe_stale
        self._maybe_stale = True  # until the answer says what supervisord holds
        found = self._call("tenantry.readProgram", name, ignore=(_UNKNOWN_METHOD,))
        if found is None:
            added, changed, removed = self._reread()
            # This reread's only news was this program: the next look need not reread again.
            self._maybe_stale = bool({*added, *changed, *removed} - {name})
            return added, changed, removed
        self._maybe_stale = stale  # the other programs are as they were before
        added, changed, removed = found[0]
        return list(added), list(changed), list(removed)

    def _file_digest(self, name: str) -> str:
        path = self.programs / f"{name}.conf"
        try:
            mtime = path.stat().st_mtime_ns
            known = self._digests.get(name)
            if known is not None and known[0] == mtime:
                return known[1]
            with open(path) as f:
                first = f.readline()
        except OSError:
            return ""
        digest = first[len(_DIGEST_PREFIX):].strip() if first.startswith(_DIGEST_PREFIX) else ""
        self._digests[name] = (mtime, digest)
        return digest

    def _log_mark(self) -> tuple[int, int, int | None] | None:
        """Where supervisord's log ends, and which supervisord writes it. supervisord logs
        every change of a program's state (spawned, success, exited, stopped, gave up) as
        it makes it, so an unchanged mark means nothing changed."""
        try:
            st = (self.logs / "supervisord.log").stat()
        except OSError:
            return None
        return st.st_ino, st.st_size, self._pidfile_pid()

    def _named_in_log(self, since: tuple[int, int, int | None],
                      now: tuple[int, int, int | None]) -> tuple[set[str], int] | None:
        """The programs supervisord's log names between two marks, and where the last whole
        line ends; None when it cannot tell (another supervisord, a rotated log, a line
        that is not a program's change of state, or too many)."""
        if since[0] != now[0] or since[2] != now[2] or now[1] < since[1]:
            return None
        try:
            with (self.logs / "supervisord.log").open("rb") as f:
                f.seek(since[1])
                chunk = f.read(now[1] - since[1])
        except OSError:
            return None
        end = chunk.rfind(b"\n") + 1  # a line still being written is read at the next look
        names: set[str] = set()
        for line in chunk[:end].decode(errors="replace").splitlines():
            found = _STATE_LINE.match(line)
            if found is None:
                return None
            names.update(v for v in found.groupdict().values() if v)
            if len(names) > NAMED_MAX:
                return None
        return names, since[1] + end

    def observe(self) -> dict[str, ProgramStatus]:
        """Every program's state. Asked of supervisord only as it changes: getAllProcessInfo
        costs supervisord, and the agent's XML parsing, a moment per program (0.1 s for 600),
        and an agent looks every pass and several times in each creation.

        - Nothing new in supervisord's log since the last look, and nothing changed by this
          manager: the last look.
        - The new lines name programs whose state changed (spawned, running, exited,
          stopped, gave up), or this manager changed some: those programs alone are asked.
        - Else, or once OBSERVE_NET went by since the last whole look (the net under a change
          supervisord did not log): every program."""
        mark = self._log_mark()
        seen = self._seen
        if (seen is not None and mark is not None and not self._maybe_stale
                and time.monotonic() - seen[1] < OBSERVE_NET):
            if seen[0] == mark and not self._touched:
                return dict(seen[2])
            named = self._named_in_log(seen[0], mark)
            if named is not None and len(asked := named[0] | self._touched) <= NAMED_MAX:
                return self._observe_some(asked, seen, (mark[0], named[1], mark[2]))
        self._seen = None  # until this look has its answer
        self._touched.clear()
        added: list[str] = []
        stale: set[str] = set()
        if self._maybe_stale:
            added, changed, removed = self._reread()
            stale = set(changed) | set(removed)
            self._maybe_stale = bool(added or stale)
        result: dict[str, ProgramStatus] = {}
        for info in cast(list[dict[str, Any]], self._call("getAllProcessInfo")):
            name = str(info["group"])
            result[name] = self._status(name, info, stale=name in stale)
        for name in added:  # configured on disk, not loaded (a crash between two steps)
            result[name] = ProgramStatus(name=name, digest="", state="STOPPED", pid=None)
        result = dict(sorted(result.items()))
        if mark is not None:
            self._seen = (mark, time.monotonic(), result)
        return dict(result)

    def _status(self, name: str, info: dict[str, Any], *, stale: bool = False) -> ProgramStatus:
        """A program as supervisord's process info tells it; a stale one's digest is empty
        (its file and what supervisord loaded differ: the convergence puts it again)."""
        return ProgramStatus(name=name, digest="" if stale else self._file_digest(name),
                             state=str(info["statename"]), pid=int(info["pid"]) or None)

    def _observe_some(self, names: set[str],
                      seen: tuple[tuple[int, int, int | None], float, dict[str, ProgramStatus]],
                      mark: tuple[int, int, int | None]) -> dict[str, ProgramStatus]:
        """The last look with `names` asked again (one request for them all); a name
        supervisord no longer knows is dropped. The whole look's time is kept: OBSERVE_NET
        counts from it."""
        self._seen = None  # until this look has its answer
        self._touched.clear()
        ordered = sorted(names)
        calls = [{"methodName": "supervisor.getProcessInfo", "params": [f"{n}:{n}"]}
                 for n in ordered]
        answers = self._call("system.multicall", calls)
        result = dict(seen[2])
        for name, info in zip(ordered, answers, strict=True):
            if isinstance(info, dict) and "faultCode" in info:
                if info["faultCode"] != _BAD_NAME:
                    raise Unavailable(f"supervisord: getProcessInfo {name}: "
                                      f"{info.get('faultString')}")
                result.pop(name, None)
                continue
            result[name] = self._status(name, info)
        result = dict(sorted(result.items()))
        self._seen = (mark, seen[1], result)
        return dict(result)

    def put(self, spec: ProgramSpec) -> None:
        as_root = unixusers.running_as_root()
        content = render_program(spec, default_log=self.logs / f"{spec.name}.log",
                                 as_root=as_root)
        if as_root and spec.user and spec.log_file:
            logfiles.hand_over(Path(spec.log_file), spec.user)
        path = self.programs / f"{spec.name}.conf"
        previous = path.read_text() if path.exists() else None
        namespec = f"{spec.name}:{spec.name}"
        if previous == content and not self._maybe_stale:
            # Configured as asked, and supervisord loaded what the files say (the last look
            # reread and found nothing new), as after a restart of supervisord: start it,
            # without a reread (which parses every program's file: once each is quadratic).
            info = self._call("getProcessInfo", namespec, ignore=(_BAD_NAME,))
            if info is not None:
                if info["statename"] not in ("RUNNING", "STARTING", "BACKOFF"):
                    self._call("startProcess", namespec, False, ignore=(_ALREADY_STARTED,))
                return
        self._digests.pop(spec.name, None)
        self._touched.add(spec.name)  # its digest changes with the file
        _write_private(path, content)
        try:
            added, changed, removed = self._reread_one(spec.name)
        except Unavailable:
            # One unreadable file would block every later reread: put the old one back.
            if previous is None:
                path.unlink(missing_ok=True)
            else:
                _write_private(path, previous)
            raise
        if spec.name in changed:
            self._call("stopProcess", namespec, True, ignore=(_NOT_RUNNING, _BAD_NAME))
            self._call("removeProcessGroup", spec.name, ignore=(_BAD_NAME,))
            self._call("addProcessGroup", spec.name, ignore=(_ALREADY_ADDED,))
        elif spec.name in added:
            self._call("addProcessGroup", spec.name, ignore=(_ALREADY_ADDED,))
        info = self._call("getProcessInfo", namespec)
        if info["statename"] not in ("RUNNING", "STARTING", "BACKOFF"):
            self._call("startProcess", namespec, False, ignore=(_ALREADY_STARTED,))

    def log_files(self) -> list[Path]:
        """The log each configured program writes itself, from its file's second line."""
        found = []
        for path in sorted(self.programs.glob("*.conf")):
            with contextlib.suppress(OSError), open(path) as f:
                f.readline()
                second = f.readline()
                if second.startswith(_LOG_PREFIX):
                    found.append(Path(second[len(_LOG_PREFIX):].rstrip("\n").replace("%%", "%")))
        return found

    def start(self, name: str) -> None:
        self._call("startProcess", f"{name}:{name}", False, ignore=(_ALREADY_STARTED,))

    def stop(self, name: str) -> None:
        self._call("stopProcess", f"{name}:{name}", True, ignore=(_NOT_RUNNING,))

    def remove(self, name: str) -> None:
        (self.programs / f"{name}.conf").unlink(missing_ok=True)
        self._digests.pop(name, None)
        self._touched.add(name)
        if self._call("getProcessInfo", f"{name}:{name}", ignore=(_BAD_NAME,)) is not None:
            self._call("stopProcess", f"{name}:{name}", True, ignore=(_NOT_RUNNING,))
            self._call("removeProcessGroup", name, ignore=(_BAD_NAME,))
        self._reread_one(name)  # forget the unlinked file's config too

    def _stop_at_once(self, names: list[str], deadline: float) -> float:
        """Tell every named program to stop without waiting for it, then wait until none
        runs; supervisord kills one that outlives its stopwaitsecs. Returns the seconds the
        telling took.

        One request for them all (`system.multicall` of stopProcess with wait false: each
        returns at once, so supervisord signals them all in one turn of its loop). One
        request each made the stop's length grow with the programs: each waited for a turn
        of supervisord's loop, which the programs already ending kept busy."""
        if not names:
            return 0.0
        began = time.monotonic()
        self._seen = None
        calls = [{"methodName": "supervisor.stopProcess", "params": [f"{n}:{n}", False]}
                 for n in names]
        results = self._call("system.multicall", calls)
        for name, result in zip(names, results, strict=False):
            if isinstance(result, dict) and result.get("faultCode") not in (
                    _NOT_RUNNING, _BAD_NAME):
                log.warning("supervisord: stop %s: %s", name, result.get("faultString"))
        told = time.monotonic() - began
        wanted = set(names)
        while time.monotonic() < deadline:
            look = time.monotonic()
            states = {str(i["group"]): str(i["statename"])
                      for i in self._call("getAllProcessInfo") if str(i["group"]) in wanted}
            if not any(s in ("RUNNING", "STARTING", "STOPPING", "BACKOFF")
                       for s in states.values()):
                break
            # A look costs supervisord a moment per program (0.1 s at 600): asked at most a
            # third of the time, so that it spends the rest reaping what ends; but a look
            # slowed by that reaping must not make the wait outlast it (1 s at most).
            time.sleep(min(1.0, max(0.1, 2 * (time.monotonic() - look))))
        return told

    def shutdown(self, timeout: float = 60) -> None:
        pid = self._daemon_pid()
        if pid is None:
            return
        # supervisord stops every program before it exits, but one group after another (each
        # program is a group here): with hundreds of programs that took a minute. They are
        # told to stop at once instead, the apps and the rest before the databases, then
        # supervisord itself.
        steps = Steps()  # logged at the end
        deadline = time.monotonic() + timeout
        with contextlib.suppress(Unavailable):
            programs = [str(i["group"]) for i in self._call("getAllProcessInfo")]
            first = [n for n in programs if not n.endswith(_LAST)]
            for what, wave in (("apps and the rest", first),
                               ("databases", [n for n in programs if n.endswith(_LAST)])):
                told = self._stop_at_once(wave, deadline)
                steps.done(f"{len(wave)} {what} (told in {told:.1f} s)")
        self._call("shutdown")
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise Unavailable(f"supervisord pid {pid} did not exit in {timeout}s; killed")
            time.sleep(0.05)
        steps.done("then itself")
        log.info("supervisord stopped in %.1f s: %s", steps.total(), steps)
