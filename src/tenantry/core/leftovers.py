"""Processes a data dir left running: found by what they name, stopped gently, told.

A process belongs to a data dir when it is one of the programs tenantry runs and its command
line names a path inside the data dir (a postmaster's `-D`, pgBackRest's `--config=`,
supervisord's `-c`, Caddy's `--config`), or when its environment was given by the data dir's
supervisord or backup runner (`SUPERVISOR_SERVER_URL`, `RESTIC_PASSWORD_FILE`: an app names
nothing else), or when it is in the data dir's cgroup (tenantry.core.cgroup, where the host
has one); and so does every process it started (a postmaster's backends name nothing).
Only that data dir's: another `up` or agent on this machine names another path, and an
operator's `tail -f` of a log in the data dir is nobody's leftover.

Used where a crash may have left something behind: `up` and the agent look before they start
anything, the agent again when its supervisord died under it, and both once more after a
clean stop, so that nothing of the data dir outlives it.

Stopping is gentle first: a postmaster gets SIGINT (PostgreSQL's fast shutdown: sessions
end, a checkpoint is written, WAL is archived), everything else SIGTERM; whatever is still
there after the grace period gets SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from tenantry.core import cgroup

ARCHIVER_MARK = "archive-push:async"  # pgBackRest's detached archiver, part of a live cluster
PROGRAMS = frozenset({
    "postgres", "postmaster", "pg_ctl", "pgbackrest", "restic", "caddy", "supervisord",
    "runuser", "prometheus", "prometheus-alertmanager", "prometheus-node-exporter",
    "prometheus-blackbox-exporter", "prometheus-postgres-exporter"})
MARKS = (b"SUPERVISOR_SERVER_URL=", b"RESTIC_PASSWORD_FILE=")


@dataclass(frozen=True)
class Leftover:
    pid: int
    ppid: int
    argv: tuple[str, ...]

    @property
    def postmaster(self) -> bool:
        return bool(self.argv) and os.path.basename(self.argv[0]) == "postgres" \
            and "-D" in self.argv

    @property
    def archiver(self) -> bool:
        return any(ARCHIVER_MARK in arg for arg in self.argv)

    def describe(self) -> str:
        text = " ".join(self.argv) or "?"
        return f"{self.pid} ({text[:100]}{'…' if len(text) > 100 else ''})"


@dataclass(frozen=True)
class _Proc:
    ppid: int
    argv: tuple[str, ...]
    marks: tuple[str, ...]  # the values of MARKS in its environment

    @property
    def program(self) -> bool:
        """One of the programs tenantry runs (python: supervisord, or tenantry itself)."""
        first = os.path.basename(self.argv[0]) if self.argv else ""
        if first.startswith("python"):
            return any(os.path.basename(a) == "supervisord" or a.startswith("tenantry")
                       for a in self.argv[1:3])
        return first in PROGRAMS


def _processes(proc: Path = Path("/proc")) -> dict[int, _Proc]:
    found = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            raw = (proc / entry.name / "cmdline").read_bytes()
            stat = (proc / entry.name / "stat").read_text()
        except OSError:
            continue
        tail = stat.rpartition(")")[2]
        fields = tail.split()
        if not raw or fields[0] == "Z":  # kernel threads name nothing; zombies are gone
            continue
        try:
            env = (proc / entry.name / "environ").read_bytes().split(b"\0")
        except OSError:
            env = []
        marks = tuple(v.partition(b"=")[2].decode(errors="replace") for v in env
                      if v.startswith(MARKS))
        argv = tuple(a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0"))
        found[pid] = _Proc(ppid=int(fields[1]), argv=argv, marks=marks)
    return found


def _inside(text: str, scope: str) -> bool:
    """`text` names `scope` or a path under it (not a sibling that merely starts alike)."""
    start = text.find(scope)
    while start != -1:
        end = start + len(scope)
        if end == len(text) or text[end] in "/ \"':;=,":
            return True
        start = text.find(scope, start + 1)
    return False


def _tree(roots: Iterable[int], children: dict[int, list[int]]) -> set[int]:
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, ()))
    return seen


def _me_and_ancestors(table: dict[int, _Proc]) -> set[int]:
    """This process and the chain of its parents up to (not including) init."""
    me = os.getpid()
    found = {me}
    up = table[me].ppid if me in table else 0
    while up > 1 and up not in found:
        found.add(up)
        up = table[up].ppid if up in table else 0
    return found


def find(scope: Path, *, spare_trees: Collection[int] = (), spare_own: bool = False,
         spare: Callable[[Leftover], bool] = lambda _: False,
         proc: Path = Path("/proc")) -> list[Leftover]:
    """The processes of `scope`, except this process and its ancestors, the trees under
    `spare_trees` (a live supervisord: adopted, not a leftover), this process's own
    descendants when `spare_own`, and those `spare` keeps."""
    table = _processes(proc)
    children: dict[int, list[int]] = {}
    for pid, p in table.items():
        children.setdefault(p.ppid, []).append(pid)
    me = os.getpid()
    spared = _me_and_ancestors(table)
    spared |= _tree([p for p in spare_trees if p in table], children)
    if spare_own:
        spared |= _tree(children.get(me, ()), children)
    # Programs name the data dir as they were given it: through a symlink (a linked home or
    # /var/lib) that is not the resolved path, so both are looked for.
    wheres = {str(scope.absolute()), str(scope.resolve())}
    roots = [pid for pid, p in table.items() if pid not in spared and any(
        (p.program and any(_inside(arg, where) for arg in p.argv))
        or any(_inside(mark, where) for mark in p.marks) for where in wheres)]
    # and whatever is in the data dir's cgroup, however it changed its name and environment
    for group in cgroup.recorded(scope):
        roots += [pid for pid in cgroup.members(group) if pid in table and pid not in spared]
    found = [Leftover(pid, table[pid].ppid, table[pid].argv)
             for pid in sorted(_tree(roots, children) - spared)]
    kept = {x.pid for x in found if spare(x)}
    kept = _tree(kept, children)
    return [x for x in found if x.pid not in kept]


def naming(scope: Path, proc: Path = Path("/proc")) -> list[str]:
    """Every live process, but this one and its ancestors, that names `scope` anywhere: in
    its command line, its environment or its working directory. Broader than `find` (an
    operator's shell or `tail -f` count here too), so it is for telling, not for stopping:
    what a clean stop still sees at its very end is named, with its parent and start, so
    that a leftover of any kind identifies itself."""
    wheres = {str(scope.absolute()), str(scope.resolve())}
    table = _processes(proc)
    mine = _me_and_ancestors(table)
    lines = []
    for pid, p in sorted(table.items()):
        if pid in mine:
            continue
        try:
            env = (proc / str(pid) / "environ").read_bytes().decode(errors="replace")
        except OSError:
            env = ""
        try:
            cwd = os.readlink(proc / str(pid) / "cwd")
        except OSError:
            cwd = ""
        texts = [*p.argv, *env.split("\0"), cwd]
        if any(_inside(text, where) for text in texts for where in wheres):
            lines.append(f"{Leftover(pid, p.ppid, p.argv).describe()}, parent {p.ppid}, "
                         f"cwd {cwd or '?'}, started {_started(proc, pid)}")
    return lines


def _started(proc: Path, pid: int) -> str:
    """When `pid` started, as UTC wall-clock time (from /proc's ticks since boot)."""
    try:
        ticks = int((proc / str(pid) / "stat").read_text().rpartition(")")[2].split()[19])
        uptime = float((proc / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return "?"
    at = time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    return time.strftime("%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 10)}"


def sweep(scope: Path, *, tell: Callable[[list[Leftover]], None] = lambda _: None,
          grace: float = 30.0, rounds: int = 3, spare_trees: Collection[int] = (),
          spare_own: bool = False,
          spare: Callable[[Leftover], bool] = lambda _: False) -> list[str]:
    """`find` and `stop` (telling each round's finds first), and again while something is
    found: a postmaster stopped here archives its last WAL on its way out, and the
    pgBackRest archiver that starts (detached) was not there to be found before."""
    lines: list[str] = []
    for _ in range(rounds):
        found = find(scope, spare_trees=spare_trees, spare_own=spare_own, spare=spare)
        if not found:
            return lines
        tell(found)
        lines += stop(found, grace=grace)
    left = find(scope, spare_trees=spare_trees, spare_own=spare_own, spare=spare)
    return lines + [f"still running after {rounds} rounds: {x.describe()}" for x in left]


def tree_of(pid: int) -> set[int]:
    """`pid` and every process it started, as /proc tells now."""
    children: dict[int, list[int]] = {}
    for child, p in _processes().items():
        children.setdefault(p.ppid, []).append(child)
    return _tree([pid], children)


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command's name (state first), or None when it is
    gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _state(pid: int) -> str | None:
    """Its state letter (R, S, D, T, Z …), or None when it is gone."""
    fields = stat_fields(pid)
    return None if fields is None else fields[0]


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z")


def stopped(pid: int) -> bool:
    """Stopped by a signal (SIGSTOP, SIGTSTP …): state T. Not a process a debugger holds
    (state t): that one an operator stopped on purpose."""
    return _state(pid) == "T"


def wait_gone(pids: Collection[int], timeout: float) -> set[int]:
    """The pids still there after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    left = {pid for pid in pids if _alive(pid)}
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {pid for pid in left if _alive(pid)}
    return left


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop(found: Collection[Leftover], *, grace: float = 30.0) -> list[str]:
    """Stop them: SIGINT to postmasters (their backends follow), SIGTERM to the rest, SIGKILL
    to whatever is left after `grace` seconds, and at once to those stopped by a signal.
    Returns one line per process stopped that names how ("stopped", "killed" when it had to
    be, "killed, frozen")."""
    if not found:
        return []
    masters = {x.pid for x in found if x.postmaster}
    # A process stopped by a signal acts on none until it runs again; what a crash left
    # frozen is not trusted to stop cleanly (a frozen `up` tree), so it is killed at once.
    frozen = {x.pid for x in found if stopped(x.pid)}
    for pid in frozen:
        _signal(pid, signal.SIGKILL)
    for x in found:
        if x.pid in frozen:
            continue
        if x.pid in masters:
            _signal(x.pid, signal.SIGINT)
        elif x.ppid not in masters:
            _signal(x.pid, signal.SIGTERM)
    stubborn = wait_gone([x.pid for x in found if x.pid not in frozen], grace)
    for pid in stubborn:
        _signal(pid, signal.SIGKILL)
    wait_gone(stubborn | frozen, 5.0)
    def how(x: Leftover) -> str:
        return "killed" if x.pid in stubborn else "killed, frozen" if x.pid in frozen \
            else "stopped"

    return [f"{how(x)} {x.describe()}" for x in found if x.ppid not in masters or x.pid in frozen]
