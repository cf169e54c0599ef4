"""Shared fixtures: a real `tenantry up` (PostgreSQL, supervisord, Caddy, agent) per session."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
TENANTRY = [sys.executable, "-m", "tenantry.cli.run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def short_tmp(prefix: str) -> Path:
    """Under /tmp, short (unix sockets) and traversable by the platforms' own Unix users."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o711)
    return path


_BLOCKS = Path(tempfile.gettempdir()) / "tenantry-test-port-blocks"


PORT_BLOCK = 400  # platform ports in one block


def port_block(size: int = PORT_BLOCK, blocks: int = 1) -> tuple[int, int]:
    """A block of platform ports no other test control plane on this machine is using
    (`blocks` of them in a row, for a benchmark of many platforms: two ports each).

    Held by an flock until `release_port_block` (a plane's cleanup calls it) or the end of
    this process, so concurrent test runs (and the control planes inside one run) never hand
    out the same port twice.
    """
    _BLOCKS.mkdir(exist_ok=True)
    for i in range(25 - blocks + 1):
        held = []
        for j in range(i, i + blocks):
            fh = (_BLOCKS / f"{j}.lock").open("w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                break
            held.append(fh)
        if len(held) < blocks:
            for fh in held:
                fh.close()
            continue
        low = 20000 + i * size
        _HELD[low] = held
        return low, low + blocks * size - 1
    raise RuntimeError("no free port block for a test control plane")


_HELD: dict[int, list[Any]] = {}


def release_port_block(block: tuple[int, int]) -> None:
    """Give a block back once nothing of the plane or agent that used it runs any more."""
    for fh in _HELD.pop(block[0], []):
        fh.close()


@dataclass
class ControlPlaneProcess:
    data_dir: Path
    listen_port: int
    ingress_port: int
    process: subprocess.Popen[bytes] | None = None
    port_range: tuple[int, int] = field(default_factory=port_block)
    extra_env: dict[str, str] = field(default_factory=dict)  # TENANTRY_SMTP_URL, say
    log: Path = field(init=False)
    _admin: PortalAccount | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.log = self.data_dir.parent / f"{self.data_dir.name}-up.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("TENANTRY_URL", "TENANTRY_TOKEN")}
        env["TENANTRY_DATA_DIR"] = str(self.data_dir)
        return env | self.extra_env

    @property
    def token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    def start(self, *extra: str, timeout: float = 60) -> None:
        out = self.log.open("ab")
        self.process = subprocess.Popen(
            [*TENANTRY, "up", "--listen", f"127.0.0.1:{self.listen_port}",
             "--ingress-port", str(self.ingress_port),
             "--port-range", "{}-{}".format(*self.port_range), *extra],
            stdout=out, stderr=subprocess.STDOUT, env=self.env, stdin=subprocess.DEVNULL,
            start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tenantry up exited: {self.log.read_text()[-2000:]}")
            try:
                hosts = self.api().get("/hosts")
                if hosts.status_code == 200 and any(h["state"] == "online"
                                                    for h in hosts.json()):
                    return
            except (httpx.HTTPError, FileNotFoundError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"tenantry up did not come up: {self.log.read_text()[-2000:]}")

    def stop(self, timeout: float = 90) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def admin(self) -> PortalAccount:
        """The bootstrap admin's portal account (first-login set-up done on first use)."""
        if self._admin is None:
            self._admin = PortalAccount(
                "admin", (self.data_dir / "admin-password").read_text().strip())
            with httpx.Client(base_url=self.url, timeout=30) as client:
                assert portal_login(client, self._admin).status_code == 303
        return self._admin

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}/api/v1", timeout=30,
                            headers={"Authorization": f"Bearer {self.token}"})

    def cli(self, *args: str, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*TENANTRY, *args], capture_output=True, text=True, env=self.env,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise AssertionError(f"tenantry {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def ingress_client(self) -> httpx.Client:
        """A client that trusts the plane's CA, for `https(..., client=)`: one for many
        requests makes its TLS context once and keeps its connection."""
        ctx = ssl.create_default_context(cafile=str(self.data_dir / "ca.pem"))
        return httpx.Client(verify=ctx, timeout=10)

    def https(self, hostname: str, path: str = "/", method: str = "GET",
              headers: dict[str, str] | None = None, client: httpx.Client | None = None,
              **kwargs: Any) -> httpx.Response:
        """A request through the ingress, with the name sent as SNI and Host, CA-verified
        (on `client` when given, else on a client of its own)."""
        if client is None:
            with self.ingress_client() as own:
                return self.https(hostname, path, method, headers, own, **kwargs)
        return client.request(method, f"https://127.0.0.1:{self.ingress_port}{path}",
                              headers={**(headers or {}), "Host": hostname},
                              extensions={"sni_hostname": hostname}, **kwargs)

    def cleanup(self) -> None:
        """Whatever a failed test left: the platform services' supervisord and the store."""
        self.stop()
        pidfile = self.data_dir / "agent" / "services" / "supervisord.pid"
        if pidfile.exists():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
                time.sleep(3)
        pg = self.data_dir / "controlplane" / "pgdata" / "postmaster.pid"
        if pg.exists():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pg.read_text().splitlines()[0]), signal.SIGINT)
        if self.data_dir.exists():  # and anything else of the data dir a crash test left
            from tenantry.core import cgroup, leftovers

            leftovers.stop(leftovers.find(self.data_dir), grace=10)
            for group in cgroup.recorded(self.data_dir):  # the host's cgroup, once empty
                cgroup.remove(group)
            remove_platform_accounts(self.data_dir / "agent" / "platforms")
        # the agent's sockets, under /tmp: a clean stop removes them, a killed agent not
        from tenantry.agent.converge import HostPaths

        shutil.rmtree(HostPaths(self.data_dir / "agent").sockets, ignore_errors=True)
        release_port_block(self.port_range)


def remove_platform_accounts(platforms_dir: Path) -> None:
    """The Unix users of the platforms under an agent's platforms dir, and the ISV groups they
    leave empty: a host has under 900 system ids, and a suite that left its accounts behind
    ran out of them ("useradd: Can't get unique GID") a third of the way through on CI."""
    from tenantry.agent import unixusers

    for pdir in platforms_dir.glob("p*") if platforms_dir.is_dir() else ():
        with contextlib.suppress(Exception):
            for group in unixusers.remove_user(f"tp-{pdir.name}"):
                if group.startswith("tg-"):
                    unixusers.remove_group_if_empty(group)


def tenantry_accounts() -> set[tuple[str, str]]:
    """The platform users and ISV groups on this host, as ("user" | "group", name), and the
    data dirs' cgroups ("cgroup", path)."""
    import grp
    import pwd

    from tenantry.core import cgroup

    root = cgroup.hierarchy()
    groups = {("cgroup", str(g)) for g in root.glob("tenantry-*")} if root else set()
    return ({("user", u.pw_name) for u in pwd.getpwall() if u.pw_name.startswith("tp-")}
            | {("group", g.gr_name) for g in grp.getgrall() if g.gr_name.startswith("tg-")}
            | groups)


@pytest.fixture(scope="session", autouse=True)
def no_accounts_outlive_the_suite() -> Iterator[None]:
    """What the suite's platforms left on the host (a test that made an agent of its own, or
    a killed run): their Unix accounts, so that the next run on this machine has ids to use,
    and their data dirs' empty cgroups."""
    before = tenantry_accounts()
    yield
    from tenantry.agent import unixusers
    from tenantry.core import cgroup

    left = sorted(tenantry_accounts() - before, key=lambda x: x[0] != "user")
    for kind, name in left:  # users first: a group goes once its members have
        with contextlib.suppress(Exception):
            if kind == "user":
                unixusers.remove_user(name)
            elif kind == "group":
                unixusers.remove_group_if_empty(name)
            else:
                cgroup.remove(Path(name))  # an empty one; one with processes stays
    if left:
        print(f"\nconftest: removed {len(left)} platform accounts and cgroups the tests left")


def _stale_socket_dir(path: Path) -> bool:
    """An agent's socket dir (HostPaths.sockets) that nothing uses: it holds only dirs,
    sockets that no process listens on, and their lock files (PostgreSQL's)."""
    for entry in path.rglob("*"):
        if entry.is_dir() or (entry.name.endswith(".lock") and entry.is_file()):
            continue
        if not entry.is_socket():
            return False
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(entry))
            except OSError:
                continue
            return False
    return True


@pytest.fixture(scope="session", autouse=True)
def no_socket_dirs_outlive_the_suite() -> Iterator[None]:
    """The socket dirs under /tmp (`tnt-<tag>`) of the agents the tests ran: an agent removes
    its own only when it stops every service on exit, and a test's agent often does not. One
    that was there before the suite, or that something still listens in, is left alone."""
    before = set(Path(tempfile.gettempdir()).glob("tnt-*"))
    yield
    left = [d for d in set(Path(tempfile.gettempdir()).glob("tnt-*")) - before
            if d.is_dir() and _stale_socket_dir(d)]
    for d in left:
        shutil.rmtree(d, ignore_errors=True)
    if left:
        print(f"\nconftest: removed {len(left)} agents' socket dirs the tests left")


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def httpx_clients_made(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Client]:
    """Every httpx.Client made while the test runs, in order (a client costs a TLS context,
    ~35 ms of CPU: hot paths must not make one per call)."""
    made: list[httpx.Client] = []
    init = httpx.Client.__init__

    def counting(self: httpx.Client, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(httpx.Client, "__init__", counting)
    return made


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


@dataclass
class PortalAccount:
    username: str
    password: str
    totp_secret: str | None = None

    def code(self) -> str:
        from tenantry.access import totp

        assert self.totp_secret is not None
        return totp.code_at(self.totp_secret, time.time())


def portal_login(client: httpx.Client, account: PortalAccount) -> httpx.Response:
    """Log in through the form; on a first login, choose a password and set up TOTP.

    `account` is updated with the new password and the TOTP seed.
    """
    token = csrf_of(client.get("/login").text)
    answer = client.post("/login", data={
        "username": account.username, "password": account.password, "csrf": token,
        "next": "/", "code": account.code() if account.totp_secret else ""})
    if answer.status_code != 303:
        return answer
    setup = client.get("/account/setup")
    if 'id="password-form"' in setup.text and "Before you go on" in setup.text:
        new = f"{account.password}-{secrets.token_hex(4)}"
        done = client.post("/account/password", data={
            "current": account.password, "new": new, "csrf": csrf_of(setup.text)})
        assert done.status_code == 303, done.text
        account.password = new
        setup = client.get("/account/setup")
    if 'id="totp-form"' in setup.text and "Before you go on" in setup.text:
        secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', setup.text)
        assert secret, setup.text
        account.totp_secret = secret.group(1)
        done = client.post("/account/totp", data={"code": account.code(),
                                                   "csrf": csrf_of(setup.text)})
        assert done.status_code == 200 and "Recovery codes" in done.text, done.text
    return answer


@contextlib.contextmanager
def store_runtime(prefix: str) -> Iterator[Any]:
    """Just the control-plane store (a private PostgreSQL, migrated) and a runtime on it."""
    from tenantry.core.config import load_settings
    from tenantry.core.migrate import upgrade
    from tenantry.core.pgserver import ControlPlaneDatabase
    from tenantry.core.runtime import make_runtime

    root = short_tmp(prefix)
    data_dir = root / "data"
    data_dir.mkdir()
    db = ControlPlaneDatabase(data_dir)
    db.start()
    try:
        runtime = make_runtime(load_settings(data_dir=data_dir), pool_size=2)
        upgrade(runtime.engine)
        yield runtime
        runtime.engine.dispose()
    finally:
        db.stop()
        shutil.rmtree(root, ignore_errors=True)


def beside_worker(runtime: Any, body: Callable[[], Awaitable[T]], *, concurrency: int) -> T:
    """`body`'s result, awaited while a real job worker (`run_worker`) runs in this process;
    the worker is then stopped as `up` stops it (SIGTERM to this process, which the worker
    handles), whatever `body` did. `body` starts once the worker's handler is in place: a
    SIGTERM before that would end the test run."""
    import asyncio

    from tenantry.cli.worker import run_worker
    from tenantry.core import jobs

    async def run() -> T:
        before = signal.getsignal(signal.SIGTERM)
        worker = asyncio.create_task(run_worker(runtime, concurrency=concurrency))
        try:
            deadline = time.monotonic() + 30
            while signal.getsignal(signal.SIGTERM) == before and not worker.done():
                assert time.monotonic() < deadline, "the worker did not take SIGTERM"
                await asyncio.sleep(0.05)
            return await body()
        finally:
            if not worker.done():
                os.kill(os.getpid(), signal.SIGTERM)  # the worker's own stop
            await worker

    try:
        return asyncio.run(run())
    finally:
        jobs.stopping.clear()


@contextlib.contextmanager
def rolled_back(runtime: Any) -> Iterator[Any]:
    """A session of `runtime` inside a transaction that is rolled back afterwards: use cases
    commit as usual (to a savepoint), and the next test finds the store as it was."""
    from sqlalchemy.orm import Session

    from tenantry.core.runtime import RUNTIME_KEY

    connection = runtime.engine.connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint",
                      expire_on_commit=False, info={RUNTIME_KEY: runtime})
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()


def build_bodyshop(version: str, out: Path) -> Path:
    target = out / f"bodyshop-{version}"
    if not target.exists():
        subprocess.run([sys.executable, str(REPO / "examples" / "bodyshop" / "build.py"),
                        version, str(target)], check=True, capture_output=True)
    return target


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bundles")
    return {v: build_bodyshop(v, out) for v in ("1.0.0", "1.1.0")}


@contextlib.contextmanager
def running_plane(*extra: str, env: dict[str, str] | None = None
                  ) -> Iterator[ControlPlaneProcess]:
    """A `tenantry up` in a fresh data dir, stopped and removed afterwards, even on failure."""
    root = short_tmp("tnt-")
    cp = ControlPlaneProcess(data_dir=root / "data", listen_port=free_port(),
                             ingress_port=free_port(), extra_env=dict(env or {}))
    try:
        cp.start(*extra)
        yield cp
    finally:
        cp.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def plane() -> Iterator[ControlPlaneProcess]:
    """One running control plane for the session (tests use their own ISVs)."""
    with running_plane() as cp:
        yield cp


def make_isv(plane: ControlPlaneProcess, bundles: dict[str, Path]) -> str:
    """A fresh ISV with bodyshop 1.0.0 and 1.1.0 released and tenants t1..t3."""
    name = f"isv-{secrets.token_hex(4)}"
    plane.cli("isv", "create", name)
    for version in ("1.0.0", "1.1.0"):
        plane.cli("app", "release", name, str(bundles[version]))
    for tenant in ("t1", "t2", "t3"):
        plane.cli("tenant", "create", name, tenant)
    return name


@pytest.fixture
def isv(plane: ControlPlaneProcess, bundles: dict[str, Path]) -> str:
    return make_isv(plane, bundles)


@pytest.fixture
def own_plane() -> Iterator[ControlPlaneProcess]:
    """A control plane of the test's own, for tests that kill it or change it for all."""
    with running_plane() as cp:
        yield cp


def person_token(plane: ControlPlaneProcess, role: str, isv: str | None = None,
                 ) -> tuple[str, str]:
    """A new user of `role`, logged in through the portal once (password, TOTP), and an API
    token from /auth/login: (username, bearer token)."""
    username = f"{role.split('-')[1][:2]}{secrets.token_hex(3)}"
    made = plane.cli_json("user", "create", username, "--role", role,
                          *(("--isv", isv) if isv else ()))
    account = PortalAccount(username, made["password"])
    with httpx.Client(base_url=plane.url, timeout=30) as client:
        assert portal_login(client, account).status_code == 303
    with httpx.Client(base_url=f"{plane.url}/api/v1", timeout=30) as client:
        answer = client.post("/auth/login", json={
            "username": username, "password": account.password,
            "code": account.code() if account.totp_secret else None})
        assert answer.status_code == 201, answer.text
        return username, str(answer.json()["token"])


def api_as(plane: ControlPlaneProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{plane.url}/api/v1", timeout=30,
                        headers={"Authorization": f"Bearer {token}"})


def processes_mentioning(text: str) -> list[int]:
    """Processes whose command line mentions `text` (a data dir, say)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if text in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                found.append(int(pid))
        except OSError:
            continue
    return found


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry))
    return found


def alive(pid: int | None) -> bool:
    """`pid` runs (a zombie does not)."""
    if pid is None:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def left_running(data_dir: Path) -> list[str]:
    """What of a data dir still runs: processes naming it, and the apps and children that
    name nothing but were started by its supervisord."""
    from tenantry.core import leftovers

    found = {x.pid: x.describe() for x in leftovers.find(data_dir)}
    for pid in processes_mentioning(str(data_dir)):
        if pid != os.getpid():
            found.setdefault(pid, f"{pid} (mentions the data dir)")
    return sorted(found.values())


def curl_health(cp: ControlPlaneProcess, hostname: str) -> bool:
    """As the README says: curl, the platform's name, and the CA from the data dir."""
    done = subprocess.run(
        ["curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}",
         "--cacert", str(cp.data_dir / "ca.pem"),
         f"https://{hostname}:{cp.ingress_port}/health"],
        capture_output=True, text=True)
    return done.stdout == "200"


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               every: float = 0.2) -> float:
    """Poll until `predicate()` is truthy; returns the seconds it took, fails after timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
