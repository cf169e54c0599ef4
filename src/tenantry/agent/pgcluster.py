"""One PostgreSQL cluster per platform: own data dir, port, Unix user and tuned config.

Provisioning must be fast, so a cluster is a copy (`cp -a`) of a template initdb'd once per
host. Every cluster gets `tenantry.conf` (included from postgresql.conf), `pg_hba.conf` and
`pg_ident.conf` rewritten on each init: only the superuser `postgres` over the Unix socket
(root and the owner may act as it), every other role over loopback TCP with SCRAM.

Passwords never reach argv, logs or error texts: roles get a SCRAM verifier computed here,
so not even the SQL statement the server might log holds the password.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import getpass
import hashlib
import hmac
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from tenantry.agent import unixusers
from tenantry.agent.services import ProgramSpec
from tenantry.core.errors import InvalidInput, Unavailable
from tenantry.monitoring import stack

log = logging.getLogger(__name__)

SUPERUSER = "postgres"
TEMPLATE_USER = "tenantry-pginit"  # neutral owner of the per-host template when root
_COMMON = {
    "max_parallel_workers_per_gather": "0",
    "huge_pages": "off",
}
# A small cluster sits idle most of its life, and a host holds hundreds: its background
# processes wake less often (bench/pg_idle.py measured the choice; docs/benchmarks.md). The
# autovacuum launcher starts a worker for each database every naptime, so it wakes least;
# the background writer and WAL writer hibernate when idle anyway and sleep up to their
# maximum; an idle server skips its timed checkpoints. Commits stay synchronous and WAL
# archiving keeps archive_timeout, so no durability or RPO moves.
IDLE = {
    "autovacuum_naptime": "300",  # s
    "bgwriter_delay": "10000",  # ms, the maximum
    "wal_writer_delay": "10000",  # ms, the maximum
    "checkpoint_timeout": "900",  # s
}
RELOADABLE = frozenset(IDLE)  # settings a reload applies (PostgreSQL's "sighup" context)
SIZES: dict[str, dict[str, str]] = {
    # idle RSS of the whole "s" cluster stays around 40 MiB
    "s": IDLE | {
        "shared_buffers": "16MB",
        "work_mem": "2MB",
        "maintenance_work_mem": "16MB",
        "effective_cache_size": "64MB",
        "max_connections": "20",
        "max_worker_processes": "2",
        "max_parallel_workers": "0",
        "max_parallel_maintenance_workers": "0",
        "autovacuum_max_workers": "1",
        "max_logical_replication_workers": "0",  # no launcher process either
        "max_sync_workers_per_subscription": "0",
        "wal_buffers": "1MB",
        "max_wal_size": "256MB",
        "min_wal_size": "32MB",
    },
    "m": {
        "shared_buffers": "128MB",
        "work_mem": "4MB",
        "maintenance_work_mem": "64MB",
        "effective_cache_size": "512MB",
        "max_connections": "50",
        "max_worker_processes": "4",
        "max_parallel_workers": "2",
        "max_parallel_maintenance_workers": "1",
        "autovacuum_max_workers": "2",
        "wal_buffers": "4MB",
        "max_wal_size": "1GB",
        "min_wal_size": "80MB",
    },
    "l": {
        "shared_buffers": "512MB",
        "work_mem": "8MB",
        "maintenance_work_mem": "256MB",
        "effective_cache_size": "2GB",
        "max_connections": "100",
        "max_worker_processes": "8",
        "max_parallel_workers": "4",
        "max_parallel_maintenance_workers": "2",
        "autovacuum_max_workers": "3",
        "wal_buffers": "16MB",
        "max_wal_size": "4GB",
        "min_wal_size": "256MB",
    },
}
_IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_INCLUDE = "include_if_exists = 'tenantry.conf'"
_LOGPATH = "tenantry.logpath"


@dataclass(frozen=True)
class ClusterSpec:
    datadir: Path
    port: int
    owner: str | None
    size: str
    socket_dir: Path
    # Settings beside the size's (WAL archiving into the platform's backups, say).
    extra: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise InvalidInput(f"size must be one of {sorted(SIZES)}", field="size")
        if not 1024 <= self.port <= 65535:
            raise InvalidInput("port must be within 1024..65535", field="port")
        if len(str(self.socket_dir)) > 90:  # sun_path holds 107 bytes with ".s.PGSQL.nnnnn"
            raise InvalidInput("socket_dir path is too long for a unix socket", field="socket_dir")
        for p in (self.datadir, self.socket_dir):
            if "'" in str(p) or "\\" in str(p):
                raise InvalidInput(f"unsupported character in path {str(p)!r}")


def pg_bin(name: str) -> str:
    base = Path("/usr/lib/postgresql")
    versions = (
        sorted(
            (int(p.name), p)
            for p in base.glob("*")
            if p.name.isdigit() and (p / "bin" / name).exists()
        )
        if base.is_dir()
        else []
    )
    if not versions:
        raise Unavailable(
            f"PostgreSQL binary {name!r} not found: install the Debian package postgresql"
        )
    return str(versions[-1][1] / "bin" / name)


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise Unavailable(
            f"{what} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}"
        )


def _check_traversable(path: Path, user: str | None) -> None:
    """A per-platform user must be able to reach its data dir through every parent."""
    if user is None or not unixusers.running_as_root():
        return
    import pwd

    uid = pwd.getpwnam(user).pw_uid
    for parent in path.absolute().parents:
        st = parent.stat()
        if st.st_uid != uid and not st.st_mode & 0o001:
            raise Unavailable(
                f"{parent} is not traversable by {user!r} (needs o+x) so PostgreSQL cannot "
                f"reach {path}"
            )


def _ensure_template(template_dir: Path) -> None:
    """initdb once per host into template_dir; a lock keeps concurrent inits from racing."""
    template_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = template_dir.with_name(template_dir.name + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (template_dir / "PG_VERSION").exists():
            return
        neutral = None
        if unixusers.running_as_root():
            unixusers.ensure_user(TEMPLATE_USER)
            neutral = TEMPLATE_USER
        _check_traversable(template_dir, neutral)
        tmp = template_dir.with_name(template_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(template_dir, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        unixusers.chown_tree(tmp, neutral)
        argv = [
            pg_bin("initdb"), "-D", str(tmp), "-U", SUPERUSER, "--no-sync", "--no-instructions",
            "--auth-local=peer", "--auth-host=reject", "--encoding=UTF8", "--locale=C.UTF-8",
            # 1 MiB WAL segments instead of 16: every new cluster is a copy of this one, and
            # a smaller pg_wal makes that copy (and an idle cluster's disk) much smaller.
            "--wal-segsize=1",
        ]  # fmt: skip
        _run(unixusers.run_as(neutral, argv), "initdb")
        with open(tmp / "postgresql.conf", "a") as f:
            f.write(f"\n{_INCLUDE}\n")
        os.replace(tmp, template_dir)


def init_cluster(spec: ClusterSpec, *, template_dir: Path | None = None) -> None:
    """Create the cluster unless it exists (crash-safe: built beside, then renamed in)."""
    if not (spec.datadir / "PG_VERSION").exists():
        shutil.rmtree(spec.datadir, ignore_errors=True)
        spec.datadir.parent.mkdir(parents=True, exist_ok=True)
        _check_traversable(spec.datadir, spec.owner)
        tmp = spec.datadir.with_name(spec.datadir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        if template_dir is not None:
            _ensure_template(template_dir)
            _run(["cp", "-a", "--", str(template_dir), str(tmp)], "copying the template cluster")
            unixusers.chown_tree(tmp, spec.owner)
        else:
            tmp.mkdir(mode=0o700)
            unixusers.chown_tree(tmp, spec.owner)
            argv = [
                pg_bin("initdb"), "-D", str(tmp), "-U", SUPERUSER, "--no-sync",
                "--no-instructions", "--auth-local=peer", "--auth-host=reject",
                "--encoding=UTF8", "--locale=C.UTF-8",
            ]  # fmt: skip
            _run(unixusers.run_as(spec.owner, argv), "initdb")
        os.replace(tmp, spec.datadir)
    os.chmod(spec.datadir, 0o700)
    _configure(spec)
    make_socket_dir(spec.socket_dir, spec.owner)


def make_socket_dir(path: Path, owner: str | None) -> None:
    """The cluster's Unix socket dir, its owner's only. It is under /tmp (socket paths are
    short), which the agent's clean stop and a reboot empty."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    unixusers.chown_tree(path, owner)


def _write_owned(path: Path, content: str, owner: str | None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    unixusers.chown_tree(tmp, owner)
    os.replace(tmp, path)


def _settings(spec: ClusterSpec) -> dict[str, str]:
    return {
        "port": str(spec.port),
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": f"'{spec.socket_dir}'",
        "password_encryption": "'scram-sha-256'",
        "log_destination": "'stderr'",
        "logging_collector": "off",
        "log_line_prefix": "'%m [%p] %q%u@%d '",
        **_COMMON,
        **SIZES[spec.size],
        **dict(spec.extra),
    }


def _render(settings: dict[str, str]) -> str:
    return "# written by tenantry on every init; edits are lost\n" + "".join(
        f"{k} = {v}\n" for k, v in sorted(settings.items())
    )


def render_conf(spec: ClusterSpec) -> str:
    """tenantry.conf, the settings tenantry owns (included from postgresql.conf)."""
    return _render(_settings(spec))


def restart_digest(spec: ClusterSpec) -> str:
    """What a change of restarts the cluster: every setting but those a reload applies
    (RELOADABLE, which `configure` signals), so that changing only those restarts nothing."""
    settings = {k: v for k, v in _settings(spec).items() if k not in RELOADABLE}
    return hashlib.sha256(_render(settings).encode()).hexdigest()[:16]


def conf_current(spec: ClusterSpec) -> bool:
    try:
        return (spec.datadir / "tenantry.conf").read_text() == render_conf(spec)
    except OSError:
        return False


def configure(spec: ClusterSpec) -> None:
    """Write the settings again. A running cluster is told to reload them (RELOADABLE take
    effect so); a change of any other setting changes the program's digest, and the restart
    that follows applies it."""
    _configure(spec)
    try:
        postmaster = int((spec.datadir / "postmaster.pid").read_text().split()[0])
        argv = Path(f"/proc/{postmaster}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return  # not running: its next start reads them
    if str(spec.datadir).encode() in argv:  # not a stale pid now someone else's
        os.kill(postmaster, signal.SIGHUP)


def _configure(spec: ClusterSpec) -> None:
    _write_owned(spec.datadir / "tenantry.conf", render_conf(spec), spec.owner)
    hba = (
        "# written by tenantry: superuser over the socket only, other roles over loopback\n"
        f"local all {SUPERUSER} peer map=tenantry\n"
        f"host all {SUPERUSER} 127.0.0.1/32 reject\n"
        f"host all {SUPERUSER} ::1/128 reject\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
        "host all all ::1/128 scram-sha-256\n"
    )
    _write_owned(spec.datadir / "pg_hba.conf", hba, spec.owner)
    system_users = sorted({"root", spec.owner or getpass.getuser()})
    ident = "# MAPNAME SYSTEM-USER PG-USER\n" + "".join(
        f"tenantry {u} {SUPERUSER}\n" for u in system_users
    )
    _write_owned(spec.datadir / "pg_ident.conf", ident, spec.owner)
    main = spec.datadir / "postgresql.conf"
    if _INCLUDE not in main.read_text():
        with open(main, "a") as f:
            f.write(f"\n{_INCLUDE}\n")


def program_spec(spec: ClusterSpec, *, name: str, log_file: str | None) -> ProgramSpec:
    if log_file and spec.datadir.is_dir():
        # Remembered so that wait_ready can show the log tail of a cluster that fails;
        # written when it changes only (every look at a platform asks for its spec).
        stack.write_if_changed(spec.datadir / _LOGPATH, log_file + "\n")
    settings = restart_digest(spec)
    return ProgramSpec(
        name=name,
        command=(pg_bin("postgres"), "-D", str(spec.datadir)),
        # The settings' digest: changed settings restart the cluster (archive_mode needs it).
        environment={"LC_ALL": "C.UTF-8", "TENANTRY_SETTINGS": settings},
        user=spec.owner,
        directory=str(spec.datadir),  # supervisord's own directory is not the owner's
        log_file=log_file,
        stop_signal="INT",  # "fast" shutdown; TERM would wait for clients to leave
        start_seconds=1,
    )


_PING = {0: "ok", 1: "rejecting", 2: "no response", 3: "no attempt"}


def ping(spec: ClusterSpec, timeout: int = 2) -> str:
    """pg_isready's verdict: "ok", "rejecting" (starting, stopping, recovering), "no
    response" (nobody there, or frozen) or "no attempt" (a bad request)."""
    argv = [pg_bin("pg_isready"), "-q", "-t", str(timeout), "-h", str(spec.socket_dir),
            "-p", str(spec.port), "-U", SUPERUSER, "-d", "postgres"]
    try:
        done = subprocess.run(argv, capture_output=True, check=False, timeout=timeout + 8)
    except subprocess.TimeoutExpired:
        return "no response"
    return _PING.get(done.returncode, "no attempt")


def is_ready(spec: ClusterSpec) -> bool:
    return ping(spec) == "ok"


def wait_ready(spec: ClusterSpec, timeout: float = 30, *, log_file: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_ready(spec):
            return
        time.sleep(0.05)
    if log_file is None and (spec.datadir / _LOGPATH).exists():
        log_file = (spec.datadir / _LOGPATH).read_text().strip()
    tail = ""
    if log_file:
        with contextlib.suppress(OSError):
            tail = "\n".join(Path(log_file).read_text(errors="replace").splitlines()[-20:])
    raise Unavailable(
        f"PostgreSQL on port {spec.port} not ready after {timeout}s"
        + (f":\n{tail}" if tail else "")
    )


def _scram_verifier(password: str, salt: bytes, iterations: int) -> str:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def _verifier_matches(verifier: str | None, password: str) -> bool:
    m = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$[^:]+:.+", verifier or "")
    if not m:
        return False
    expected = _scram_verifier(password, base64.b64decode(m.group(2)), int(m.group(1)))
    return hmac.compare_digest(expected, verifier or "")


def _check_ident(value: str, what: str) -> None:
    if not _IDENT_RE.fullmatch(value) or value == SUPERUSER or value.startswith("pg_"):
        raise InvalidInput(f"bad {what} {value!r}", field=what)


def ensure_database(spec: ClusterSpec, *, role: str, password: str, dbname: str) -> None:
    _check_ident(role, "role")
    _check_ident(dbname, "dbname")
    if not password:
        raise InvalidInput("password must not be empty", field="password")
    try:
        with psycopg.connect(
            host=str(spec.socket_dir), port=spec.port, user=SUPERUSER, dbname="postgres",
            autocommit=True, connect_timeout=10,
        ) as conn:  # fmt: skip
            _wait_promoted(conn)
            rid, did = sql.Identifier(role), sql.Identifier(dbname)
            row = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)
            ).fetchone()
            verifier = sql.Literal(_scram_verifier(password, secrets.token_bytes(16), 4096))
            if row is None:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(rid, verifier))
            else:
                conn.execute(
                    sql.SQL("ALTER ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(rid)
                )
                if not _verifier_matches(row[0], password):
                    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(rid, verifier))
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(did, rid))
            else:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(did, rid))
            conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(did))
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(did, rid))
    except psycopg.Error as exc:
        # Only the server's primary message: never the statement, which holds the verifier.
        detail = exc.diag.message_primary
        if detail is None and isinstance(exc, psycopg.OperationalError):
            detail = str(exc)  # a connection failure: no statement, no password in it
        detail = detail or type(exc).__name__
        raise Unavailable(f"PostgreSQL on port {spec.port}: {detail}") from None


def wake_checkpointer(spec: ClusterSpec) -> None:
    """A CHECKPOINT once a restored cluster is promoted.

    PostgreSQL 15's checkpointer computes its sleep while the end-of-recovery checkpoint
    still counts as recovery, and then sleeps until the next timed checkpoint
    (checkpoint_timeout) without looking at archive_timeout: WAL written after a restore was
    neither switched out nor archived (measured: DR drills after a first recovery lost every
    commit of a 20 s load). A checkpoint requested after the promotion wakes it, and its
    next sleep honours archive_timeout."""
    try:
        with psycopg.connect(host=str(spec.socket_dir), port=spec.port, user=SUPERUSER,
                             dbname="postgres", autocommit=True, connect_timeout=10) as conn:
            _wait_promoted(conn, timeout=60)
            conn.execute("CHECKPOINT")
    except psycopg.Error as exc:
        raise Unavailable(f"PostgreSQL on port {spec.port}: "
                          f"{exc.diag.message_primary or type(exc).__name__}") from None


def _wait_promoted(conn: psycopg.Connection[tuple[object, ...]],
                   timeout: float = 3600) -> None:
    """A restored cluster replays WAL read-only before it is promoted: roles can be changed
    only after that."""
    deadline = time.monotonic() + timeout
    while conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,):
        if time.monotonic() > deadline:
            raise Unavailable(f"PostgreSQL still replaying WAL after {int(timeout)} s")
        time.sleep(0.2)


def database_url(*, role: str, password: str, dbname: str, port: int) -> str:
    return (
        f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}"
        f"@127.0.0.1:{port}/{quote(dbname, safe='')}"
    )


def remove_cluster(spec: ClusterSpec) -> None:
    """Delete the cluster's files; remove its program from the service manager first."""
    for path in (spec.datadir, spec.datadir.with_name(spec.datadir.name + ".tmp"), spec.socket_dir):
        shutil.rmtree(path, ignore_errors=True)


_UNREACHED = "recovery ended before configured recovery target was reached"


def target_unreached(spec: ClusterSpec, log_file: Path) -> bool:
    """A restore to a time after the archive's last commit: PostgreSQL (13 and later) stops
    with FATAL at the end of the WAL rather than promote short of its target. True while
    the cluster is in that state (recovering, a time target set, that message in its log)."""
    if not (spec.datadir / "recovery.signal").exists():
        return False
    try:
        settings = (spec.datadir / "postgresql.auto.conf").read_text()
        with log_file.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 16384))
            tail = f.read().decode(errors="replace")
    except OSError:
        return False
    return "recovery_target_time" in settings and _UNREACHED in tail


def drop_recovery_target(spec: ClusterSpec) -> None:
    """Recover to the end of the archive instead: with no commit after the target, that is
    the database as it was at the target. The program is started again by the plan."""
    path = spec.datadir / "postgresql.auto.conf"
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.lstrip().startswith("recovery_target")]
    path.write_text("".join(kept))
    log.info("cluster %s: no commit after the restore's target time; recovering to the end "
             "of the archive", spec.datadir)
