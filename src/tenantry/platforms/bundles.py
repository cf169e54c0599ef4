"""Application bundles: the `tenantry.toml` manifest, validation and content-addressed storage.

A bundle is a directory or a tarball holding `tenantry.toml` at its top (or inside one
top-level directory) next to the application code and its wheels. `store_bundle` checks it
and rewrites it as a canonical tar.gz — sorted entries, zeroed times and owners, normalised
modes — so that the same content always has the same sha256 digest, and a re-upload is a
no-op. `extract_bundle` unpacks one with the same checks, so a stored bundle can never write
outside its destination.

Errors are `InvalidInput` with `field="bundle"` for archive problems and
`field="manifest.<section>.<key>"` for manifest problems.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import posixpath
import re
import shlex
import shutil
import stat
import tarfile
import tempfile
import tomllib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict

from tenantry.core.errors import InvalidInput

MANIFEST_NAME = "tenantry.toml"
MAX_BUNDLE_BYTES = 512 * 1024 * 1024
MAX_MANIFEST_BYTES = 64 * 1024
MAX_COMMAND_CHARS = 4096

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


class Manifest(BaseModel):
    """What `tenantry.toml` declares; commands are argv lists, already split."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    processes: dict[str, list[str]]
    release_command: list[str] | None
    health_path: str
    requirements: str | None
    wheels: str | None
    # run against each restore test's copy (DATABASE_URL, TENANTRY_FILES_DIR); 0 = sound
    smoke_command: list[str] | None = None
    # a web process that answered its health check and then has not for this many seconds
    # is hung: the agent kills it and supervisord starts it again (None: never)
    restart_after: int | None = None


@dataclass(frozen=True)
class StoredBundle:
    manifest: Manifest
    digest: str  # "sha256:<hex>"
    path: Path  # the stored canonical .tar.gz


# --- manifest -----------------------------------------------------------------------------

_SECTIONS: dict[str, set[str] | None] = {
    "app": {"name", "version"},
    "processes": None,  # any DNS-label keys
    "release": {"command"},
    "health": {"path", "restart_after"},
    "python": {"requirements", "wheels"},
    "backup": {"smoke"},
}
_REQUIRED_SECTIONS = ("app", "processes", "health")


def parse_manifest(text: str) -> Manifest:
    """Parse and validate `tenantry.toml`; every error names the offending field."""
    if len(text.encode()) > MAX_MANIFEST_BYTES:
        raise InvalidInput("manifest is larger than 64 KiB", field="manifest")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"manifest is not valid TOML: {exc}", field="manifest") from exc

    for section, value in data.items():
        if section not in _SECTIONS:
            raise InvalidInput(f"unknown section [{section}]", field=f"manifest.{section}")
        if not isinstance(value, dict):
            raise InvalidInput(f"[{section}] must be a table", field=f"manifest.{section}")
        allowed = _SECTIONS[section]
        for key in value:
            if allowed is not None and key not in allowed:
                raise InvalidInput(
                    f"unknown key {key!r} in [{section}]", field=f"manifest.{section}.{key}"
                )
    for section in _REQUIRED_SECTIONS:
        if section not in data:
            raise InvalidInput(f"section [{section}] is required", field=f"manifest.{section}")

    app = data["app"]
    name = _string(app, "app", "name", required=True)
    if not _DNS_LABEL.match(name):
        raise InvalidInput(
            "app name must be a DNS label: 1-40 of a-z, 0-9 and '-', not starting or ending"
            " with '-'",
            field="manifest.app.name",
        )
    version = _string(app, "app", "version", required=True)
    if len(version) > 40 or not _VERSION.match(version):
        raise InvalidInput(
            "version must look like 1.2.3 (optionally -suffix or +build), at most 40 chars",
            field="manifest.app.version",
        )

    processes: dict[str, list[str]] = {}
    for proc, command in data["processes"].items():
        if not _DNS_LABEL.match(proc):
            raise InvalidInput(
                f"process name {proc!r} must be a DNS label", field=f"manifest.processes.{proc}"
            )
        processes[proc] = _command(command, f"manifest.processes.{proc}")
    if "web" not in processes:
        raise InvalidInput("a `web` process is required", field="manifest.processes.web")

    release = data.get("release", {})
    release_command = (
        _command(release["command"], "manifest.release.command") if "command" in release else None
    )

    health_path = _string(data["health"], "health", "path", required=True)
    if not health_path.startswith("/") or any(c.isspace() for c in health_path):
        raise InvalidInput(
            "health path must start with '/' and contain no spaces", field="manifest.health.path"
        )

    restart_after = data["health"].get("restart_after")
    if restart_after is not None and (isinstance(restart_after, bool) or
                                      not isinstance(restart_after, int) or
                                      not 3 <= restart_after <= 3600):
        raise InvalidInput("health.restart_after must be whole seconds from 3 to 3600 (leave "
                           "it out to never restart a hung process)",
                           field="manifest.health.restart_after")

    python = data.get("python", {})
    requirements = _relative_path(python, "requirements")
    wheels = _relative_path(python, "wheels")
    backup = data.get("backup", {})
    smoke = _command(backup["smoke"], "manifest.backup.smoke") if "smoke" in backup else None

    return Manifest(
        name=name,
        version=version,
        processes=processes,
        release_command=release_command,
        health_path=health_path,
        requirements=requirements,
        wheels=wheels,
        smoke_command=smoke,
        restart_after=restart_after,
    )


def _string(table: dict[str, Any], section: str, key: str, *, required: bool) -> str:
    field = f"manifest.{section}.{key}"
    value = table.get(key)
    if value is None:
        if required:
            raise InvalidInput(f"{section}.{key} is required", field=field)
        return ""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{section}.{key} must be a non-empty string", field=field)
    return value


def _command(value: object, field: str) -> list[str]:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("command must be a non-empty string", field=field)
    if len(value) > MAX_COMMAND_CHARS:
        raise InvalidInput(f"command is longer than {MAX_COMMAND_CHARS} chars", field=field)
    try:
        argv = shlex.split(value)
    except ValueError as exc:
        raise InvalidInput(f"command cannot be split: {exc}", field=field) from exc
    if not argv:
        raise InvalidInput("command is empty", field=field)
    return argv


def _relative_path(table: dict[str, Any], key: str) -> str | None:
    field = f"manifest.python.{key}"
    if key not in table:
        return None
    value = _string(table, "python", key, required=True)
    try:
        return _normalise_name(value)
    except ValueError as exc:
        raise InvalidInput(
            f"python.{key} must be a relative path inside the bundle", field=field
        ) from exc


# --- archive scanning and validation ------------------------------------------------------

_Kind = Literal["dir", "file", "symlink", "hardlink"]


@dataclass(frozen=True)
class _Entry:
    name: str  # normalised posix path relative to the bundle root
    kind: _Kind
    size: int = 0
    executable: bool = False
    link: str = ""  # symlink target as written, or hardlink target (normalised bundle path)
    source: str = ""  # original member name or relative path in the source


def _normalise_name(raw: str) -> str:
    """'./a//b/' -> 'a/b'; refuse absolute paths, '..' and backslash tricks."""
    if raw.startswith("/") or "\\" in raw or "\x00" in raw:
        raise ValueError(raw)
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(raw)
    return "/".join(parts)


def _bad(message: str) -> InvalidInput:
    return InvalidInput(message, field="bundle")


def _scan_tar(tf: tarfile.TarFile) -> list[_Entry]:
    entries: list[_Entry] = []
    for member in tf.getmembers():
        try:
            name = _normalise_name(member.name)
        except ValueError:
            raise _bad(f"entry {member.name!r} is absolute or escapes the bundle") from None
        if member.isdir():
            entries.append(_Entry(name, "dir", source=member.name))
        elif member.isreg():
            entries.append(
                _Entry(name, "file", member.size, bool(member.mode & 0o111), source=member.name)
            )
        elif member.issym():
            entries.append(_Entry(name, "symlink", link=member.linkname, source=member.name))
        elif member.islnk():
            try:
                target = _normalise_name(member.linkname)
            except ValueError:
                raise _bad(f"hard link {member.name!r} points outside the bundle") from None
            entries.append(_Entry(name, "hardlink", link=target, source=member.name))
        else:
            raise _bad(f"entry {member.name!r} is a device, fifo or other special file")
    return entries


def _scan_dir(root: Path) -> list[_Entry]:
    entries: list[_Entry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for base in sorted(dirnames + filenames):
            path = Path(dirpath, base)
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                entries.append(_Entry(rel, "symlink", link=os.readlink(path), source=rel))
            elif stat.S_ISDIR(st.st_mode):
                entries.append(_Entry(rel, "dir", source=rel))
            elif stat.S_ISREG(st.st_mode):
                entries.append(
                    _Entry(rel, "file", st.st_size, bool(st.st_mode & 0o111), source=rel)
                )
            else:
                raise _bad(f"entry {rel!r} is a device, fifo, socket or other special file")
    return entries


def _validate(entries: list[_Entry]) -> tuple[str, list[_Entry]]:
    """Check a scanned bundle; return the prefix of the directory holding the manifest ('' or
    'top/') and the entries re-rooted there, sorted, with missing parent directories added.
    Raises InvalidInput(field="bundle")."""
    names = {e.name for e in entries if e.name}
    if MANIFEST_NAME in names:
        prefix = ""
    else:
        tops = {n.split("/", 1)[0] for n in names}
        if len(tops) == 1 and f"{next(iter(tops))}/{MANIFEST_NAME}" in names:
            prefix = next(iter(tops)) + "/"
        else:
            raise _bad(f"no {MANIFEST_NAME} at the top of the bundle")

    by_name: dict[str, _Entry] = {}
    for entry in entries:
        if not entry.name or entry.name + "/" == prefix:
            continue
        name = entry.name[len(prefix) :]
        link = entry.link
        if entry.kind == "hardlink":
            if not link.startswith(prefix):
                raise _bad(f"hard link {entry.source!r} points outside the bundle")
            link = link[len(prefix) :]
        rerooted = _Entry(name, entry.kind, entry.size, entry.executable, link, entry.source)
        previous = by_name.get(name)
        if previous is not None and not (previous.kind == entry.kind == "dir"):
            raise _bad(f"entry {entry.source!r} appears twice")
        by_name[name] = rerooted

    # Parents must be real directories: writing "a/b" through a symlink "a" is an escape route.
    for name in list(by_name):
        parent = posixpath.dirname(name)
        while parent:
            existing = by_name.get(parent)
            if existing is None:
                by_name[parent] = _Entry(parent, "dir")
            elif existing.kind != "dir":
                raise _bad(f"entry {by_name[name].source!r} lies under a non-directory {parent!r}")
            parent = posixpath.dirname(parent)

    total = 0
    for name, entry in by_name.items():
        if entry.kind == "symlink":
            if not entry.link or entry.link.startswith("/"):
                raise _bad(f"symlink {entry.source!r} has an absolute or empty target")
            if not _link_stays_inside(name, entry.link, by_name):
                raise _bad(f"symlink {entry.source!r} points outside the bundle")
        elif entry.kind == "hardlink":
            target = by_name.get(entry.link)
            if target is None or target.kind != "file":
                raise _bad(f"hard link {entry.source!r} does not point to a file in the bundle")
            total += target.size
        total += entry.size
        if total > MAX_BUNDLE_BYTES:
            raise _bad("bundle is larger than 512 MiB uncompressed")

    manifest = by_name[MANIFEST_NAME]
    if manifest.kind != "file":
        raise _bad(f"{MANIFEST_NAME} must be a regular file")
    return prefix, [by_name[n] for n in sorted(by_name)]


def _link_stays_inside(name: str, target: str, by_name: dict[str, _Entry]) -> bool:
    """Walk the target from the link's directory. Going through another symlink is refused:
    'up' after a link to '.' would leave the bundle although the text looks harmless."""
    parts = [p for p in posixpath.dirname(name).split("/") if p]
    components = [c for c in target.split("/") if c not in ("", ".")]
    for index, component in enumerate(components):
        if component == "..":
            if not parts:
                return False
            parts.pop()
            continue
        parts.append(component)
        is_last = index == len(components) - 1
        entry = by_name.get("/".join(parts))
        if not is_last and entry is not None and entry.kind == "symlink":
            return False
    return True


def _extract(tf: tarfile.TarFile, entries: Iterable[_Entry], dest: Path) -> None:
    """Write validated entries under dest. Directories first so files always have a parent;
    hard links become copies of their (already written) target."""
    ordered = sorted(entries, key=lambda e: (e.kind != "dir", e.kind == "hardlink", e.name))
    for entry in ordered:
        path = dest / entry.name
        if entry.kind == "dir":
            path.mkdir(mode=0o755, exist_ok=True)
        elif entry.kind == "file":
            src = tf.extractfile(entry.source)
            if src is None:
                raise _bad(f"cannot read entry {entry.source!r}")
            with src, open(path, "xb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
            path.chmod(0o755 if entry.executable else 0o644)
        elif entry.kind == "hardlink":
            shutil.copyfile(dest / entry.link, path)
            path.chmod((dest / entry.link).stat().st_mode & 0o777)
        else:
            os.symlink(entry.link, path)


# --- canonical archive --------------------------------------------------------------------


def _canonical_tar(root: Path, entries: list[_Entry], out: _HashingWriter) -> None:
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf,
    ):
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            path = root / entry.name
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            elif entry.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.mode = 0o777
                info.linkname = entry.link
                tf.addfile(info)
            else:
                info.type = tarfile.REGTYPE
                info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
                info.size = path.stat().st_size
                with open(path, "rb") as f:
                    tf.addfile(info, f)


class _HashingWriter:
    """File-like sink that hashes what gzip writes on its way to disk."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.target.write(data)

    def flush(self) -> None:
        self.target.flush()


def _check_references(root: Path, manifest: Manifest) -> None:
    real_root = root.resolve()
    for key, rel, want_dir in (
        ("requirements", manifest.requirements, False),
        ("wheels", manifest.wheels, True),
    ):
        if rel is None:
            continue
        path = (root / rel).resolve()
        inside = path == real_root or real_root in path.parents
        exists = path.is_dir() if want_dir else path.is_file()
        if not inside or not exists:
            kind = "directory" if want_dir else "file"
            raise InvalidInput(
                f"python.{key} {rel!r} is not a {kind} in the bundle",
                field=f"manifest.python.{key}",
            )


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _bad(f"not a readable tar archive: {exc}") from exc


def _unpack(tarball: Path, dest: Path) -> None:
    with _open_tar(tarball) as tf:
        try:
            _, entries = _validate(_scan_tar(tf))
            _extract(tf, entries, dest)
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise _bad(f"corrupt tar archive: {exc}") from exc


def store_bundle(source: Path, store_dir: Path) -> StoredBundle:
    """Validate a bundle directory or tarball and store it canonically as
    `store_dir/<sha256 hex>.tar.gz`. Storing the same content again is a no-op."""
    source = Path(source)
    store_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store_dir, prefix=".unpack-") as tmp:
        if source.is_dir():
            prefix, entries = _validate(_scan_dir(source))
            root = source / prefix if prefix else source
        elif source.is_file() and source.name.endswith(_TAR_SUFFIXES):
            root = Path(tmp)
            _unpack(source, root)
            _, entries = _validate(_scan_dir(root))
        else:
            raise _bad(f"{source} is neither a directory nor a .tar, .tar.gz or .tgz file")

        manifest = parse_manifest(_read_text(root / MANIFEST_NAME))
        _check_references(root, manifest)

        fd, tmp_name = tempfile.mkstemp(dir=store_dir, prefix=".bundle-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as raw:
                writer = _HashingWriter(raw)
                _canonical_tar(root, entries, writer)
                raw.flush()
                os.fsync(raw.fileno())
            hex_digest = writer.sha.hexdigest()
            final = store_dir / f"{hex_digest}.tar.gz"
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, final)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    return StoredBundle(manifest=manifest, digest=f"sha256:{hex_digest}", path=final)


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes()[: MAX_MANIFEST_BYTES + 1].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput("manifest is not UTF-8", field="manifest") from exc


def read_manifest(stored: Path) -> Manifest:
    """The manifest of a stored (or any) bundle tarball, without unpacking it."""
    with _open_tar(stored) as tf:
        _, entries = _validate(_scan_tar(tf))
        manifest = next(e for e in entries if e.name == MANIFEST_NAME)
        member = tf.extractfile(manifest.source)
        if member is None:
            raise _bad(f"cannot read {MANIFEST_NAME}")
        with member:
            data = member.read(MAX_MANIFEST_BYTES + 1)
    try:
        return parse_manifest(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidInput("manifest is not UTF-8", field="manifest") from exc


def extract_bundle(tarball: Path, dest: Path) -> None:
    """Unpack a bundle tarball into dest (absent or empty) with the same checks as
    `store_bundle`: nothing is written outside dest."""
    if dest.exists():
        if not dest.is_dir() or any(dest.iterdir()):
            raise InvalidInput(f"{dest} exists and is not empty", field="dest")
    else:
        dest.mkdir(parents=True, mode=0o755)
    _unpack(tarball, dest)
