"""The private control-plane PostgreSQL that `tenantry up` runs when no database URL is given.

It lives in `DATA_DIR/controlplane`, listens only on a Unix socket in that directory (no
TCP port to collide with), and runs as the unprivileged user `tenantry` when we are root,
since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import struct
import subprocess
from pathlib import Path

from tenantry.core.errors import Unavailable

SERVICE_USER = "tenantry"
# The store's connections with one API process (its 40 kept and 10 more), the worker's and
# the CLI's; `up` adds API_CONNECTIONS for each further API process.
MAX_CONNECTIONS = 100
API_CONNECTIONS = 50


def pg_bin(name: str) -> str:
    """Find a PostgreSQL server binary; Debian keeps them out of PATH."""
    base = Path("/usr/lib/postgresql")
    if base.is_dir():
        for version in sorted(base.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0,
                              reverse=True):
            candidate = version / "bin" / name
            if candidate.exists():
                return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise Unavailable(f"PostgreSQL's {name} is missing: install the Debian package postgresql")


def service_user() -> str | None:
    """The Unix user our databases run as: ourselves, or `tenantry` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        SERVICE_USER], check=True, capture_output=True)
    return SERVICE_USER


def _as(user: str | None, argv: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise Unavailable(f"{what} failed: {' | '.join(tail)}")


class ControlPlaneDatabase:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "controlplane"
        self.pgdata = self.root / "pgdata"
        self.socket_dir = self.root / "run"
        self.log_file = self.root / "postgres.log"
        self.user = service_user()

    @property
    def url(self) -> str:
        return f"postgresql://tenantry@/tenantry?host={self.socket_dir}"

    def _ensure_traversable(self) -> None:
        """The service user must be able to walk down to the cluster directory."""
        if self.user is None:
            return
        entry = pwd.getpwnam(self.user)
        for parent in [self.root, *self.root.parents]:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                if parent in (self.root, self.root.parent):
                    parent.chmod(mode | 0o711 if parent == self.root else mode | 0o001)
                else:
                    raise Unavailable(
                        f"{parent} is not traversable by the Unix user {self.user!r}; "
                        "choose a data dir outside it (e.g. /var/lib/tenantry)")
        os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def initialize(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._ensure_traversable()
        if (self.pgdata / "PG_VERSION").exists():
            return
        if self.pgdata.exists():  # a half-made cluster from a killed first start
            shutil.rmtree(self.pgdata)
        for d in (self.socket_dir,):
            d.mkdir(exist_ok=True)
            if self.user:
                entry = pwd.getpwnam(self.user)
                os.chown(d, entry.pw_uid, entry.pw_gid)
            d.chmod(0o700)
        tmp = self.root / "pgdata.init"
        if tmp.exists():
            shutil.rmtree(tmp)
        _run(_as(self.user, [pg_bin("initdb"), "-D", str(tmp), "-U", "tenantry", "-A", "peer",
                             "--no-sync", "-E", "UTF8", "--locale", "C"]), "initdb")
        (tmp / "postgresql.auto.conf").write_text(
            "listen_addresses = ''\n"
            f"unix_socket_directories = '{self.socket_dir}'\n"
            f"max_connections = {MAX_CONNECTIONS}\n"
            "shared_buffers = 64MB\n"
            "fsync = on\n"
        )
        hba = "local all tenantry peer map=tenantry\n"
        (tmp / "pg_hba.conf").write_text(hba)
        me = pwd.getpwuid(os.geteuid()).pw_name
        (tmp / "pg_ident.conf").write_text(
            f"tenantry {me} tenantry\ntenantry {self.user or me} tenantry\n")
        if self.user:
            entry = pwd.getpwnam(self.user)
            for path in (tmp / "postgresql.auto.conf", tmp / "pg_hba.conf", tmp / "pg_ident.conf"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        tmp.rename(self.pgdata)

    def postmaster_pid(self) -> int | None:
        """The pid in postmaster.pid while that process lives and is PostgreSQL. pg_ctl
        asks only kill(pid, 0), which a killed postmaster that its parent has not reaped yet
        (a zombie), or another process that got its pid, also answers."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            named = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        return pid if state != "Z" and b"postgres" in named else None

    def responds(self, timeout: int = 2) -> bool:
        """It answers a connection attempt within `timeout` seconds, even if only to say it
        is starting or shutting down: False means nobody is there or it is frozen."""
        # By hand, not libpq's PQping: psycopg's binary build holds the GIL through that
        # call, so a frozen store stopped every other thread of `up` for the whole timeout
        # (its service manager's watchdog pings among them). A socket wait releases it.
        startup = struct.pack("!I", 196608) + b"user\0tenantry\0database\0postgres\0\0"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(str(self.socket_dir / ".s.PGSQL.5432"))
                sock.sendall(struct.pack("!I", len(startup) + 4) + startup)
                answered = bool(sock.recv(1))  # an authentication request, or an error
                with contextlib.suppress(OSError):
                    sock.sendall(b"X\0\0\0\4")  # Terminate, as libpq ends a ping
                return answered
            except OSError:  # nobody there (refused, no socket) or no answer in time
                return False

    def is_running(self) -> bool:
        if self.postmaster_pid() is None:
            return False
        done = subprocess.run(_as(self.user, [pg_bin("pg_ctl"), "status", "-D", str(self.pgdata)]),
                              capture_output=True)
        return done.returncode == 0

    def start(self, max_connections: int = MAX_CONNECTIONS) -> None:
        """Start the cluster, or adopt it when a killed `up` left it running (with the
        connections it was started with)."""
        self.initialize()
        if self.is_running():
            return
        # A postmaster killed outright leaves its lock files; with its pid dead (or a zombie,
        # or reused) PostgreSQL would refuse to start ("Is another postmaster running?").
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        for lock in self.socket_dir.glob(".s.PGSQL.*.lock"):
            lock.unlink(missing_ok=True)
        if self.user:
            self.log_file.touch()
            entry = pwd.getpwnam(self.user)
            os.chown(self.log_file, entry.pw_uid, entry.pw_gid)
        _run(_as(self.user, [pg_bin("pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.pgdata),
                             "-l", str(self.log_file),
                             "-o", f"-c max_connections={max_connections}"]),
             "starting the control-plane PostgreSQL")
        subprocess.run(_as(self.user, [pg_bin("createdb"), "-h", str(self.socket_dir),
                                       "-U", "tenantry", "tenantry"]), capture_output=True)

    def stop(self) -> None:
        if self.pgdata.exists() and self.is_running():
            _run(_as(self.user, [pg_bin("pg_ctl"), "stop", "-m", "fast", "-w", "-D",
                                 str(self.pgdata)]), "stopping the control-plane PostgreSQL")
