"""A platform's backups on its host: pgBackRest, one stanza per platform.

Everything of a platform's backups lives in its own directory (`PLATFORM/backup`): the
pgBackRest configuration (mode 0600, owned by the platform's Unix user: it holds the ISV's
repository passphrase), the spool of WAL waiting to be pushed, pgBackRest's locks and logs,
and `state.json`, what the agent knows of the stanza and of each task the control plane
asked for. pgBackRest always runs as the platform's user, with `--config` on every call
(PostgreSQL's `archive_command` included), so two platforms never share a file.

WAL is archived continuously and asynchronously (`archive-async`); `archive_timeout` closes a
segment at least every 10 s while anything is written, so a commit reaches the repository
within seconds. While the store is away WAL queues in the spool up to `spool_max_mb`; past
that pgBackRest drops it rather than fill the disk, and the report says so (the control plane
raises an event: recovery past that point needs a new full backup).

Backups run in the runner's own threads, so a long one never holds up the convergence of its
platform (a crashed app is restarted meanwhile). A task that was running when the agent died
runs again at its next start; pgBackRest resumes what the first attempt had copied.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from tenantry.agent import files, pgcluster, releases, unixusers
from tenantry.core.crypto import write_private
from tenantry.core.errors import Unavailable
from tenantry.platforms.contract import (
    BackupInfo,
    BackupRepo,
    BackupReport,
    BackupTask,
    DesiredPlatform,
    FilesSnapshot,
    RestoreTask,
)

log = logging.getLogger(__name__)

PGBACKREST = "pgbackrest"
BACKUP_TIMEOUT = 6 * 3600.0
LOCK_RETRY = 5.0  # a backup that finds another running waits this long and tries again
LOCK_WAIT = 600.0  # ... for at most this long
_LOCK_EXIT = 50  # pgBackRest's "unable to acquire lock"


@dataclass(frozen=True)
class BackupMetrics:
    """A platform's backups as the agent sees them (see agent.backups.metrics)."""

    isv: str
    platform: str
    last_backup_at: float | None  # Unix time the newest backup finished
    archive_pending: int  # WAL segments not yet in the repository
    archive_lag: float  # seconds the oldest of them has waited (0: none waits)
    checks: tuple[tuple[str, bool], ...] = ()  # ("verify" | "restore-test", passed), latest



def isv_group(isv: str) -> str:
    """The Unix group of an ISV's platform users (names are short: a hash of the ISV's)."""
    return "tg-" + hashlib.sha256(isv.encode()).hexdigest()[:12]


def backup_dir(platform_dir: Path) -> Path:
    return platform_dir / "backup"


def config_path(platform_dir: Path) -> Path:
    return backup_dir(platform_dir) / "pgbackrest.conf"


def archive_settings(platform_dir: Path, p: DesiredPlatform) -> dict[str, str]:
    """PostgreSQL settings that archive every WAL segment into the platform's stanza."""
    if p.backup is None:
        return {}
    command = (f"{PGBACKREST} --config={config_path(platform_dir)} --stanza={p.id} "
               "archive-push %p")
    return {"archive_mode": "on", "archive_command": f"'{command}'",
            "archive_timeout": str(p.backup.archive_timeout), "wal_level": "replica"}


def render_config(platform_dir: Path, p: DesiredPlatform, spec: pgcluster.ClusterSpec, *,
                  repo: BackupRepo | None = None, stanza: str | None = None) -> str:
    """pgbackrest.conf: the repository, its cipher, and where this platform keeps its files.
    A restore from another platform's backups names that one's repository and stanza."""
    b = p.backup
    assert b is not None
    bdir = backup_dir(platform_dir)
    repo = repo or b.repo
    lines = [
        "# written by tenantry's agent; edits are lost", "[global]",
        f"repo1-type={repo.type}", f"repo1-path={repo.path}",
        "repo1-cipher-type=aes-256-cbc", f"repo1-cipher-pass={b.cipher_pass.get_secret_value()}",
        # Expiry follows tenantry's own retention (grandfather-father-son), not a count here.
        "repo1-retention-full=9999999", "repo1-retention-full-type=count",
        "archive-async=y", f"spool-path={bdir / 'spool'}",
        f"archive-push-queue-max={b.spool_max_mb}MB",
        f"lock-path={bdir / 'lock'}", f"log-path={bdir / 'log'}",
        "log-level-console=warn", "log-level-stderr=off", "log-level-file=info",
        "start-fast=y", "compress-type=lz4", "process-max=2", "delta=y",
        # Small files bundled into larger objects: a 20 MB cluster's full backup is tens of
        # requests to an object store instead of one per file (~1,300; bench/backup_requests).
        "repo1-bundle=y",
        # A store that does not answer fails a command in seconds, not in minutes of retries.
        "io-timeout=15", "db-timeout=600", "protocol-timeout=630",
    ]  # fmt: skip
    if repo.type == "s3":
        host, _, port = (repo.endpoint or "").partition(":")
        lines += [f"repo1-s3-bucket={repo.bucket}", f"repo1-s3-endpoint={host}",
                  f"repo1-s3-region={repo.region}", "repo1-s3-uri-style=path",
                  f"repo1-s3-key={repo.key_id}",
                  f"repo1-s3-key-secret={b.secret_key.get_secret_value() if b.secret_key else ''}"]
        if port:
            lines.append(f"repo1-storage-port={port}")
        if repo.ca_pem:
            lines.append(f"repo1-storage-ca-file={bdir / 'ca.pem'}")
    lines += ["", f"[{stanza or p.id}]", f"pg1-path={spec.datadir}", f"pg1-port={spec.port}",
              f"pg1-socket-path={spec.socket_dir}", f"pg1-user={pgcluster.SUPERUSER}", ""]
    return "\n".join(lines)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _stanza_digest(platform_dir: Path, p: DesiredPlatform, spec: pgcluster.ClusterSpec) -> str:
    """What the stanza and the files repository were made for: a change makes them again
    (both steps do nothing to what already exists)."""
    b = p.backup
    assert b is not None
    extra = ""
    if b.files_pass is not None:
        extra = "\n# files: " + files.location(b.repo) + " " + \
            _digest(b.files_pass.get_secret_value())
    return _digest(render_config(platform_dir, p, spec) + extra)


def read_state(platform_dir: Path) -> dict[str, Any]:
    """`state.json`: what the agent knows of the stanza and of each task ({} when none)."""
    try:
        data = json.loads((backup_dir(platform_dir) / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class BackupRunner:
    """The host's backups: stanzas, tasks in threads of their own, and what they left."""

    def __init__(self, *, on_done: Callable[[str], None] | None = None,
                 workers: int = 2, releases_root: Path | None = None) -> None:
        self._on_done = on_done
        self._releases_root = releases_root  # where the app's smoke check is found
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backup")
        self._lock = threading.Lock()
        self._active: set[str] = set()  # "platform:task" running in this process
        self._closing = threading.Event()
        self._archiver = ArchiverCache()

    def close(self) -> None:
        """Take no more work. A task the stop cuts short (its pgBackRest or restic is
        stopped with the agent) stays "running" in the state and runs again at the next
        start, as does one that was queued."""
        self._closing.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def join(self, timeout: float) -> bool:
        """Wait for the running tasks to end; False if some still run after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._active:
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    # ------------------------------------------------------------ state.json

    @staticmethod
    def _state_file(platform_dir: Path) -> Path:
        return backup_dir(platform_dir) / "state.json"

    def read_state(self, platform_dir: Path) -> dict[str, Any]:
        return read_state(platform_dir)

    def _update(self, platform_dir: Path, change: Callable[[dict[str, Any]], None]) -> None:
        with self._lock:
            state = self.read_state(platform_dir)
            change(state)
            path = self._state_file(platform_dir)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_private(path, json.dumps(state, sort_keys=True).encode())

    # ------------------------------------------------------------ facts

    def config_current(self, platform_dir: Path, p: DesiredPlatform,
                       spec: pgcluster.ClusterSpec) -> bool:
        path = config_path(platform_dir)
        try:
            return path.read_text() == render_config(platform_dir, p, spec)
        except OSError:
            return False

    def needs_stanza(self, platform_dir: Path, p: DesiredPlatform,
                     spec: pgcluster.ClusterSpec) -> bool:
        state = self.read_state(platform_dir)
        return state.get("stanza") != _stanza_digest(platform_dir, p, spec)

    def tasks_to_start(self, platform_dir: Path, p: DesiredPlatform) -> list[BackupTask]:
        """Tasks never started, and those left "running" by an agent that died."""
        if p.backup is None:
            return []
        done = self.read_state(platform_dir).get("tasks", {})
        return [t for t in p.backup.tasks
                if (t.id not in done or done[t.id] == "running")
                and f"{p.id}:{t.id}" not in self._active]

    def restore_state(self, platform_dir: Path, p: DesiredPlatform) -> str | None:
        """The outcome of the restore the desired state asks for: None while it has not
        run (or none is asked for), "ok", or "failed: why"."""
        task = p.backup.restore if p.backup else None
        if task is None:
            return None
        found = self.read_state(platform_dir).get("restores", {}).get(task.id)
        return str(found) if found is not None else None

    def report(self, platform_dir: Path, p: DesiredPlatform,
               spec: pgcluster.ClusterSpec, *, database_up: bool) -> BackupReport:
        state = self.read_state(platform_dir)
        wanted = {t.id for t in p.backup.tasks} if p.backup else set()
        digest = _stanza_digest(platform_dir, p, spec)
        failed = state.get("stanza_error") or {}
        stanza = ("ready" if state.get("stanza") == digest else
                  failed.get("error", "missing") if failed.get("digest") == digest
                  else "missing")
        restore = p.backup.restore if p.backup else None
        report = BackupReport(
            stanza=stanza,
            tasks={k: v for k, v in state.get("tasks", {}).items() if k in wanted},
            restores={k: v for k, v in state.get("restores", {}).items()
                      if restore is not None and k == restore.id},
            backups=[BackupInfo.model_validate(b) for b in state.get("backups", [])],
            snapshots=[FilesSnapshot.model_validate(s) for s in state.get("snapshots", [])])
        if database_up:
            report.archived_at, report.archive_error = self._archiver.of(spec)
        return report

    # ------------------------------------------------------------ actions

    def configure(self, platform_dir: Path, p: DesiredPlatform,
                  spec: pgcluster.ClusterSpec) -> None:
        b = p.backup
        assert b is not None
        bdir = backup_dir(platform_dir)
        for sub in ("", "spool", "lock", "log"):
            (bdir / sub).mkdir(mode=0o700, exist_ok=True)
        if b.repo.ca_pem:
            write_private(bdir / "ca.pem", b.repo.ca_pem.encode())
        if b.repo.type == "posix":
            # The ISV's platforms share a group: a clone (another platform of the ISV)
            # reads its source's repository, WAL included, as its own user; no other ISV can.
            repo = Path(b.repo.path)
            store, prefix = repo.parents[1], repo.parents[0]
            store.mkdir(mode=0o711, exist_ok=True)
            prefix.mkdir(mode=0o710, exist_ok=True)
            repo.mkdir(mode=0o700, exist_ok=True)
            if spec.owner is not None and unixusers.running_as_root():
                group = isv_group(p.isv)
                with unixusers.GROUPS:
                    unixusers.ensure_group(group)
                    unixusers.add_to_group(spec.owner, group)
                    os.chown(prefix, 0, grp.getgrnam(group).gr_gid)
                    os.chmod(prefix, 0o710)  # noqa: S103 - the ISV's group may pass, none read
                    unixusers.share_tree(repo, spec.owner, group)
        write_private(config_path(platform_dir), render_config(platform_dir, p, spec).encode())
        if b.files_pass is not None:
            files.configure(platform_dir, p, spec.owner)
            ensure_files_dir(platform_dir, spec.owner)
        unixusers.chown_tree(bdir, spec.owner)

    def create_stanza(self, platform_dir: Path, p: DesiredPlatform,
                      spec: pgcluster.ClusterSpec) -> None:
        pgcluster.wait_ready(spec, timeout=60)
        digest = _stanza_digest(platform_dir, p, spec)
        try:
            self._stanza_create(platform_dir, p, spec)
            if p.backup is not None and p.backup.files_pass is not None:
                files.Restic(platform_dir, p, user=spec.owner).ensure_repository()
        except Unavailable as exc:
            failed = {"digest": digest, "error": f"error: {exc}"[:1000]}
            self._update(platform_dir, lambda s: s.update(stanza_error=failed))
            raise
        def ready(state: dict[str, Any]) -> None:
            state["stanza"] = digest
            state.pop("stanza_error", None)

        self._update(platform_dir, ready)

    def _stanza_create(self, platform_dir: Path, p: DesiredPlatform,
                       spec: pgcluster.ClusterSpec) -> None:
        """`pgbackrest stanza-create`. Refused entry to a posix repository (its owner, group
        or modes are not what configure left: the ISV's group removed and made again, say),
        it sets them again and tries once more."""
        try:
            self.run(platform_dir, p, spec, ["stanza-create"], timeout=300)
            return
        except Unavailable as exc:
            if not _refused_access(exc, p):
                raise
            refused = exc
        assert p.backup is not None
        repo = Path(p.backup.repo.path)
        log.warning("%s: pgBackRest was refused access to its repository (%s); as %s sees it: "
                    "%s. Setting its owner, group and modes again", p.id, refused, spec.owner,
                    access_path(repo, spec.owner))
        self.configure(platform_dir, p, spec)
        try:
            self.run(platform_dir, p, spec, ["stanza-create"], timeout=300)
        except Unavailable as again:
            raise Unavailable(f"{again}; as {spec.owner} sees it: "
                              f"{access_path(repo, spec.owner)}") from None

    def restore(self, platform_dir: Path, p: DesiredPlatform,
                spec: pgcluster.ClusterSpec) -> None:
        """Restore the cluster from a backup (in place, with `--delta`, or into a cluster
        not made yet) and leave it to replay WAL to the target when it starts.

        pgBackRest runs as root here, so that a clone reads its source's repository, and the
        files are then given to the platform's user. Whatever happens is recorded under the
        task's id; a restore that failed is never followed by an empty cluster (the agent
        does not initdb while the desired state asks for a restore that failed)."""
        task = p.backup.restore if p.backup else None
        assert task is not None
        try:
            self._restore(platform_dir, p, spec, task)
            outcome = "ok"
        except (Unavailable, OSError) as exc:
            outcome = f"failed: {exc}"[:2000]
        self._update(platform_dir, lambda s: s.setdefault("restores", {}).__setitem__(
            task.id, outcome))
        log.info("restore %s of %s: %s", task.id, p.id, outcome[:200])
        if outcome != "ok":
            raise Unavailable(f"restore {task.id}: {outcome}")

    def _restore(self, platform_dir: Path, p: DesiredPlatform, spec: pgcluster.ClusterSpec,
                 task: RestoreTask) -> None:
        bdir = backup_dir(platform_dir)
        conf = config_path(platform_dir)
        if not self.config_current(platform_dir, p, spec):  # a new platform's first pass
            self.configure(platform_dir, p, spec)
        stanza = p.id
        if task.source is not None and task.source_stanza is not None:
            stanza = task.source_stanza
            conf = bdir / f"restore-{task.id}.conf"  # the restore_command keeps using it
            write_private(conf, render_config(platform_dir, p, spec, repo=task.source,
                                              stanza=stanza).encode())
            unixusers.chown_tree(conf, spec.owner)
        fresh = not (spec.datadir / "PG_VERSION").exists()
        if fresh:
            spec.datadir.mkdir(mode=0o700, parents=True, exist_ok=True)
        args = [] if fresh else ["--delta"]
        if task.label:
            args.append(f"--set={task.label}")
        if task.immediate:
            args += ["--type=immediate", "--target-action=promote"]
        elif task.target is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(task.target))
            fraction = f"{task.target % 1:.6f}"[1:]
            args += ["--type=time", f"--target={when}{fraction}+00", "--target-action=promote"]
        try:
            _pgbackrest_restore(conf, stanza, spec.datadir, args, cwd=platform_dir)
        except Unavailable:
            if fresh:  # nothing half made is left to start
                shutil.rmtree(spec.datadir, ignore_errors=True)
            raise
        unixusers.chown_tree(spec.datadir, spec.owner)
        unixusers.chown_tree(bdir, spec.owner)
        wake_file(platform_dir).touch()  # see pgcluster.wake_checkpointer
        if p.backup is not None and p.backup.files_pass is not None:
            self._restore_files(platform_dir, p, spec, task)

    def _restore_files(self, platform_dir: Path, p: DesiredPlatform,
                       spec: pgcluster.ClusterSpec, task: RestoreTask) -> None:
        """The files directory as the snapshot that goes with the restored database left
        it (see files.pick). A repository with no such snapshot (a platform backed up
        before it had files backups) leaves the directory as it is."""
        restic = files.Restic(platform_dir, p, user=None, repo=task.source)
        try:
            found = files.pick(restic.snapshots(), label=task.label,
                               target=None if task.immediate else task.target)
        except Unavailable as exc:
            if "config" in str(exc) or "exist" in str(exc):
                log.info("restore %s of %s: no files repository; files left as they are",
                         task.id, p.id)
                return
            raise
        if found is None:
            log.info("restore %s of %s: no files snapshot before the target; files left "
                     "as they are", task.id, p.id)
            return
        staging = platform_dir / f"files.restore-{task.id}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            restic.restore_into(found.id, staging)
        except Unavailable:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        staging.mkdir(exist_ok=True)  # an empty snapshot restores nothing
        files.put_in_place(platform_dir, staging, spec.owner)

    def start(self, platform_dir: Path, p: DesiredPlatform, spec: pgcluster.ClusterSpec,
              task: BackupTask) -> None:
        key = f"{p.id}:{task.id}"
        with self._lock:
            if key in self._active:
                return
            self._active.add(key)
        self._update(platform_dir, lambda s: s.setdefault("tasks", {}).__setitem__(
            task.id, "running"))
        self._pool.submit(self._backup, platform_dir, p, spec, task, key)

    def _backup(self, platform_dir: Path, p: DesiredPlatform, spec: pgcluster.ClusterSpec,
                task: BackupTask, key: str) -> None:
        try:
            outcome = self._run_backup(platform_dir, p, spec, task)
        except Exception as exc:  # noqa: BLE001 - recorded and reported, never lost
            if not self._closing.is_set():
                log.exception("backup %s of %s", task.id, p.id)
            outcome = f"failed: {type(exc).__name__}: {exc}"
        if self._closing.is_set() and not outcome.startswith("ok"):
            log.info("backup %s of %s was cut short by the agent's stop; it runs again at "
                     "the next start", task.id, p.id)
            with self._lock:
                self._active.discard(key)
            return
        self._update(platform_dir, lambda s: s.setdefault("tasks", {}).__setitem__(
            task.id, outcome[:2000]))
        with self._lock:
            self._active.discard(key)
        log.info("backup %s of %s: %s", task.id, p.id, outcome[:200])
        if self._on_done is not None:
            self._on_done(p.id)

    def _run_backup(self, platform_dir: Path, p: DesiredPlatform,
                    spec: pgcluster.ClusterSpec, task: BackupTask) -> str:
        restic = files.Restic(platform_dir, p, user=spec.owner) \
            if p.backup is not None and p.backup.files_pass is not None else None
        if task.type == "restore-test":
            try:
                return restore_test(platform_dir, p, spec, task.id, restic=restic,
                                    releases_root=self._releases_root)
            except Unavailable as exc:
                return f"failed: {exc}"
        if task.type == "expire":
            try:
                for label in task.labels:
                    self.run(platform_dir, p, spec, [f"--set={label}", "expire"],
                             timeout=BACKUP_TIMEOUT)
                if restic is not None:
                    restic.forget(task.labels)
            except (Unavailable, _Locked) as exc:
                return f"failed: {exc or 'another backup held the lock'}"
            finally:
                with contextlib.suppress(Unavailable):
                    self.refresh(platform_dir, p, spec)
                    self._refresh_snapshots(platform_dir, restic)
            return f"ok: expired {', '.join(task.labels) or 'nothing'}"
        if task.type == "verify":
            try:
                self.run(platform_dir, p, spec, ["verify"], timeout=BACKUP_TIMEOUT)
                part = int(time.time() // 86400) % files.CHECK_PARTS + 1
                if restic is not None:
                    restic.check(part)
            except (Unavailable, _Locked) as exc:
                return f"failed: {exc or 'another backup held the lock'}"
            if restic is None:
                return "ok: every file of the repository matches its checksum"
            return ("ok: every file of the database repository matches its checksum; the "
                    f"files repository's structure and part {part}/{files.CHECK_PARTS} of "
                    "its data read back")
        try:
            before = {b.label for b in self.info(platform_dir, p, spec)}
        except Unavailable as exc:
            return f"failed: {exc}"
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                self.run(platform_dir, p, spec, [f"--type={task.type}", "backup"],
                         timeout=BACKUP_TIMEOUT)
                break
            except _Locked:
                if time.monotonic() > deadline:
                    return "failed: another backup of this platform held its lock for " \
                           f"{int(LOCK_WAIT)} s"
                time.sleep(LOCK_RETRY)
            except Unavailable as exc:
                return f"failed: {exc}"
        backups = self.info(platform_dir, p, spec)
        self._update(platform_dir, lambda s: s.update(
            backups=[b.model_dump() for b in backups]))
        new = [b for b in backups if b.label not in before]
        if not new:
            return "ok"
        label = new[-1].label
        if restic is not None:
            try:
                snap, count, size = restic.snapshot(label)
                self._update(platform_dir, lambda s: s.setdefault("snapshot_sizes", {})
                             .__setitem__(snap, [count, size]))
                self._refresh_snapshots(platform_dir, restic)
            except Unavailable as exc:
                return f"failed: the database backup {label} was made, the files " \
                       f"backup failed: {exc}"
        return f"ok: {label}"

    def _refresh_snapshots(self, platform_dir: Path, restic: files.Restic | None) -> None:
        if restic is None:
            return
        sizes = self.read_state(platform_dir).get("snapshot_sizes", {})
        found = restic.snapshots(sizes)
        keep = {s.id[:8] for s in found}
        self._update(platform_dir, lambda s: s.update(
            snapshots=[x.model_dump() for x in found],
            snapshot_sizes={k: v for k, v in s.get("snapshot_sizes", {}).items()
                            if k in keep}))

    def refresh(self, platform_dir: Path, p: DesiredPlatform,
                spec: pgcluster.ClusterSpec) -> None:
        backups = self.info(platform_dir, p, spec)
        self._update(platform_dir, lambda s: s.update(
            backups=[b.model_dump() for b in backups]))

    def info(self, platform_dir: Path, p: DesiredPlatform,
             spec: pgcluster.ClusterSpec) -> list[BackupInfo]:
        out = self.run(platform_dir, p, spec, ["--output=json", "info"], timeout=120)
        return parse_info(out, p.id)

    def run(self, platform_dir: Path, p: DesiredPlatform, spec: pgcluster.ClusterSpec,
            args: list[str], *, timeout: float) -> str:
        argv = unixusers.run_as(spec.owner, [
            PGBACKREST, f"--config={config_path(platform_dir)}", f"--stanza={p.id}", *args])
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                       "LC_ALL": "C.UTF-8"},
                                  cwd=str(platform_dir), check=False)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"pgbackrest {args[-1]} did not finish within "
                              f"{int(timeout)} s") from None
        if done.returncode == _LOCK_EXIT:
            raise _Locked()
        if done.returncode != 0:
            raise Unavailable(f"pgbackrest {args[-1]} failed ({done.returncode}): "
                              + _last_error(done.stderr or done.stdout))
        return done.stdout


class _Locked(Exception):
    pass


def _refused_access(exc: Unavailable, p: DesiredPlatform) -> bool:
    return (p.backup is not None and p.backup.repo.type == "posix"
            and "Permission denied" in str(exc))


def access_path(path: Path, user: str | None) -> str:
    """Each directory from the top down to `path` as `user` meets it (mode, owner, group),
    and the groups `user` is in: what a refused access is read from."""
    steps = []
    for d in [*reversed(path.parents), path]:
        try:
            st = d.stat()
        except OSError as exc:
            steps.append(f"{d}: {exc.strerror}")
            break
        steps.append(f"{d} {stat.filemode(st.st_mode)} {_name(pwd.getpwuid, st.st_uid)}:"
                     f"{_name(grp.getgrgid, st.st_gid)}")
    if user is not None:
        try:
            entry = pwd.getpwnam(user)
            gids = os.getgrouplist(user, entry.pw_gid)
            steps.append(f"{user} is in " + ", ".join(_name(grp.getgrgid, g) for g in gids))
        except KeyError:
            steps.append(f"{user} does not exist")
    return "; ".join(steps)


def _name(lookup: Callable[[int], Any], number: int) -> str:
    try:
        return str(lookup(number)[0])
    except KeyError:
        return str(number)  # an id no name has (its user or group was removed)


def _pgbackrest_restore(conf: Path, stanza: str, datadir: Path, args: list[str], *,
                        cwd: Path) -> None:
    """`pgbackrest restore` into `datadir`, as root (see BackupRunner.restore)."""
    argv = [PGBACKREST, f"--config={conf}", f"--stanza={stanza}", f"--pg1-path={datadir}",
            *args, "restore"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=BACKUP_TIMEOUT,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                   "LC_ALL": "C.UTF-8"}, cwd=str(cwd), check=False)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"pgbackrest restore did not finish within "
                          f"{int(BACKUP_TIMEOUT)} s") from None
    if done.returncode != 0:
        raise Unavailable(f"pgbackrest restore failed ({done.returncode}): "
                          + _last_error(done.stderr or done.stdout))
    (datadir / "postmaster.pid").unlink(missing_ok=True)


def metrics(platform_dir: Path, p: DesiredPlatform) -> BackupMetrics:
    """What the agent exports of a platform's backups: the newest backup's end, the WAL not
    yet in the repository (segments PostgreSQL still has to hand over, `.ready` in
    pg_wal/archive_status, and those in pgBackRest's async queue) and how long the oldest
    has waited, and the outcome of the latest verify and restore test asked for."""
    return MetricsReader().of(platform_dir, p)


RACY = 1.0  # s: a folder changed this recently may change again under the same mtime


def _settled(mtime_ns: int, now: float) -> bool:
    """Whether what was read of a folder with this mtime can be kept until the mtime moves:
    not when it changed less than RACY s ago, since a change in the same clock tick leaves
    the mtime as it was (git's "racy" rule for its index)."""
    return now - mtime_ns / 1e9 >= RACY


class MetricsReader:
    """`metrics` for every platform at every refresh of /metrics, reading only what moved.

    state.json is parsed again only when it was replaced (it is written whole, by a rename);
    a WAL queue folder is listed again only when its mtime moved (a segment's file keeps
    its own mtime while it waits, so the lag is still counted to now), and had settled
    (`_settled`) when it was listed.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._states: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}
        # (platform dir, folder) -> (the folder's mtime, its waiting segments' mtimes)
        self._queues: dict[tuple[Path, Path], tuple[int, tuple[float, ...]]] = {}

    def of(self, platform_dir: Path, p: DesiredPlatform) -> BackupMetrics:
        state = self._state(platform_dir)
        ends = [float(b.get("finished_at", 0)) for b in state.get("backups", [])]
        waiting = [*self._waiting(platform_dir, platform_dir / "pgdata" / "pg_wal"
                                  / "archive_status", ".ready"),
                   *self._waiting(platform_dir, backup_dir(platform_dir) / "spool" / "archive"
                                  / p.id / "out", "")]
        outcomes = state.get("tasks", {})
        checks = []
        for kind in ("verify", "restore-test"):
            latest = next((t for t in reversed(p.backup.tasks if p.backup else [])
                           if t.type == kind and str(outcomes.get(t.id, "")).startswith(
                               ("ok", "failed"))), None)
            if latest is not None:
                checks.append((kind, str(outcomes[latest.id]).startswith("ok")))
        return BackupMetrics(isv=p.isv, platform=f"{p.isv}/{p.name}",
                             last_backup_at=max(ends) if ends else None,
                             archive_pending=len(waiting),
                             archive_lag=(round(self._clock() - min(waiting), 3) if waiting
                                          else 0.0),
                             checks=tuple(checks))

    def keep_only(self, platform_dirs: set[Path]) -> None:
        """Forget what was read of platforms no longer on the host."""
        self._states = {d: v for d, v in self._states.items() if d in platform_dirs}
        self._queues = {k: v for k, v in self._queues.items() if k[0] in platform_dirs}

    def _state(self, platform_dir: Path) -> dict[str, Any]:
        try:
            st = (backup_dir(platform_dir) / "state.json").stat()
        except OSError:
            self._states.pop(platform_dir, None)
            return {}
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        known = self._states.get(platform_dir)
        if known is not None and known[0] == key:
            return known[1]
        state = read_state(platform_dir)
        self._states[platform_dir] = (key, state)
        return state

    def _waiting(self, platform_dir: Path, folder: Path, suffix: str) -> tuple[float, ...]:
        """The mtimes of the WAL segments waiting in `folder` (named `<24 hex><suffix>`)."""
        key = (platform_dir, folder)
        try:
            mtime = folder.stat().st_mtime_ns
        except OSError:
            self._queues.pop(key, None)
            return ()
        known = self._queues.get(key)
        if known is not None and known[0] == mtime:
            return known[1]
        found = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if entry.name.endswith(suffix) and not entry.name.endswith((".ok", ".error")) \
                        and len(entry.name.removesuffix(suffix)) == 24:
                    with contextlib.suppress(OSError):
                        found.append(entry.stat().st_mtime)
        waiting = tuple(found)
        if _settled(mtime, self._clock()):
            self._queues[key] = (mtime, waiting)
        else:
            self._queues.pop(key, None)
        return waiting


def wake_file(platform_dir: Path) -> Path:
    """Present from a restore until the promoted cluster's checkpointer has been woken."""
    return backup_dir(platform_dir) / "wake-checkpointer"


def ensure_files_dir(platform_dir: Path, owner: str | None) -> None:
    path = files.files_dir(platform_dir)
    if not path.is_dir():
        path.mkdir(mode=0o750)
        unixusers.chown_tree(path, owner)


def restore_test(platform_dir: Path, p: DesiredPlatform, spec: pgcluster.ClusterSpec,
                 task_id: str, *, restic: files.Restic | None = None,
                 releases_root: Path | None = None) -> str:
    """The latest backup restored into a scratch cluster beside the platform's (its own port
    and socket, archiving off, WAL fetched without the live cluster's async queue), every
    table of every database read and counted, the files restored beside it, then the app's
    own smoke check (`[backup] smoke` in its manifest) run against that copy, and the
    scratch cluster dropped. Returns the outcome ("ok: ..."); raises Unavailable with the
    reason when the backup does not restore, a table does not read or the smoke check
    fails."""
    started = time.monotonic()
    scratch = platform_dir / f"scratch-{task_id}"
    sock = Path(f"{spec.socket_dir}-t")
    conf = config_path(platform_dir)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(mode=0o700)
    proc: subprocess.Popen[bytes] | None = None
    try:
        _pgbackrest_restore(conf, p.id, scratch, ["--type=immediate", "--target-action=promote"],
                            cwd=platform_dir)
        sock.mkdir(mode=0o700, exist_ok=True)
        for path in (scratch, sock):
            unixusers.chown_tree(path, spec.owner)
        port = _free_port()
        fetch = (f"{PGBACKREST} --config={conf} --stanza={p.id} --pg1-path={scratch} "
                 f"--no-archive-async --lock-path={scratch}/lock --log-path={scratch} "
                 "archive-get %f \"%p\"")
        argv = unixusers.run_as(spec.owner, [
            pgcluster.pg_bin("postgres"), "-D", str(scratch), "-p", str(port), "-k", str(sock),
            "-c", "listen_addresses=127.0.0.1", "-c", "archive_mode=off",
            "-c", f"restore_command={fetch}",
            "-c", "logging_collector=off", "-c", "shared_buffers=16MB"])
        with (scratch / "postgres.log").open("ab") as log_file:
            proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=str(scratch))
        test_spec = pgcluster.ClusterSpec(datadir=scratch, port=port, owner=spec.owner,
                                          size=spec.size, socket_dir=sock)
        deadline = time.monotonic() + 600
        while not pgcluster.is_ready(test_spec):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (scratch / "postgres.log").read_text(errors="replace").splitlines()
                raise Unavailable("the restored copy did not start: " + " | ".join(
                    line for line in tail if "FATAL" in line or "ERROR" in line)[-800:])
            time.sleep(0.1)
        tables, rows = _read_everything(test_spec)
        found = ""
        files_dir: Path | None = None
        if restic is not None:
            latest = files.pick(restic.snapshots(), label=None, target=None)
            if latest is not None:
                files_dir = scratch / "files"
                restic.restore_into(latest.id, files_dir)
                count, size = files.count(files_dir)
                found = f", {count} files ({size / 2**20:.1f} MiB) restored from snapshot " \
                        f"{latest.id[:8]}"
        smoke = _smoke_check(p, test_spec, scratch, files_dir, releases_root)
        return (f"ok: {tables} tables, {rows} rows read from the restored copy{found}{smoke} "
                f"in {time.monotonic() - started:.1f} s")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(sock, ignore_errors=True)


SMOKE_TIMEOUT = 300  # seconds the app's smoke check may take


def _smoke_check(p: DesiredPlatform, copy: pgcluster.ClusterSpec, scratch: Path,
                 files_dir: Path | None, releases_root: Path | None) -> str:
    """The serving release's `[backup] smoke` command, as the platform's user in that
    release's environment, against the restored copy (DATABASE_URL to the copy,
    TENANTRY_FILES_DIR to the restored files). "" when the app declares none."""
    slot = p.slots.get(p.route.slot) if p.route is not None else None
    release = p.release(slot.release_id) if slot is not None else \
        (p.releases[-1] if p.releases else None)
    command = release.manifest.smoke_command if release is not None else None
    if release is None or not command or releases_root is None:
        return ""
    rpath = releases.release_dir(releases_root, release.digest)
    db = p.database
    env = {**releases.process_env(rpath), "HOME": str(scratch),
           "TENANTRY_PLATFORM": f"{p.isv}/{p.name}",
           "TENANTRY_RELEASE": f"{release.app}@{release.version}",
           "DATABASE_URL": pgcluster.database_url(role=db.role,
                                                  password=db.password.get_secret_value(),
                                                  dbname=db.dbname, port=copy.port)}
    if files_dir is not None:
        env["TENANTRY_FILES_DIR"] = str(files_dir)
    try:
        done = subprocess.run(unixusers.run_as(copy.owner, command), env=env,
                              cwd=releases.app_dir(rpath), capture_output=True, text=True,
                              timeout=SMOKE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"the app's smoke check ({' '.join(command)}) did not finish "
                          f"within {SMOKE_TIMEOUT} s") from None
    except OSError as exc:
        raise Unavailable(f"the app's smoke check ({' '.join(command)}) did not run: "
                          f"{exc.strerror}") from None
    said = (done.stdout.strip().splitlines() or [""])[-1][:300]
    if done.returncode != 0:
        raise Unavailable(f"the app's smoke check ({' '.join(command)}) failed "
                          f"({done.returncode}): " + _last_error(done.stderr or done.stdout))
    return f"; the app's smoke check passed ({said})" if said else \
        "; the app's smoke check passed"


def _read_everything(spec: pgcluster.ClusterSpec) -> tuple[int, int]:
    """Every table of every database, counted (after the replay ended)."""
    tables = rows = 0
    deadline = time.monotonic() + 600
    with psycopg.connect(host=str(spec.socket_dir), port=spec.port, user=pgcluster.SUPERUSER,
                         dbname="postgres", autocommit=True, connect_timeout=10) as conn:
        while conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,):
            if time.monotonic() > deadline:
                raise Unavailable("the restored copy was still replaying WAL after 600 s")
            time.sleep(0.1)
        names = [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname")]
    for name in names:
        with psycopg.connect(host=str(spec.socket_dir), port=spec.port,
                             user=pgcluster.SUPERUSER, dbname=name, autocommit=True,
                             connect_timeout=10) as conn:
            found = conn.execute(
                "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) "
                "FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
            ).fetchall()
            for (table,) in found:
                try:
                    counted = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
                except psycopg.Error as exc:
                    raise Unavailable(f"table {table} of database {name} does not read: "
                                      f"{exc.diag.message_primary or type(exc).__name__}"
                                      ) from None
                tables += 1
                rows += int(counted[0]) if counted else 0
    return tables, rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _last_error(text: str) -> str:
    """pgBackRest's message, without the secrets it never prints anyway."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-3:])[-800:] or "no output"


def parse_info(text: str, stanza: str) -> list[BackupInfo]:
    """The backups of `pgbackrest info --output=json`, oldest first."""
    try:
        doc = json.loads(text or "[]")
    except ValueError:
        raise Unavailable("pgbackrest info: not JSON") from None
    found = []
    for entry in doc:
        if entry.get("name") != stanza:
            continue
        status = entry.get("status") or {}
        if status.get("code") == 99:  # "other": the repository could not be read at all
            reasons = [r.get("status", {}).get("message", "") for r in entry.get("repo", [])
                       if r.get("status", {}).get("code")]
            raise Unavailable("pgbackrest info: " + ("; ".join(r for r in reasons if r)
                                                      or status.get("message", "error")))
        for b in entry.get("backup", []):
            info = b.get("info", {})
            found.append(BackupInfo(
                label=b["label"], type=b["type"],
                started_at=float(b["timestamp"]["start"]),
                finished_at=float(b["timestamp"]["stop"]),
                size=int(info.get("size", 0)),
                stored=int(info.get("repository", {}).get("delta", 0)),
                wal_start=str(b.get("archive", {}).get("start") or ""),
                wal_stop=str(b.get("archive", {}).get("stop") or "")))
    return sorted(found, key=lambda b: b.started_at)


Archiver = tuple[float | None, str | None]  # last archived (Unix time), last failure after it


def archiver(spec: pgcluster.ClusterSpec) -> Archiver | None:
    """pg_stat_archiver: when a segment was last archived, and the last failure after it;
    None when the cluster could not be asked."""
    with contextlib.suppress(psycopg.Error, OSError):
        with psycopg.connect(host=str(spec.socket_dir), port=spec.port,
                             user=pgcluster.SUPERUSER, dbname="postgres",
                             connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM last_archived_time), last_failed_wal, "
                "extract(epoch FROM last_failed_time) FROM pg_stat_archiver").fetchone()
        if row is not None:
            archived = float(row[0]) if row[0] is not None else None
            failed = float(row[2]) if row[2] is not None else None
            error = None
            if failed is not None and (archived is None or failed > archived):
                error = f"archiving WAL segment {row[1]} failed at " \
                        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(failed))}"
            return archived, error
    return None


class ArchiverCache:
    """pg_stat_archiver, asked only when it may have moved since the last answer.

    Asking costs a connection: a backend forked, authenticated and gone, in the agent and in
    the cluster, for every platform every observation. The archiver's state moves only with
    pg_wal/archive_status: a segment ready (`X.ready` appears), archived (renamed `X.done`),
    or failing (only while some `X.ready` waits). So when no segment waits and the folder is
    as it was at the last answer, that answer still holds, if the folder had settled
    (`_settled`) when it was given.
    """

    def __init__(self, ask: Callable[[pgcluster.ClusterSpec], Archiver | None] = archiver,
                 clock: Callable[[], float] = time.time) -> None:
        self._ask, self._clock = ask, clock
        self._known: dict[Path, tuple[int, Archiver]] = {}  # datadir -> (folder mtime, answer)

    def of(self, spec: pgcluster.ClusterSpec) -> Archiver:
        folder = spec.datadir / "pg_wal" / "archive_status"
        try:
            mtime = folder.stat().st_mtime_ns
            waiting = any(e.name.endswith(".ready") for e in os.scandir(folder))
        except OSError:
            mtime, waiting = None, True
        known = self._known.get(spec.datadir)
        if known is not None and not waiting and known[0] == mtime:
            return known[1]
        answer = self._ask(spec)
        if answer is None:
            self._known.pop(spec.datadir, None)
            return None, None
        if mtime is not None and not waiting and _settled(mtime, self._clock()):
            self._known[spec.datadir] = (mtime, answer)
        else:
            self._known.pop(spec.datadir, None)
        return answer
