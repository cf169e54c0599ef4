"""Build a stored bundle into a runnable release on this host: code plus its own virtualenv.

A release lives at `releases_dir/<sha256 hex>/` with `app/` (the unpacked bundle) and
`venv/`, and is shared read-only by every platform on the host that runs that bundle.

It is built in place at its final path, not in a temporary directory that is renamed
afterwards, because a virtualenv is not relocatable (script shebangs hold its absolute path).
Crash safety comes from the markers instead: `.built` is written last, so a directory
without it is a leftover of an interrupted build and is wiped and built again. An flock on
`releases_dir/.<hex>.lock` keeps two builders of the same release from racing.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tenantry.core.errors import InvalidInput, Unavailable
from tenantry.platforms.bundles import extract_bundle, read_manifest

BUILT = ".built"
BUILDING = ".building"
PIP_TIMEOUT_SECONDS = 600
_OUTPUT_LINES = 15


def _hex(digest: str) -> str:
    hex_part = digest.removeprefix("sha256:")
    if len(hex_part) != 64 or any(c not in "0123456789abcdef" for c in hex_part):
        raise InvalidInput(f"not a sha256 digest: {digest!r}", field="digest")
    return hex_part


def release_dir(releases_dir: Path, digest: str) -> Path:
    return releases_dir / _hex(digest)


def app_dir(release_path: Path) -> Path:
    return release_path / "app"


def process_env(release_path: Path) -> dict[str, str]:
    """Environment entries that make `python` and the app's modules those of the release."""
    venv = release_path / "venv"
    return {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "VIRTUAL_ENV": str(venv),
        "PYTHONPATH": str(app_dir(release_path)),
    }


def build_release(
    *, tarball: Path, digest: str, releases_dir: Path, python: str = sys.executable
) -> Path:
    """Return the built release for `digest`, building it first if needed (idempotent)."""
    target = release_dir(releases_dir, digest)
    if (target / BUILT).exists():
        return target
    releases_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(releases_dir, 0o755)  # noqa: S103 - other platform users must traverse it
    _remove_stale_tmp(releases_dir)
    with _locked(releases_dir / f".{target.name}.lock"):
        if (target / BUILT).exists():  # another builder finished while we waited
            return target
        if target.exists():
            shutil.rmtree(target)  # an interrupted build
        target.mkdir(mode=0o755)
        (target / BUILDING).write_text(f"{os.getpid()}\n")
        _build(tarball=tarball, target=target, python=python)
        _make_world_readable(target)
        (target / BUILDING).unlink()
        _write_durably(target / BUILT, f"{digest}\n")
    return target


def _build(*, tarball: Path, target: Path, python: str) -> None:
    manifest = read_manifest(tarball)
    app = app_dir(target)
    extract_bundle(tarball, app)
    venv = target / "venv"
    _run([python, "-m", "venv", str(venv)], what="creating the virtualenv")
    if manifest.requirements is None:
        return
    command = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--no-input",
        "--disable-pip-version-check",
        "--no-cache-dir",
        "--no-index",
        "-r",
        str(app / manifest.requirements),
    ]
    if manifest.wheels is not None:
        command[-2:-2] = ["--find-links", str(app / manifest.wheels)]
    _run(command, what="installing the requirements")


def _run(command: list[str], *, what: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.pop("VIRTUAL_ENV", None)
    try:
        result = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            timeout=PIP_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"release build failed while {what}: {exc}") from exc
    if result.returncode != 0:
        tail = "\n".join(result.stdout.strip().splitlines()[-_OUTPUT_LINES:])
        raise Unavailable(f"release build failed while {what} (exit {result.returncode}):\n{tail}")


def _make_world_readable(root: Path) -> None:
    """Platforms run as different Unix users and share the release read-only."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)  # noqa: S103 - shared read-only by design
        for name in filenames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, 0o755 if mode & 0o111 else 0o644)


def _remove_stale_tmp(releases_dir: Path) -> None:
    """Leftovers of older builders that worked in `.tmp-*` directories."""
    for entry in releases_dir.glob(".tmp-*"):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def _write_durably(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
