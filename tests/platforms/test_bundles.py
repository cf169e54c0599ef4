"""Bundle validation and canonical storage, on real directories and tarballs."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tenantry.core.errors import InvalidInput
from tenantry.platforms.bundles import (
    extract_bundle,
    parse_manifest,
    read_manifest,
    store_bundle,
)

GOOD = """\
[app]
name = "bodyshop"
version = "1.0.0"

[processes]
web = "python -m bodyshop.server --workers '2'"
worker = "python -m bodyshop.worker"

[release]
command = "python -m bodyshop.migrate"

[health]
path = "/health"

[python]
requirements = "requirements.txt"
wheels = "wheels"
"""


def test_good_manifest_parses() -> None:
    m = parse_manifest(GOOD)
    assert m.name == "bodyshop" and m.version == "1.0.0"
    assert m.processes["web"] == ["python", "-m", "bodyshop.server", "--workers", "2"]
    assert m.release_command == ["python", "-m", "bodyshop.migrate"]
    assert (m.health_path, m.requirements, m.wheels) == ("/health", "requirements.txt", "wheels")
    assert m.smoke_command is None  # optional: restore tests then read every table only
    smoke = parse_manifest(GOOD + '\n[backup]\nsmoke = "python -m bodyshop.smoke"\n')
    assert smoke.smoke_command == ["python", "-m", "bodyshop.smoke"]
    assert m.restart_after is None  # a hung process is left to the monitoring
    lively = parse_manifest(GOOD.replace('path = "/health"',
                                         'path = "/health"\nrestart_after = 30'))
    assert lively.restart_after == 30


def _without(section: str) -> str:
    blocks = GOOD.split("\n\n")
    return "\n\n".join(b for b in blocks if not b.startswith(f"[{section}]"))


BAD_MANIFESTS = [
    ("not toml [", "manifest"),
    (GOOD + "\n[extra]\nx = 1\n", "manifest.extra"),
    (GOOD.replace('version = "1.0.0"', 'version = "1.0.0"\ncolour = "red"'), "manifest.app.colour"),
    (GOOD.replace('name = "bodyshop"', 'name = "Body_Shop"'), "manifest.app.name"),
    (GOOD.replace('name = "bodyshop"', 'name = "-shop"'), "manifest.app.name"),
    (GOOD.replace('name = "bodyshop"', f'name = "{"a" * 41}"'), "manifest.app.name"),
    (GOOD.replace('name = "bodyshop"\n', ""), "manifest.app.name"),
    (GOOD.replace('version = "1.0.0"', 'version = "one"'), "manifest.app.version"),
    (GOOD.replace('version = "1.0.0"', 'version = "1.0"'), "manifest.app.version"),
    (GOOD.replace('version = "1.0.0"', "version = 1"), "manifest.app.version"),
    (GOOD.replace("web = ", "site = "), "manifest.processes.web"),
    (
        GOOD.replace("web = \"python -m bodyshop.server --workers '2'\"", 'web = "  "'),
        "manifest.processes.web",
    ),
    (
        GOOD.replace('web = "python -m bodyshop.server', "web = \"python 'unclosed"),
        "manifest.processes.web",
    ),
    (GOOD.replace("worker =", "Bad_Name ="), "manifest.processes.Bad_Name"),
    (
        GOOD.replace("web = \"python -m bodyshop.server --workers '2'\"", "web = 3"),
        "manifest.processes.web",
    ),
    (GOOD.replace('command = "python', 'command = ["python'), "manifest"),
    (
        GOOD.replace('command = "python -m bodyshop.migrate"', "command = 1"),
        "manifest.release.command",
    ),
    (GOOD.replace('path = "/health"', 'path = "health"'), "manifest.health.path"),
    (_without("health"), "manifest.health"),
    (_without("processes"), "manifest.processes"),
    (
        GOOD.replace('requirements = "requirements.txt"', 'requirements = "/etc/passwd"'),
        "manifest.python.requirements",
    ),
    (GOOD.replace('wheels = "wheels"', 'wheels = "../wheels"'), "manifest.python.wheels"),
    (GOOD.replace('wheels = "wheels"', 'wheelz = "wheels"'), "manifest.python.wheelz"),
    ('python = "x"\n' + GOOD.split("[python]")[0], "manifest.python"),
    (GOOD + '\n[backup]\nsmoke = ""\n', "manifest.backup.smoke"),
    (GOOD.replace('path = "/health"', 'path = "/health"\nrestart_after = 1'),
     "manifest.health.restart_after"),
    (GOOD.replace('path = "/health"', 'path = "/health"\nrestart_after = "10s"'),
     "manifest.health.restart_after"),
    (GOOD.replace('path = "/health"', 'path = "/health"\nrestart_after = true'),
     "manifest.health.restart_after"),
    (GOOD + '\n[backup]\nsmoke = 1\n', "manifest.backup.smoke"),
    (GOOD + '\n[backup]\nsmok = "x"\n', "manifest.backup.smok"),
]


@pytest.mark.parametrize(("text", "field"), BAD_MANIFESTS)
def test_bad_manifest_names_its_field(text: str, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_manifest(text)
    assert err.value.field == field, err.value.message


def _bundle_dir(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "tenantry.toml").write_text(GOOD)
    (root / "requirements.txt").write_text("psycopg==3.3.9\n")
    (root / "wheels").mkdir()
    (root / "wheels" / "x-1-py3-none-any.whl").write_bytes(b"wheel")
    (root / "app").mkdir()
    (root / "app" / "main.py").write_text("print('hi')\n")
    (root / "bin").mkdir()
    (root / "bin" / "run").write_text("#!/bin/sh\n")
    (root / "bin" / "run").chmod(0o700)
    (root / "app" / "link.py").symlink_to("main.py")
    return root


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _special(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info, None


MANIFEST_MIN = GOOD.split("[python]")[0].encode()

BAD_TARS = [
    ("traversal", [_file("tenantry.toml", MANIFEST_MIN), _file("../evil", b"x")]),
    ("traversal-inner", [_file("tenantry.toml", MANIFEST_MIN), _file("a/../../evil", b"x")]),
    ("absolute", [_file("tenantry.toml", MANIFEST_MIN), _file("/etc/evil", b"x")]),
    ("symlink-up", [_file("tenantry.toml", MANIFEST_MIN), _special("up", tarfile.SYMTYPE, "../x")]),
    (
        "symlink-abs",
        [_file("tenantry.toml", MANIFEST_MIN), _special("etc", tarfile.SYMTYPE, "/etc")],
    ),
    (
        "symlink-via-symlink",
        [
            _file("tenantry.toml", MANIFEST_MIN),
            _special("d", tarfile.DIRTYPE),
            _special("d/here", tarfile.SYMTYPE, "."),
            _special("d/out", tarfile.SYMTYPE, "here/../../.."),
        ],
    ),
    (
        "write-through-symlink",
        [
            _file("tenantry.toml", MANIFEST_MIN),
            _special("sub", tarfile.SYMTYPE, "."),
            _file("sub/x", b"x"),
        ],
    ),
    (
        "hardlink-out",
        [_file("tenantry.toml", MANIFEST_MIN), _special("h", tarfile.LNKTYPE, "../etc/passwd")],
    ),
    (
        "hardlink-abs",
        [_file("tenantry.toml", MANIFEST_MIN), _special("h", tarfile.LNKTYPE, "/etc/passwd")],
    ),
    ("chardev", [_file("tenantry.toml", MANIFEST_MIN), _special("dev", tarfile.CHRTYPE)]),
    ("blockdev", [_file("tenantry.toml", MANIFEST_MIN), _special("dev", tarfile.BLKTYPE)]),
    ("fifo", [_file("tenantry.toml", MANIFEST_MIN), _special("fifo", tarfile.FIFOTYPE)]),
    ("no-manifest", [_file("app.py", b"x")]),
    ("manifest-two-deep", [_file("a/b/tenantry.toml", MANIFEST_MIN)]),
    ("duplicate", [_file("tenantry.toml", MANIFEST_MIN), _file("x", b"1"), _file("./x", b"2")]),
]


@pytest.mark.parametrize(("name", "members"), BAD_TARS, ids=[b[0] for b in BAD_TARS])
def test_bad_archives_are_refused_and_nothing_is_written(
    tmp_path: Path, name: str, members: list[tuple[tarfile.TarInfo, bytes | None]]
) -> None:
    tarball = _tar(tmp_path / f"{name}.tar.gz", members)
    store = tmp_path / "store"
    with pytest.raises(InvalidInput) as err:
        store_bundle(tarball, store)
    assert err.value.field == "bundle", err.value.message
    assert not list(store.glob("*.tar.gz"))
    with pytest.raises(InvalidInput):
        extract_bundle(tarball, tmp_path / "out")
    assert not (tmp_path / "evil").exists()


def test_missing_referenced_file_names_the_manifest_field(tmp_path: Path) -> None:
    root = _bundle_dir(tmp_path / "b")
    (root / "requirements.txt").unlink()
    with pytest.raises(InvalidInput) as err:
        store_bundle(root, tmp_path / "store")
    assert err.value.field == "manifest.python.requirements"


def test_special_file_in_directory_is_refused(tmp_path: Path) -> None:
    import os

    root = _bundle_dir(tmp_path / "b")
    os.mkfifo(root / "app" / "pipe")
    with pytest.raises(InvalidInput) as err:
        store_bundle(root, tmp_path / "store")
    assert err.value.field == "bundle"


def test_symlink_escape_in_directory_is_refused(tmp_path: Path) -> None:
    root = _bundle_dir(tmp_path / "b")
    (root / "app" / "secrets").symlink_to("../../..")
    with pytest.raises(InvalidInput) as err:
        store_bundle(root, tmp_path / "store")
    assert err.value.field == "bundle"


def test_same_content_same_digest_from_dir_and_tarballs(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = store_bundle(_bundle_dir(tmp_path / "one"), store)
    again = store_bundle(tmp_path / "one", store)
    assert again == first
    assert first.digest == "sha256:" + first.path.name.removesuffix(".tar.gz")
    assert first.path.parent == store and len(list(store.iterdir())) == 1

    # Same content written later (other mtimes), and inside one top-level directory.
    other = _bundle_dir(tmp_path / "two" / "bodyshop-1.0.0")
    tarball = tmp_path / "two.tgz"
    with tarfile.open(tarball, "w:gz") as tf:
        tf.add(other, arcname="bodyshop-1.0.0")
    assert store_bundle(tarball, store).digest == first.digest
    assert store_bundle(tmp_path / "two", store).digest == first.digest
    # The stored canonical tarball is itself a valid source and maps to itself.
    assert store_bundle(first.path, store).digest == first.digest

    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tf:
        tf.add(tmp_path / "one", arcname=".")
    assert store_bundle(plain, store).digest == first.digest
    assert [p.name for p in store.iterdir()] == [first.path.name]

    (tmp_path / "one" / "app" / "main.py").write_text("print('changed')\n")
    assert store_bundle(tmp_path / "one", store).digest != first.digest


def test_canonical_archive_is_normalised(tmp_path: Path) -> None:
    stored = store_bundle(_bundle_dir(tmp_path / "b"), tmp_path / "store")
    with tarfile.open(stored.path) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    modes = {m.name: m.mode for m in members}
    assert modes["bin/run"] == 0o755 and modes["app/main.py"] == 0o644 and modes["app"] == 0o755
    assert stored.path.read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime


def test_read_manifest_and_extract(tmp_path: Path) -> None:
    stored = store_bundle(_bundle_dir(tmp_path / "b"), tmp_path / "store")
    assert read_manifest(stored.path) == stored.manifest
    out = tmp_path / "out"
    extract_bundle(stored.path, out)
    assert (out / "tenantry.toml").read_text() == GOOD
    assert (out / "app" / "link.py").is_symlink()
    assert (out / "app" / "link.py").read_text() == "print('hi')\n"
    assert (out / "bin" / "run").stat().st_mode & 0o777 == 0o755
    with pytest.raises(InvalidInput):
        extract_bundle(stored.path, out)  # not empty any more


def test_hardlink_inside_is_kept_as_a_copy(tmp_path: Path) -> None:
    tarball = _tar(
        tmp_path / "h.tar.gz",
        [
            _file("tenantry.toml", MANIFEST_MIN),
            _file("a.txt", b"same"),
            _special("b.txt", tarfile.LNKTYPE, "a.txt"),
        ],
    )
    out = tmp_path / "out"
    extract_bundle(tarball, out)
    assert (out / "b.txt").read_bytes() == b"same"


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball at all")
    with pytest.raises(InvalidInput) as err:
        store_bundle(junk, tmp_path / "store")
    assert err.value.field == "bundle"
    with pytest.raises(InvalidInput):
        store_bundle(tmp_path / "missing", tmp_path / "store")
