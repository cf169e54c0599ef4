"""A platform's files directory and its backups with restic.

Each platform has a persistent files directory (`PLATFORM/files`, owned by the platform's
Unix user, given to the app as `TENANTRY_FILES_DIR`): what the app stores beside its
database (bodyshop keeps repair photos there). restic backs it up into the platform's
repository, beside pgBackRest's (`<repository>/files`), encrypted with the ISV's restic
password. A snapshot is taken right after each database backup and tagged with that
backup's label, so a restore brings back the files that go with the database it restores.

restic runs as the platform's user for backups and checks (it reads only that user's files),
and as root for restores (a clone reads its source's repository), with `--no-lock`: a
restore never writes into the repository.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from tenantry.agent import unixusers
from tenantry.core.crypto import write_private
from tenantry.core.errors import Unavailable
from tenantry.platforms.contract import BackupRepo, DesiredPlatform, FilesSnapshot

RESTIC = "restic"
TIMEOUT = 6 * 3600.0
CHECK_PARTS = 7  # `restic check` reads one seventh of the data each time, in turn
MARKER = ".tenantry-backup"  # in the files directory: the backup of its last snapshot


def files_dir(platform_dir: Path) -> Path:
    return platform_dir / "files"


def password_file(platform_dir: Path) -> Path:
    return platform_dir / "backup" / "restic.pass"


def location(repo: BackupRepo) -> str:
    """restic's name for the files repository inside the platform's backup repository."""
    if repo.type == "posix":
        return str(Path(repo.path) / "files")
    return f"s3:https://{repo.endpoint}/{repo.bucket}{repo.path}/files"


def configure(platform_dir: Path, p: DesiredPlatform, owner: str | None) -> None:
    """The password file (0600, the platform user's); the files directory itself is made
    with the platform's home."""
    b = p.backup
    assert b is not None and b.files_pass is not None
    path = password_file(platform_dir)
    write_private(path, b.files_pass.get_secret_value().encode())
    unixusers.chown_tree(path, owner)


class Restic:
    """restic against one repository, as one user."""

    def __init__(self, platform_dir: Path, p: DesiredPlatform, *, user: str | None,
                 repo: BackupRepo | None = None) -> None:
        b = p.backup
        assert b is not None
        self.platform_dir = platform_dir
        self.repo = repo or b.repo
        self.user = user
        self.secret = b.secret_key.get_secret_value() if b.secret_key else ""

    def run(self, args: list[str], *, timeout: float = TIMEOUT, cwd: Path | None = None,
            lock: bool = True) -> str:
        bdir = self.platform_dir / "backup"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8",
               "HOME": str(bdir), "RESTIC_REPOSITORY": location(self.repo),
               "RESTIC_PASSWORD_FILE": str(password_file(self.platform_dir)),
               "RESTIC_CACHE_DIR": str(bdir / "restic-cache")}
        opts = ["--no-lock"] if not lock else []
        if self.user is None:  # root: keep out of the platform user's cache
            opts.append("--no-cache")
        if self.repo.type == "s3":
            env["AWS_ACCESS_KEY_ID"] = self.repo.key_id or ""
            env["AWS_SECRET_ACCESS_KEY"] = self.secret
            opts += ["-o", "s3.bucket-lookup=path", "-o", f"s3.region={self.repo.region}"]
            if self.repo.ca_pem:
                opts += ["--cacert", str(bdir / "ca.pem")]
        argv = unixusers.run_as(self.user, [RESTIC, *opts, *args])
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  env=env, cwd=str(cwd or self.platform_dir), check=False)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"restic {args[0]} did not finish within {int(timeout)} s"
                              ) from None
        if done.returncode != 0:
            raise Unavailable(f"restic {args[0]} failed ({done.returncode}): "
                              + _last_error(done.stderr or done.stdout))
        return done.stdout

    def ensure_repository(self) -> None:
        """Make the repository unless it is there (restic's own config object says so)."""
        try:
            self.run(["cat", "config"], timeout=120, lock=False)
        except Unavailable as exc:
            if "config" not in str(exc) and "exist" not in str(exc):
                raise
            self.run(["init"], timeout=120)

    def snapshot(self, label: str) -> tuple[str, int, int]:
        """The files directory as it is now, tagged with the database backup's label:
        (snapshot id, files, bytes). A small marker file names the backup, so that no
        snapshot is empty (restic refuses those, and an empty directory is a state too)."""
        marker = files_dir(self.platform_dir) / MARKER
        marker.write_text(json.dumps({"label": label, "time": time.time()}) + "\n")
        unixusers.chown_tree(marker, self.user)
        out = self.run(["backup", "--host", "tenantry", "--tag", f"label={label}", "--json",
                        "."], cwd=files_dir(self.platform_dir))
        for line in reversed(out.splitlines()):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("message_type") == "summary":
                return (str(doc["snapshot_id"]), int(doc.get("total_files_processed", 0)),
                        int(doc.get("total_bytes_processed", 0)))
        raise Unavailable("restic backup: no summary in its output")

    def snapshots(self, sizes: dict[str, list[int]] | None = None) -> list[FilesSnapshot]:
        return parse_snapshots(self.run(["snapshots", "--json"], timeout=300, lock=False),
                               sizes)

    def check(self, part: int) -> None:
        self.run(["check", f"--read-data-subset={part}/{CHECK_PARTS}"])

    def forget(self, labels: list[str]) -> None:
        if not labels:
            return
        args = ["forget", "--prune"]
        for label in labels:
            args += ["--tag", f"label={label}"]
        self.run(args)

    def restore_into(self, snapshot: str, target: Path) -> None:
        self.run(["restore", snapshot, "--target", str(target)], lock=False)


def parse_snapshots(text: str, sizes: dict[str, list[int]] | None = None
                    ) -> list[FilesSnapshot]:
    """restic's snapshots, oldest first; `sizes` (snapshot id -> [files, bytes]) is what
    each backup's summary said (restic 0.14 keeps no summary in the snapshot)."""
    try:
        doc = json.loads(text or "[]")
    except ValueError:
        raise Unavailable("restic snapshots: not JSON") from None
    found = []
    for s in doc or []:
        label = next((t.removeprefix("label=") for t in s.get("tags") or []
                      if t.startswith("label=")), None)
        known = (sizes or {}).get(s["id"]) or (sizes or {}).get(s.get("short_id", ""))
        files, size = (known[0], known[1]) if known else (0, 0)
        found.append(FilesSnapshot(id=s["id"], time=_unix(s["time"]), label=label,
                                   files=files, size=size))
    return sorted(found, key=lambda s: s.time)


def _unix(text: str) -> float:
    """restic's RFC 3339 time, nanoseconds and all, as Unix time."""
    head, _, rest = text.partition(".")
    if not rest:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    digits = "".join(c for c in rest if c.isdigit())
    zone = rest[len(digits):]
    base = dt.datetime.fromisoformat(head + (zone.replace("Z", "+00:00") or "+00:00"))
    return base.timestamp() + float("0." + digits) if digits else base.timestamp()


def pick(snapshots: list[FilesSnapshot], *, label: str | None, target: float | None
         ) -> FilesSnapshot | None:
    """The snapshot a restore brings back: the one taken with the backup `label`; else the
    newest taken at or before `target` (files have no WAL: they come back as of the last
    snapshot before the point); else the newest of all."""
    if label is not None:
        return next((s for s in snapshots if s.label == label), None)
    if target is not None:
        before = [s for s in snapshots if s.time <= target]
        return before[-1] if before else None
    return snapshots[-1] if snapshots else None


def put_in_place(platform_dir: Path, restored: Path, owner: str | None) -> None:
    """The restored tree becomes the files directory; the one it replaces is removed."""
    unixusers.chown_tree(restored, owner)
    restored.chmod(0o750)
    live = files_dir(platform_dir)
    old = platform_dir / "files.replaced"
    shutil.rmtree(old, ignore_errors=True)
    if live.exists():
        live.rename(old)
    restored.rename(live)
    shutil.rmtree(old, ignore_errors=True)


def count(tree: Path) -> tuple[int, int]:
    """The app's files under `tree` and their bytes (tenantry's marker left out)."""
    files = size = 0
    for dirpath, _, names in os.walk(tree):
        for name in names:
            if name == MARKER and Path(dirpath) == tree:
                continue
            files += 1
            size += (Path(dirpath) / name).lstat().st_size
    return files, size


def _last_error(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-3:])[-800:] or "no output"
