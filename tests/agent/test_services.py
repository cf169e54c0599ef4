from __future__ import annotations

import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tenantry.agent import supervisord as supervisord_module
from tenantry.agent import unixusers
from tenantry.agent.services import ProgramSpec
from tenantry.agent.supervisord import SupervisordManager
from tenantry.agent.testing import FakeServiceManager
from tenantry.core.errors import InvalidInput, Unavailable
from tests.conftest import free_port

Wait = Callable[..., None]

TRICKY = {
    "QUOTES": 'say "hi", it is 100%',
    "SINGLE": "it's, 50% off; (really) $HOME \\n",
    "PCT": "%(ENV_HOME)s %s %%",
    "EMPTY": "",
}


def sleeper(name: str, out: Path | None = None, env: dict[str, str] | None = None) -> ProgramSpec:
    code = (
        "import json, os, sys, time; "
        "len(sys.argv) > 1 and open(sys.argv[1], 'w').write(json.dumps(dict(os.environ))); "
        "time.sleep(3600)"
    )
    argv = (sys.executable, "-c", code) + ((str(out),) if out else ())
    return ProgramSpec(name=name, command=argv, environment=env or {})


def alive(pid: int) -> bool:
    """True unless gone or a zombie (an orphan may be reparented to a non-reaping PID 1)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def count_calls(m: SupervisordManager, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The XML-RPC methods `m` calls from now on, in order."""
    calls: list[str] = []
    call = m._call

    def counting(method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(method)
        return call(method, *args, **kwargs)

    monkeypatch.setattr(m, "_call", counting)
    return calls


def settled_with_calls(m: SupervisordManager, n: int, wait_for: Wait,
                       monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`n` programs app-0... running and looked at once their start's log lines are written;
    the XML-RPC methods `m` calls from then on."""
    for i in range(n):
        m.put(sleeper(f"app-{i}"))
    wait_for(lambda: all(running(m, f"app-{i}") for i in range(n)), what="RUNNING")
    time.sleep(1.5)  # past the log lines that follow a start
    m.observe()
    return count_calls(m, monkeypatch)


def running(m: SupervisordManager, name: str) -> bool:
    st = m.observe().get(name)
    return st is not None and st.state == "RUNNING" and st.pid is not None


def test_spec_repr_hides_environment_values_and_digest_tracks_fields() -> None:
    spec = ProgramSpec(name="web-1", command=("app",), environment={"DB_URL": "postgres://x:pw@h"})
    assert "pw@h" not in repr(spec) and "pw@h" not in str(spec)
    assert "DB_URL" in repr(spec)
    same = ProgramSpec(name="web-1", command=("app",), environment={"DB_URL": "postgres://x:pw@h"})
    assert spec.digest() == same.digest()
    changed = ProgramSpec(name="web-1", command=("app",), environment={"DB_URL": "other"})
    assert spec.digest() != changed.digest()
    with pytest.raises(InvalidInput):
        ProgramSpec(name="Bad Name", command=("x",), environment={})


def test_fake_service_manager_records_only_needed_actions() -> None:
    fake = FakeServiceManager()
    fake.ensure_started()
    spec = ProgramSpec(name="web", command=("app",), environment={})
    fake.put(spec)
    fake.put(spec)  # same digest, running: no-op
    assert fake.observe()["web"].state == "RUNNING"
    assert fake.observe()["web"].digest == spec.digest()
    fake.stop("web")
    assert fake.observe()["web"].state == "STOPPED"
    fake.start("web")
    fake.remove("web")
    fake.remove("web")  # absent: no-op
    assert fake.observe() == {}
    assert fake.calls == [
        ("ensure_started", ""),
        ("put", "web"),
        ("stop", "web"),
        ("start", "web"),
        ("remove", "web"),
    ]


@pytest.mark.slow
def test_supervisord_put_replace_stop_start_remove(
    supervisor: SupervisordManager, short_tmp: Path, wait_for: Wait
) -> None:
    out = short_tmp / "env.json"
    spec = sleeper("app-1", out, TRICKY)
    supervisor.put(spec)
    wait_for(lambda: running(supervisor, "app-1"), what="app-1 RUNNING")
    status = supervisor.observe()["app-1"]
    assert status.digest == spec.digest()
    conf = supervisor.programs / "app-1.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    wait_for(out.exists, what="env dump")
    env = json.loads(out.read_text())
    assert {k: env[k] for k in TRICKY} == TRICKY

    supervisor.put(spec)  # unchanged: keeps its process
    assert supervisor.observe()["app-1"].pid == status.pid

    changed = sleeper("app-1", out, {**TRICKY, "EXTRA": "1"})
    supervisor.put(changed)
    wait_for(lambda: running(supervisor, "app-1"), what="app-1 RUNNING again")
    after = supervisor.observe()["app-1"]
    assert after.digest == changed.digest() and after.pid != status.pid

    supervisor.stop("app-1")
    assert supervisor.observe()["app-1"].state == "STOPPED"
    assert conf.exists()
    supervisor.start("app-1")
    wait_for(lambda: running(supervisor, "app-1"), what="app-1 restarted")

    supervisor.remove("app-1")
    assert "app-1" not in supervisor.observe()
    assert not conf.exists()
    supervisor.remove("app-1")  # absent: no-op


@pytest.mark.slow
def test_an_idle_observation_does_not_make_supervisord_parse_every_program(
    supervisor: SupervisordManager, wait_for: Wait, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reread makes supervisord parse every program's file (300 platforms: 600 files), so
    it is asked for once after a change, not at every look; a file written without the
    reread that loads it (an agent killed between the two) is still found at the first look
    of the next agent."""
    for i in range(3):
        supervisor.put(sleeper(f"app-{i}"))
    wait_for(lambda: all(running(supervisor, f"app-{i}") for i in range(3)), what="RUNNING")
    calls = count_calls(supervisor, monkeypatch)
    for _ in range(5):
        assert set(supervisor.observe()) == {"app-0", "app-1", "app-2"}
    # nothing changed: at most one look that finds that out, not one per pass
    assert calls.count("reloadConfig") <= 1 and calls.count("getAllProcessInfo") <= 1
    calls.clear()
    changed = sleeper("app-1", env={"V": "2"})
    supervisor.put(changed)
    # the put reads its own file, which loads it, and no other
    assert calls.count("tenantry.readProgram") == 1 and calls.count("reloadConfig") == 0
    wait_for(lambda: running(supervisor, "app-1"), what="app-1 RUNNING again")
    calls.clear()
    assert supervisor.observe()["app-1"].digest == changed.digest()
    supervisor.put(sleeper("app-3"))
    supervisor.observe()
    supervisor.remove("app-3")
    assert "app-3" not in supervisor.observe()
    # one file read for each change, and no reread of them all, nor for the looks after
    assert calls.count("tenantry.readProgram") == 2 and calls.count("reloadConfig") == 0

    # written behind its back, as by an agent killed before its reread
    crashed = supervisor.programs / "app-9.conf"
    crashed.write_text((supervisor.programs / "app-0.conf").read_text()
                       .replace("app-0", "app-9"))
    crashed.chmod(0o600)
    fresh = SupervisordManager(supervisor.root)
    seen = fresh.observe()
    assert seen["app-9"].state == "STOPPED" and seen["app-9"].digest == ""


@pytest.mark.slow
def test_a_put_or_remove_makes_supervisord_read_that_programs_file_alone(
    supervisor: SupervisordManager, short_tmp: Path, wait_for: Wait
) -> None:
    """Work proportional to the change: a reread parses every program's file (a full host
    of 300 platforms: 0.65 s of supervisord each, three times for each new platform). A put
    and a remove read only the program's own file. Shown with another program's file that
    does not parse: a reread of everything refuses it, so a put that reread would fail."""
    supervisor.put(sleeper("app-0"))
    broken = supervisor.programs / "app-zz.conf"
    broken.write_text("[program:app-zz]\ncommand=/bin/true\nthis line is not ini\n")
    broken.chmod(0o600)

    def state(name: str) -> str:  # not through observe, which rereads everything
        return str(supervisor._call("getProcessInfo", f"{name}:{name}")["statename"])

    supervisor.put(sleeper("app-1"))
    wait_for(lambda: state("app-1") == "RUNNING", what="app-1 RUNNING")
    out = short_tmp / "env.json"
    supervisor.put(sleeper("app-1", out, {"V": "2"}))  # changed: replaced
    wait_for(out.exists, what="app-1 run again with its new environment")
    time.sleep(0.2)  # written whole
    env = json.loads(out.read_text())
    assert env["V"] == "2"
    # what supervisord's import of our namespace needed is not passed on to the programs
    assert "PYTHONPATH" not in env
    supervisor.remove("app-0")
    assert {i["group"] for i in supervisor._call("getAllProcessInfo")} == {"app-1"}

    # the reread of everything still refuses the broken file: it was never read above
    with pytest.raises(Unavailable, match="app-zz"):
        supervisor._call("reloadConfig")


@pytest.mark.slow
def test_a_supervisord_started_without_our_namespace_is_reread_whole(
    short_tmp: Path, wait_for: Wait, kill_supervisord: Callable[[Path], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An agent upgraded on a running host adopts the supervisord an older agent started,
    which has no `tenantry.readProgram`: its puts and removes reread everything, as before."""
    root = short_tmp / "sv"
    manager = SupervisordManager(root)
    try:
        manager.ensure_started()
        manager.shutdown()
        conf = (root / "supervisord.conf").read_text()
        old = conf.split("[rpcinterface:tenantry]")[0] + "[supervisorctl]" + \
            conf.split("[supervisorctl]")[1]
        (root / "supervisord.conf").write_text(old)
        subprocess.run(["supervisord", "-c", str(root / "supervisord.conf")], check=True,
                       env={"PATH": os.environ["PATH"]}, start_new_session=True)
        wait_for(lambda: manager.responds(), what="the older supervisord up")
        adopted = SupervisordManager(root)
        adopted.ensure_started()  # adopts it, with the file it was started with
        with pytest.raises(Unavailable):
            adopted._call("tenantry.readProgram", "x")
        calls = count_calls(adopted, monkeypatch)
        adopted.put(sleeper("app-0"))
        wait_for(lambda: running(adopted, "app-0"), what="app-0 RUNNING")
        adopted.remove("app-0")
        assert "app-0" not in adopted.observe()
        assert calls.count("reloadConfig") >= 2  # the put's and the remove's

        adopted.shutdown()  # the next supervisord is started with our namespace
        adopted.ensure_started()
        calls.clear()
        adopted.put(sleeper("app-1"))
        wait_for(lambda: running(adopted, "app-1"), what="app-1 RUNNING")
        assert calls.count("tenantry.readProgram") == 1
    finally:
        kill_supervisord(root)


@pytest.mark.slow
def test_a_look_asks_supervisord_only_when_its_log_says_something_changed(
    supervisor: SupervisordManager, wait_for: Wait, monkeypatch: pytest.MonkeyPatch
) -> None:
    """getAllProcessInfo costs supervisord and the agent a moment per program, and the agent
    looks every pass: an idle host of 300 platforms asked about 600 programs every 2 s. A
    look is asked again only when supervisord's log moved (it logs every change of state),
    so a program killed behind everyone's back is still seen at the next look."""
    calls = settled_with_calls(supervisor, 2, wait_for, monkeypatch)
    before = supervisor.observe()["app-0"]
    for _ in range(20):
        supervisor.observe()
    assert "getAllProcessInfo" not in calls

    os.kill(before.pid or 0, signal.SIGKILL)  # not through supervisord: only its log knows
    wait_for(lambda: supervisor.observe()["app-0"].pid not in (None, before.pid),
             timeout=10, what="app-0 seen restarted under a new pid")
    # its log lines named app-0 alone: it alone was asked for, not every program
    assert "system.multicall" in calls and "getAllProcessInfo" not in calls
    assert supervisor.observe()["app-1"].pid is not None

    # the net: a look older than OBSERVE_NET is taken again even with a quiet log
    calls.clear()
    monkeypatch.setattr(supervisord_module, "OBSERVE_NET", 0.0)
    supervisor.observe()
    supervisor.observe()
    assert calls.count("getAllProcessInfo") == 2


@pytest.mark.slow
def test_a_look_after_a_change_asks_for_the_changed_programs_alone(
    supervisor: SupervisordManager, wait_for: Wait, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Work proportional to the change: a creation on a host of 300 platforms looks at the
    programs several times, and each whole look is 600 programs (0.1 s of supervisord, and
    as much of the agent's parsing). After a put, a start, a stop or a remove, and after log
    lines that name programs, only those are asked; a line the agent cannot read, and the
    net (OBSERVE_NET), still ask for every program."""
    calls = settled_with_calls(supervisor, 12, wait_for, monkeypatch)

    supervisor.put(sleeper("new"))
    wait_for(lambda: running(supervisor, "new"), what="new RUNNING")
    supervisor.stop("app-3")
    assert supervisor.observe()["app-3"].state == "STOPPED"
    supervisor.remove("app-4")
    seen = supervisor.observe()
    assert "app-4" not in seen and seen["new"].digest == sleeper("new").digest()
    assert len(seen) == 12 and all(seen[f"app-{i}"].state == "RUNNING"
                                   for i in range(12) if i not in (3, 4))
    assert "getAllProcessInfo" not in calls and "system.multicall" in calls

    # a line that is not a program's change of state: every program is asked for
    with (supervisor.logs / "supervisord.log").open("a") as f:
        f.write("2026-12-05 10:00:00,000 INFO something else happened\n")
    assert supervisor.observe()["app-5"].state == "RUNNING"
    assert calls.count("getAllProcessInfo") == 1


def _wakeups(pid: int) -> int:
    """How often `pid` has gone to sleep and been woken (voluntary context switches)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError(f"no voluntary_ctxt_switches for pid {pid}")


CHATTY = ("import sys, time; print(*sys.argv[1:], sep='|', flush=True); "
          "[(print('line', i, flush=True), time.sleep(0.01)) for i in range(300)]; "
          "time.sleep(3600)")


@pytest.mark.slow
def test_a_program_writes_its_own_log_and_its_lines_do_not_wake_supervisord(
    supervisor: SupervisordManager, short_tmp: Path, wait_for: Wait
) -> None:
    """Every line that went through supervisord's pipe woke its loop, and each wake-up
    walks every program: 100 idle platforms made it wake 41 times a second for the apps'
    request lines. A program writes its log itself; its arguments reach it unchanged
    through the shell that opens the log."""
    logs = short_tmp / "logs"
    logs.mkdir()
    log_file = logs / "chatty.log"
    args = tuple(TRICKY.values()) + ("-c", "$1", '"$@"', "a b", "x;y #z")
    spec = ProgramSpec(name="chatty", command=(sys.executable, "-c", CHATTY, *args),
                       log_file=str(log_file))
    daemon = supervisor.daemon_pid()
    assert daemon is not None
    before = _wakeups(daemon)
    supervisor.put(spec)
    wait_for(lambda: log_file.exists() and "line 299" in log_file.read_text(), timeout=20,
             what="300 lines in the program's own log")
    woken = _wakeups(daemon) - before
    lines = log_file.read_text().splitlines()
    assert lines[0] == "|".join(args), "argv unchanged"
    assert lines[1:] == [f"line {i}" for i in range(300)]
    # 3+ s: a wake-up a second and those of the put itself, not one per line
    assert woken < 100, f"supervisord woke {woken} times for 300 lines"
    assert supervisor.log_files() == [log_file]
    caught = supervisor.logs / "chatty.log"  # what went through supervisord: nothing
    assert not caught.exists() or caught.read_text() == ""
    assert supervisor.observe()["chatty"].digest == spec.digest()


@pytest.mark.slow
def test_a_log_the_shell_cannot_open_is_told_in_supervisords_own(
    supervisor: SupervisordManager, short_tmp: Path, wait_for: Wait
) -> None:
    """The program does not start, and why is in the log supervisord keeps for it."""
    spec = ProgramSpec(name="nolog", command=("sleep", "60"),
                       log_file=str(short_tmp / "missing" / "nolog.log"))
    supervisor.put(spec)
    caught = supervisor.logs / "nolog.log"
    wait_for(lambda: caught.exists() and "nolog.log" in caught.read_text(), timeout=20,
             what="the shell's complaint in supervisord's log of the program")
    wait_for(lambda: supervisor.observe()["nolog"].state == "FATAL", timeout=30,
             what="nolog FATAL: it never ran")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="programs run as a platform's user only as root")
def test_a_platform_users_program_takes_over_the_log_supervisord_wrote(
    supervisor: SupervisordManager, short_tmp: Path, wait_for: Wait
) -> None:
    """A host upgraded in place: the log a program had, written by supervisord as root,
    is handed to the platform's user, whose program appends to it."""
    user = f"tp-lg{os.getpid() % 100000}"
    unixusers.ensure_user(user)
    try:
        short_tmp.chmod(0o711)  # as a platform's home is reached
        logs = short_tmp / "plogs"
        logs.mkdir()
        unixusers.chown_tree(logs, user)
        log_file = logs / "web.log"
        log_file.write_text("from before\n")  # root's, as supervisord left it
        spec = ProgramSpec(name="asuser", user=user, log_file=str(log_file),
                           command=("/usr/bin/python3", "-c",  # one the user may run
                                    "import os; print('uid', os.getuid(), flush=True); "
                                    "import time; time.sleep(60)"))
        supervisor.put(spec)
        uid = pwd.getpwnam(user).pw_uid
        wait_for(lambda: f"uid {uid}" in log_file.read_text(), what="the user's line")
        assert log_file.read_text().startswith("from before\n")
        assert log_file.stat().st_uid == uid
        supervisor.remove("asuser")
    finally:
        unixusers.remove_user(user)
        unixusers.remove_group_if_empty(user)


@pytest.mark.slow
def test_unrepresentable_value_is_refused_and_leaves_nothing(
    supervisor: SupervisordManager,
) -> None:
    with pytest.raises(InvalidInput):
        supervisor.put(sleeper("bad", env={"X": "a ;comment"}))
    assert not (supervisor.programs / "bad.conf").exists()
    assert "bad" not in supervisor.observe()


@pytest.mark.slow
def test_programs_survive_sigkill_of_the_agent_and_are_adopted(
    short_tmp: Path, wait_for: Wait, kill_supervisord: Callable[[Path], None]
) -> None:
    root = short_tmp / "sv"
    agent = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from tenantry.agent.services import ProgramSpec
        from tenantry.agent.supervisord import SupervisordManager
        m = SupervisordManager(Path({str(root)!r}))
        m.ensure_started()
        argv = (sys.executable, "-c", "import time; time.sleep(3600)")
        m.put(ProgramSpec(name="keep", command=argv, environment={{}}))
        print("ready", flush=True)
        time.sleep(3600)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", agent], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        manager = SupervisordManager(root)
        wait_for(lambda: running(manager, "keep"), what="keep RUNNING")
        before = manager.observe()["keep"].pid
        daemon = int((root / "supervisord.pid").read_text())
        os.killpg(proc.pid, signal.SIGKILL)  # the agent and its whole process group
        proc.wait(10)

        adopter = SupervisordManager(root)
        adopter.ensure_started()
        assert int((root / "supervisord.pid").read_text()) == daemon
        assert adopter.observe()["keep"].pid == before
        assert before is not None and alive(before)

        adopter.shutdown()
        assert not alive(daemon)
        wait_for(lambda: not alive(before), what="program gone")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        kill_supervisord(root)


@pytest.mark.slow
def test_stale_pidfile_starts_a_new_daemon(
    short_tmp: Path, wait_for: Wait, kill_supervisord: Callable[[Path], None]
) -> None:
    root = short_tmp / "sv"
    manager = SupervisordManager(root)
    try:
        manager.ensure_started()
        manager.put(sleeper("again"))
        old = int((root / "supervisord.pid").read_text())
        manager.shutdown()
        (root / "supervisord.pid").write_text(f"{old}\n")  # left behind by a crash
        manager.ensure_started()
        assert int((root / "supervisord.pid").read_text()) != old
        wait_for(lambda: running(manager, "again"), what="configured program back")
    finally:
        kill_supervisord(root)


def test_after_the_agents_shutdown_no_thread_starts_the_service_manager_or_a_program() -> None:
    """At a stop the API goes before the agent, and the agent's threads (the main loop's
    "control plane unreachable" path puts the exporters again; the keeper of supervisord starts
    a new one when it finds none) must not bring up what the stop just took down: a program
    started then outlives the stop."""
    from tenantry.agent.main import _Serialized

    inner = FakeServiceManager()
    services = _Serialized(inner)
    services.ensure_started()
    services.put(ProgramSpec(name="node-exporter", command=("node-exporter",)))
    services.shutdown()
    made = list(inner.calls)
    for late in (services.ensure_started,
                 lambda: services.put(ProgramSpec(name="node-exporter", command=("x",))),
                 lambda: services.start("node-exporter")):
        with pytest.raises(Unavailable, match="stopping"):
            late()
    assert inner.calls == made


@pytest.mark.slow
def test_a_shutdown_stops_the_programs_at_once_and_the_databases_last(
    supervisor: SupervisordManager, short_tmp: Path, wait_for: Wait
) -> None:
    """supervisord alone stops one program after another: with hundreds (a host of 100
    platforms) a clean stop took a minute. Each of these takes 1 s to stop."""
    code = textwrap.dedent("""
        import signal, sys, time
        out = sys.argv[1]
        def term(*_):
            open(out, "a").write(f"term {time.time()}\\n")
            time.sleep(1)
            open(out, "a").write(f"exit {time.time()}\\n")
            sys.exit(0)
        signal.signal(signal.SIGTERM, term)
        while True:
            time.sleep(60)
    """)
    script = short_tmp / "slow_stop.py"
    script.write_text(code)
    names = [f"p{i}-a-web-0" for i in range(8)] + ["p0-db"]
    for name in names:
        supervisor.put(ProgramSpec(name=name, command=(sys.executable, str(script),
                                                       str(short_tmp / name))))
    wait_for(lambda: all(running(supervisor, n) for n in names), what="all RUNNING")
    supervisor.shutdown()
    told = {n: dict(line.split() for line in (short_tmp / n).read_text().splitlines())
            for n in names}
    apps = [n for n in names if not n.endswith("-db")]
    terms = [float(told[n]["term"]) for n in apps]
    assert max(terms) - min(terms) < 1.0, "told at once (one after another: 7 s and more)"
    assert float(told["p0-db"]["term"]) >= max(float(told[n]["exit"]) for n in apps) - 0.05, \
        "the database after the apps"


def test_a_new_supervisord_starts_the_apps_a_window_at_a_time(
    supervisor: SupervisordManager, wait_for: Wait, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path
) -> None:
    """A host's start brings back hundreds of apps: all importing at once on two cores, each
    took longer than alone, and supervisord and the agent, starved by them, asked for the
    next ones ever more slowly. A program given a PORT now holds one of START_WINDOW places
    until it listens there (or START_HOLD s: one that never listens does not stop the
    rest); the databases, given none, start first and at once."""
    monkeypatch.setattr(supervisord_module, "START_WINDOW", 2)
    monkeypatch.setattr(supervisord_module, "START_HOLD", 2.0)
    listen = ("import os, socket, sys, time; time.sleep(0.4); s = socket.socket(); "
              "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
              "s.bind(('127.0.0.1', int(os.environ['PORT']))); t = time.time(); s.listen(); "
              "open(sys.argv[1], 'w').write(repr(t)); time.sleep(3600)")
    apps = {f"p{i}-a-web-0": free_port() for i in range(1, 7)}
    never = "p0-a-web-0"  # given a PORT it never listens on (first in the order)
    for name, port in apps.items():
        supervisor.put(ProgramSpec(name=name, command=(sys.executable, "-c", listen,
                                                       str(tmp_path / name)),
                                   environment={"PORT": str(port)}))
    supervisor.put(sleeper(never, env={"PORT": str(free_port())}))
    for i in range(2):
        supervisor.put(sleeper(f"p{i}-db"))
    wait_for(lambda: all(s.state == "RUNNING" for s in supervisor.observe().values()),
             what="all RUNNING")
    supervisor.shutdown()
    for name in apps:
        (tmp_path / name).unlink()

    fresh = SupervisordManager(supervisor.root)
    asked: list[tuple[str, float]] = []
    call = fresh._call

    def counting(method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "startProcess":
            asked.append((args[0].split(":")[0], time.time()))
        return call(method, *args, **kwargs)

    monkeypatch.setattr(fresh, "_call", counting)
    t0 = time.monotonic()
    fresh.ensure_started()
    took = time.monotonic() - t0
    try:
        order = [name for name, _ in asked]
        assert sorted(order) == sorted([*apps, never, "p0-db", "p1-db"])
        assert order[:2] == ["p0-db", "p1-db"], "the databases first, without waiting"
        wait_for(lambda: all((tmp_path / n).exists() for n in apps), what="every app listens")
        listened = {n: float((tmp_path / n).read_text()) for n in apps}
        for name, when in asked:  # the places taken when each was asked for
            held = [n for n, t in asked if t < when and n in {*apps, never}
                    and (n == never and when - t < 2.0 or listened.get(n, 0) > when)]
            assert len(held) < 2, f"{name} asked for while {held} were starting"
        assert took < 10, f"the start took {took:.1f} s: held by the one that never listens"
    finally:
        fresh.shutdown()


def test_a_stop_asked_while_a_new_supervisord_starts_its_apps_starts_no_more(
    supervisor: SupervisordManager, wait_for: Wait, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop (Ctrl-C on `up`) during the start of a host's hundreds of apps waited for
    every one to start, then stopped them all. Here each app is slow to start on purpose:
    it never listens on its PORT, so each holds the one place for START_HOLD s."""
    monkeypatch.setattr(supervisord_module, "START_WINDOW", 1)
    monkeypatch.setattr(supervisord_module, "START_HOLD", 2.0)
    apps = [f"p{i}-a-web-0" for i in range(6)]
    for name in apps:
        supervisor.put(sleeper(name, env={"PORT": str(free_port())}))
    wait_for(lambda: all(s.state == "RUNNING" for s in supervisor.observe().values()),
             what="all RUNNING")
    supervisor.shutdown()

    fresh = SupervisordManager(supervisor.root)
    asked: list[str] = []
    call = fresh._call

    def counting(method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "startProcess":
            asked.append(args[0].split(":")[0])
        return call(method, *args, **kwargs)

    monkeypatch.setattr(fresh, "_call", counting)
    stopping = threading.Event()
    threading.Timer(3.0, stopping.set).start()  # while the second app holds its place
    t0 = time.monotonic()
    try:
        fresh.ensure_started(stopping)
        took = time.monotonic() - t0
        assert asked == apps[:2], asked  # without the stop: all six, after 10 s and more
        assert took < 3.5, f"the start went on {took - 3:.1f} s after the stop was asked"
        started = [n for n, s in fresh.observe().items() if s.state in ("STARTING", "RUNNING")]
        assert sorted(started) == apps[:2], started
    finally:
        fresh.shutdown()


def test_a_supervisord_started_on_many_programs_answers_while_it_starts_them(
    supervisor: SupervisordManager, wait_for: Wait, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host's supervisord starting on 200 programs started them all by itself and answered
    nothing meanwhile, longer than the agent waits (it gave up, and the next agent stopped
    what was starting: `up` on 100 platforms never served). Now it is asked to start each,
    the databases first, and answers between two; an unchanged program's put then is no
    reread that parses every program's file."""
    names = [f"p{i}-a-web-0" for i in range(30)] + [f"p{i}-db" for i in range(10)]
    for name in names:
        supervisor.put(sleeper(name))
    wait_for(lambda: all(s.state == "RUNNING" for s in supervisor.observe().values()),
             what="all RUNNING")
    supervisor.shutdown()

    fresh = SupervisordManager(supervisor.root)
    calls: list[tuple[str, tuple[Any, ...]]] = []
    call = fresh._call

    def counting(method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append((method, args))
        return call(method, *args, **kwargs)

    monkeypatch.setattr(fresh, "_call", counting)
    fresh.ensure_started()
    started = [args[0].split(":")[0] for method, args in calls if method == "startProcess"]
    assert sorted(started) == sorted(names)
    assert all(n.endswith("-db") for n in started[:10]), "the databases first"
    wait_for(lambda: all(s.state == "RUNNING" for s in fresh.observe().values()),
             what="all RUNNING again")
    calls.clear()
    for name in names:
        fresh.put(sleeper(name))
    assert [m for m, _ in calls if m == "reloadConfig"] == []
    fresh.shutdown()
