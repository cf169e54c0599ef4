"""Fault injection: one process killed at a time, and how long until everything serves again
(issue 11).

A real `tenantry up` with two bodyshop platforms. Throughout, a writer per platform creates
repair jobs through the ingress and logs every one the app acknowledged (HTTP 201), and a
poller asks the API for its hosts every 0.2 s and counts its answers. Then, --runs times for
each fault, one part is SIGKILLed and the trial waits until the part is back (a new process
in its place) and both platforms answer HTTPS 200; after each trial every acknowledged job
must still be there.

Faults: supervisord, Caddy, the agent, an app process, a platform's postmaster, the control
plane's postmaster, the API process, the worker; an app's port stolen (the app killed and
its port bound at once by another program, so that its restart cannot bind it); the data
disk filled by another program to half the agent's reserve (healed: the reserve released,
the host shown LOW, both platforms serving; the control plane then runs on a 4 GiB ext4 of
the bench's own, loop-mounted); `up` alone (its children die with it; supervisord, the
platforms and the store go on) and the whole `up` tree (`up`, its children, supervisord and
everything under it, the store): for those two `up` is started again by the bench's
systemd (below), and the time includes that.

With `--signal stop` the part is frozen (SIGSTOP: it runs, and answers nothing) instead,
and healed means the same: tenantry noticed, killed it and started a new one, and both
platforms serve. The platforms run a bodyshop release with `[health] restart_after = 3`, so
that a hung app is tenantry's to restart.

Throughout, the bench plays systemd for `up` with the shipped unit
(deploy/systemd/tenantry.service, through tests.service_manager): `up` gets a notify socket
and a watchdog of the unit's WatchdogSec; whenever `up` exits it is started again at once
(Restart=always), and when its watchdog pings stop (a frozen `up`, or the whole frozen tree)
it is ended as systemd ends it (SIGABRT and SIGCONT, SIGKILL after TimeoutAbortSec) and
started again. A watchdog kill outside the `up` faults is counted and reported: a false one
takes a healthy host's control plane down for seconds.

Targets: every fault healed within 10 s at p95 (the control plane's database within 20 s),
no acknowledged write lost, no 500 from the API.

    .venv/bin/python bench/chaos.py [--runs 10] [--faults supervisord,app,...]
                                    [--signal kill|stop|kill,stop] [--json FILE] [--report]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ISV,
    append_report,
    create_platform,
    machine_facts,
    md_table,
    other_tenantry_ups,
    setup_isv,
    short_tmp,
    start_plane,
    summary,
    wait_https,
    wait_job,
)
from tests.conftest import ControlPlaneProcess, alive, children_of  # noqa: E402
from tests.service_manager import NotifyManager, unit_seconds  # noqa: E402

from tenantry.core import leftovers  # noqa: E402

PLATFORMS = ("c1", "c2")
LIVELY = "bodyshop@1.0.1"


def _lively(root: Path) -> Path:
    """bodyshop 1.0.0 as 1.0.1 with `[health] restart_after = 3`: a hung app is restarted."""
    src = root / "bodyshop-1.0.0"
    dst = root / "bodyshop-1.0.1"
    shutil.copytree(src, dst)
    manifest = (dst / "tenantry.toml").read_text()
    assert 'version = "1.0.0"' in manifest and 'path = "/health"' in manifest
    manifest = manifest.replace('version = "1.0.0"', 'version = "1.0.1"').replace(
        'path = "/health"', 'path = "/health"\nrestart_after = 3')
    (dst / "tenantry.toml").write_text(manifest)
    return dst


# ---------------------------------------------------------------- processes


def _argv(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _pidfile(path: Path) -> int | None:
    try:
        pid = int(path.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if alive(pid) else None


@dataclass
class Plane:
    cp: ControlPlaneProcess
    ids: dict[str, str]  # platform name -> id
    hosts: dict[str, str]  # platform name -> hostname

    def up_pid(self) -> int | None:
        return self.cp.process.pid if self.cp.process and self.cp.process.poll() is None \
            else None

    def child(self, word: bytes) -> int | None:
        up = self.up_pid()
        if up is None:
            return None
        return next((pid for pid in children_of(up) if word in _argv(pid)), None)

    def supervisord(self) -> int | None:
        return _pidfile(self.cp.data_dir / "agent" / "services" / "supervisord.pid")

    def caddy(self) -> int | None:
        sup = self.supervisord()
        if sup is None:
            return None
        return next((pid for pid in children_of(sup) if b"caddy" in (_argv(pid) or [b""])[0]),
                    None)

    def app(self) -> int | None:
        sup = self.supervisord()
        want = str(self.cp.data_dir).encode()
        for pid in children_of(sup) if sup else []:
            if any(b"bodyshop.server" in a for a in _argv(pid)):
                try:
                    env = Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    continue
                if want in env and f"tp-{self.ids['c1']}".encode() in _owner(pid):
                    return pid
        return None

    def postmaster(self) -> int | None:
        return _pidfile(self.cp.data_dir / "agent" / "platforms" / self.ids["c1"] / "pgdata"
                        / "postmaster.pid")

    def store(self) -> int | None:
        return _pidfile(self.cp.data_dir / "controlplane" / "pgdata" / "postmaster.pid")

    def api_ok(self, host_online: bool = False) -> bool:
        """The API answers (and, if asked, shows a host online, as a new `up` does once its
        agent reported)."""
        try:
            with self.cp.api() as api:
                r = api.get("/hosts", timeout=2)
        except (httpx.HTTPError, FileNotFoundError):
            return False
        return r.status_code == 200 and (not host_online or any(
            h["state"] == "online" for h in r.json()))

    def serving(self) -> bool:
        for host in self.hosts.values():
            try:
                # a short wait: a probe stuck on a dead upstream must not hide the heal
                if self.cp.https(host, "/health", timeout=2).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
        return True


def _owner(pid: int) -> bytes:
    import pwd

    try:
        return pwd.getpwuid(Path(f"/proc/{pid}").stat().st_uid).pw_name.encode()
    except (OSError, KeyError):
        return b""


# ---------------------------------------------------------------- load and watchers


@dataclass
class Writer:
    """Creates repair jobs through the ingress; keeps the registrations acknowledged."""

    plane: Plane
    name: str
    acked: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    n: int = 0

    def run(self) -> None:
        host = self.plane.hosts[self.name]
        while not self.stop.is_set():
            self.n += 1
            reg = f"W{self.n}"
            try:
                r = self.plane.cp.https(host, "/api/jobs", "POST",
                                        json={"registration": reg, "customer": "chaos"})
                if r.status_code == 201:
                    self.acked.append(reg)
            except httpx.HTTPError:
                pass
            self.stop.wait(0.1)

    def missing(self) -> list[str]:
        host = self.plane.hosts[self.name]
        for _ in range(60):
            acked = list(self.acked)  # before the read: what is acknowledged after it may be
            try:                      # missing from it
                r = self.plane.cp.https(host, "/api/jobs")
                if r.status_code == 200:
                    present = {j["registration"] for j in r.json()}
                    return [a for a in acked if a not in present]
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name}: the jobs could not be read back")


@dataclass
class Poller:
    """Asks the API every 0.2 s; counts its answers by status (0: no answer)."""

    plane: Plane
    codes: dict[int, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with self.plane.cp.api() as api:
                    code = api.get("/hosts", timeout=3).status_code
            except (httpx.HTTPError, FileNotFoundError):
                code = 0
            self.codes[code] = self.codes.get(code, 0) + 1
            self.stop.wait(0.2)


@dataclass
class Systemd:
    """The service manager of `up` (see the module's docstring): restarts it whenever it
    exited, and ends it when its watchdog expired; counts the watchdog kills."""

    cp: ControlPlaneProcess
    manager: NotifyManager
    watchdog_kills: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        restart_after = unit_seconds("RestartSec")
        while not self.stop.wait(0.05):
            process = self.cp.process
            if process is None:
                continue
            if process.poll() is None and self.manager.expired():
                self.watchdog_kills += 1
                print(f"systemd: the watchdog of up (pid {process.pid}) expired; ending it",
                      flush=True)
                self.manager.expire(process)
            if process.poll() is not None and not self.stop.is_set():
                time.sleep(restart_after)
                self.manager.restarted()
                with contextlib.suppress(RuntimeError):  # not up in time: the trial says so
                    self.cp.start(timeout=120)


# ---------------------------------------------------------------- faults


@dataclass(frozen=True)
class Fault:
    name: str
    find: Callable[[Plane], int | None]  # the process to kill, found anew after the fault
    limit: float = 10.0
    freezable: bool = True
    how: str | None = None  # what is done, when it is not just the signal


def _app_port(pid: int) -> int:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(v for v in env if v.startswith(b"PORT=")).partition(b"=")[2])


def _steal_port(pid: int) -> socket.socket:
    """Kill the app and bind its port at once from this process, as another program that
    starts at the wrong moment would: supervisord's restart of the app then finds it taken."""
    port = _app_port(pid)
    os.kill(pid, signal.SIGKILL)
    thief = socket.socket()
    thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the app's TIME_WAITs
    deadline = time.monotonic() + 5
    while True:
        try:
            thief.bind(("127.0.0.1", port))
            break
        except OSError:
            if time.monotonic() > deadline:
                thief.close()
                raise RuntimeError(f"port {port} could not be taken") from None
            time.sleep(0.001)
    thief.listen(8)
    return thief


@contextlib.contextmanager
def own_disk(root: Path, size: str = "4G") -> Iterator[Path]:
    """A small ext4 of the bench's own (a loop-mounted image), for the control plane to run
    on, so that the disk fault fills it and not this machine's disk."""
    img, mnt = root / "disk.img", root / "fs"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", size, str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    done = subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the disk fault needs a loop mount (root): {done.stderr.strip()}")
    os.chmod(mnt, 0o755)  # noqa: S103 - the platforms' users traverse it, like /tmp
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        img.unlink(missing_ok=True)


def _host_disk(plane: Plane) -> str:
    with plane.cp.api() as api:
        return str(next(h["disk"] for h in api.get("/hosts", timeout=3).json()
                        if h["name"] == "local"))


def _disk_trial(plane: Plane, timeout: float = 120) -> float:
    """Another program fills the data disk to half the agent's reserve: seconds until the
    agent released the reserve, the host shows the disk LOW, and both platforms serve.
    Then the ballast goes, and the trial waits for the reserve to be held again."""
    data = plane.cp.data_dir
    reserve = data / "agent" / "disk.reserve"
    held = reserve.stat().st_blocks * 512
    st = os.statvfs(data)
    ballast = data.parent / "ballast"
    t0 = time.monotonic()
    fd = os.open(ballast, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        os.posix_fallocate(fd, 0, st.f_bavail * st.f_frsize - held // 2)
    finally:
        os.close(fd)
    try:
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if not reserve.exists() and _host_disk(plane).startswith("LOW") and \
                    plane.serving():
                took = time.monotonic() - t0
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"disk: the reserve not released and told within {timeout:.0f} s")
    finally:
        ballast.unlink()
    deadline = time.monotonic() + timeout
    while not (reserve.exists() and not _host_disk(plane).startswith("LOW")):
        if time.monotonic() > deadline:
            raise RuntimeError("disk: the reserve not held again after the ballast went")
        time.sleep(0.2)
    kinds = [e["kind"] for e in plane.cp.cli_json("events", "--limit", "1000")
             if e["kind"] in ("DISK_LOW", "DISK_OK")]
    if kinds[-2:] != ["DISK_LOW", "DISK_OK"]:
        raise RuntimeError(f"disk: the events told {kinds[-4:]}, not DISK_LOW then DISK_OK")
    return took


def _tree(plane: Plane) -> list[int]:
    """`up`, its children, supervisord and everything of the data dir."""
    up = plane.up_pid()
    return ([up, *children_of(up)] if up is not None else []) + \
        [x.pid for x in leftovers.find(plane.cp.data_dir)]


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


FAULTS = (
    Fault("supervisord", Plane.supervisord),
    Fault("caddy", Plane.caddy),
    Fault("agent", lambda p: p.child(b"agent")),
    Fault("app", Plane.app),
    Fault("postmaster", Plane.postmaster),
    Fault("store", Plane.store, limit=20.0),
    Fault("api", lambda p: p.child(b"serve-api")),
    Fault("worker", lambda p: p.child(b"serve-worker")),
    Fault("port", Plane.app, freezable=False, how="SIGKILL, port bound"),
    Fault("disk", lambda p: 0, freezable=False, how="filled"),
    Fault("up", Plane.up_pid),
    Fault("up-tree", Plane.up_pid),
)


def trial(plane: Plane, fault: Fault, freeze: bool = False, timeout: float = 120) -> float:
    """Seconds from the kill (or the freeze) until the part is back as a new process and
    both platforms serve."""
    if fault.name == "disk":
        return _disk_trial(plane, timeout)
    old = fault.find(plane)
    if old is None:
        raise RuntimeError(f"{fault.name}: no process to kill")
    t0 = time.monotonic()
    thief: socket.socket | None = None
    frozen: list[int] = []
    try:
        if freeze:
            frozen = _tree(plane) if fault.name == "up-tree" else [old]
            _signal_all(frozen, signal.SIGSTOP)
        elif fault.name == "port":
            thief = _steal_port(old)
        elif fault.name == "up-tree":
            _signal_all(_tree(plane), signal.SIGKILL)
        else:
            os.kill(old, signal.SIGKILL)
        # `up` itself is started again by the bench's systemd (Systemd.run)
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            new = fault.find(plane)
            if new is not None and new != old and plane.serving() and \
                    (fault.name not in ("store", "api", "up", "up-tree") or
                     plane.api_ok(host_online=fault.name.startswith("up"))):
                return time.monotonic() - t0
            time.sleep(0.1)
        raise RuntimeError(f"{fault.name}: not healed within {timeout:.0f} s")
    finally:
        if thief is not None:  # healed around it; the port may go back to the pool
            thief.close()
        # not healed: let it go on, so that the plane stops cleanly (a killed one is gone)
        _signal_all(frozen, signal.SIGCONT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--faults", default=",".join(f.name for f in FAULTS))
    ap.add_argument("--signal", default="kill",
                    help="kill (SIGKILL each part), stop (SIGSTOP: freeze it), or kill,stop")
    ap.add_argument("--json", type=Path, help="write every trial and the summary here")
    ap.add_argument("--report", action="store_true", help="append to docs/benchmarks.md")
    ap.add_argument("--keep", action="store_true", help="keep the data dir and its logs")
    args = ap.parse_args()
    signals = args.signal.split(",")
    if not signals or not set(signals) <= {"kill", "stop"}:
        ap.error("--signal is kill, stop or kill,stop")
    names = args.faults.split(",")
    unknown = set(names) - {f.name for f in FAULTS}
    if unknown or args.runs < 1:
        ap.error(f"--faults: unknown {', '.join(sorted(unknown))}; known: "
                 + ", ".join(f.name for f in FAULTS))
    plan = [(sig, f) for sig in signals for f in FAULTS
            if f.name in names and (sig == "kill" or f.freezable)]
    if not plan:
        ap.error("nothing to do: `port` and `disk` are not frozen (--signal stop)")
    # SIGTERM ends the run like Ctrl-C: the plane is stopped and its directory removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    others = other_tenantry_ups()
    if others:
        print("warning: other tenantry processes run:", *others, sep="\n  ")

    root = short_tmp("tnb-chaos-")
    mounts = contextlib.ExitStack()  # the disk fault's own filesystem, unmounted at the end
    home = mounts.enter_context(own_disk(root)) if any(f.name == "disk" for _, f in plan) \
        else root
    manager = NotifyManager(root / "notify.sock")
    cp = start_plane(home, env=manager.env)
    systemd = Systemd(cp, manager)
    threading.Thread(target=systemd.run, name="systemd", daemon=True).start()
    kills: dict[tuple[str, str], int] = {}
    writers: list[Writer] = []
    poller: Poller | None = None
    results: dict[tuple[str, str], list[float]] = {}
    lost: dict[tuple[str, str], int] = {}
    codes: dict[tuple[str, str], dict[int, int]] = {}
    left: list[str] = []
    try:
        setup_isv(cp, root)
        cp.cli("app", "release", ISV, str(_lively(root)))
        made = [create_platform(cp, name, LIVELY) for name in PLATFORMS]
        for m in made:
            wait_job(cp, m["job_id"])
            wait_https(cp, m["host"])
        plane = Plane(cp, {m["name"]: m["id"] for m in made},
                      {m["name"]: m["host"] for m in made})
        writers = [Writer(plane, name) for name in PLATFORMS]
        for w in writers:
            threading.Thread(target=w.run, daemon=True).start()
        for sig, fault in plan:
            key = (sig, fault.name)
            poller = Poller(plane)
            threading.Thread(target=poller.run, daemon=True).start()
            kills_before = systemd.watchdog_kills
            for i in range(args.runs):
                took = trial(plane, fault, sig == "stop")
                time.sleep(2)  # the writers go on a moment on the healed system
                gone = sum(len(w.missing()) for w in writers)
                results.setdefault(key, []).append(took)
                lost[key] = lost.get(key, 0) + gone
                print(f"{fault.name} ({sig}) #{i + 1}: healed in {took:.2f} s, {gone} "
                      "acknowledged writes missing", flush=True)
                time.sleep(3)  # settle before the next fault
            poller.stop.set()
            codes[key] = dict(poller.codes)
            kills[key] = systemd.watchdog_kills - kills_before
        for w in writers:
            w.stop.set()
        systemd.stop.set()
        cp.stop()  # a clean stop: nothing of the data dir may run after it
        found = leftovers.find(cp.data_dir)
        if found:  # some may be on their way out still
            time.sleep(5)
            found = leftovers.find(cp.data_dir)
        left = [str(x) for x in found]
    finally:
        for w in writers:
            w.stop.set()
        if poller is not None:
            poller.stop.set()
        systemd.stop.set()
        cp.stop()
        cp.cleanup()
        manager.close()
        mounts.close()
        if args.keep:
            print(f"kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    rows = []
    for sig, fault in plan:
        key = (sig, fault.name)
        s = summary(results[key])
        answers = codes.get(key, {})
        done = fault.how or {"kill": "SIGKILL", "stop": "SIGSTOP"}[sig]
        rows.append([fault.name, done, s["n"], f"{s['p50']:.2f}", f"{s['p95']:.2f}",
                     f"{s['max']:.2f}", f"{fault.limit:g}",
                     "yes" if s["p95"] <= fault.limit else "NO", lost.get(key, 0),
                     answers.get(500, 0),
                     ", ".join(f"{k or 'none'}: {v}" for k, v in sorted(answers.items())),
                     kills.get(key, 0)])
    acked = sum(len(w.acked) for w in writers)
    body = ("Each part killed (SIGKILL) or frozen (SIGSTOP), one at a time. Two bodyshop "
            f"platforms of ISV {ISV} on one host; {acked} repair jobs acknowledged in all by "
            "the writers (one per platform, every 100 ms). Healed = the part back as a new "
            "process and both platforms answering HTTPS 200 through the ingress (for the "
            "store, the API and `up`, the API answering too). `up` runs under "
            "the bench's stand-in for systemd with the shipped unit (deploy/systemd/"
            f"tenantry.service: WatchdogSec={manager.watchdog_sec:g}, Restart=always, "
            "KillMode=process), which starts it again when it exits and ends it when its "
            "watchdog expires; `watchdog kills` counts those ends during the fault's runs. API "
            "answers: GET /api/v1/hosts every 0.2 s during the fault's runs. After the clean "
            f"stop, {len(left)} process(es) of the data dir still ran.\n\n" + md_table(
                ["fault", "done", "runs", "p50 s", "p95 s", "max s", "target s", "met",
                 "acked writes lost", "API 500s", "API answers", "watchdog kills"], rows))
    print()
    print(body)
    for line in left:
        print("  left running:", line)
    if args.json:
        args.json.write_text(json.dumps({
            "acked": acked, "left_after_stop": left,
            "faults": [{"fault": f.name, "signal": sig, "seconds": results[(sig, f.name)],
                        "limit": f.limit, "lost": lost.get((sig, f.name), 0),
                        "api_answers": {str(k): v for k, v in codes.get((sig, f.name),
                                                                        {}).items()},
                        "watchdog_kills": kills.get((sig, f.name), 0)}
                       for sig, f in plan]}, indent=1))
    if args.report:
        append_report("Fault injection (bench/chaos.py)", machine_facts(), body)
    return 0 if not left and all(r[7] == "yes" and r[8] == 0 and r[9] == 0
                                 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
