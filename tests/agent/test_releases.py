"""Building the real bodyshop bundle into a release virtualenv, offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tenantry.agent.releases import app_dir, build_release, process_env, release_dir
from tenantry.core.errors import InvalidInput, Unavailable
from tenantry.platforms.bundles import StoredBundle, store_bundle

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "bodyshop"

pytestmark = pytest.mark.slow


def ensure_wheels() -> None:
    if not list((EXAMPLE / "wheels").glob("*.whl")):
        subprocess.run([REPO / "scripts" / "fetch-example-wheels", "bodyshop"], check=True)


def bodyshop_bundle(version: str, workdir: Path) -> StoredBundle:
    ensure_wheels()
    out = workdir / f"bodyshop-{version}"
    subprocess.run([sys.executable, EXAMPLE / "build.py", version, out], check=True)
    return store_bundle(out, workdir / "store")


def test_build_offline_then_noop_then_rebuild_after_crash(tmp_path: Path) -> None:
    bundle = bodyshop_bundle("1.0.0", tmp_path)
    releases = tmp_path / "releases"
    (releases / ".tmp-stale-123").mkdir(parents=True)

    path = build_release(tarball=bundle.path, digest=bundle.digest, releases_dir=releases)
    assert path == release_dir(releases, bundle.digest)
    assert (path / ".built").is_file() and not (path / ".building").exists()
    assert not (releases / ".tmp-stale-123").exists()
    assert (app_dir(path) / "tenantry.toml").is_file()

    env = {**os.environ, **process_env(path)}
    probe = "import bodyshop, psycopg; print(bodyshop.VERSION, psycopg.__version__)"
    out = subprocess.run(["python", "-c", probe], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["1.0.0", "3.3.9"], out.stderr
    assert (path / "app" / "bodyshop" / "server.py").stat().st_mode & 0o777 == 0o644
    assert (path / "venv").stat().st_mode & 0o777 == 0o755

    # Second call: nothing is rebuilt.
    marker = (path / ".built").stat().st_mtime_ns
    (path / "sentinel").write_text("kept")
    assert build_release(tarball=bundle.path, digest=bundle.digest, releases_dir=releases) == path
    assert (path / "sentinel").exists() and (path / ".built").stat().st_mtime_ns == marker

    # A build killed half-way leaves no `.built`: the next call wipes and redoes it.
    (path / ".built").unlink()
    (path / ".building").write_text("4242\n")
    shutil.rmtree(path / "venv" / "lib")
    assert build_release(tarball=bundle.path, digest=bundle.digest, releases_dir=releases) == path
    assert not (path / "sentinel").exists() and (path / ".built").is_file()
    out = subprocess.run(["python", "-c", probe], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["1.0.0", "3.3.9"], out.stderr


def test_really_killed_build_is_redone(tmp_path: Path) -> None:
    bundle = bodyshop_bundle("1.0.0", tmp_path)
    releases = tmp_path / "releases"
    code = (
        "import sys; from pathlib import Path; from tenantry.agent.releases import build_release;"
        f"build_release(tarball=Path({str(bundle.path)!r}), digest={bundle.digest!r},"
        f" releases_dir=Path({str(releases)!r}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    target = release_dir(releases, bundle.digest)
    try:
        while not (target / "venv").exists() and proc.poll() is None:
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, 9)  # the builder and its venv/pip children, mid-build
        proc.wait()
    assert not (target / ".built").exists()

    path = build_release(tarball=bundle.path, digest=bundle.digest, releases_dir=releases)
    assert (path / ".built").is_file()
    assert (path / "venv" / "bin" / "python").exists()


def test_failed_install_is_unavailable_with_pip_output(tmp_path: Path) -> None:
    ensure_wheels()
    bundle_dir = tmp_path / "b"
    subprocess.run([sys.executable, EXAMPLE / "build.py", "1.0.0", bundle_dir], check=True)
    for wheel in (bundle_dir / "wheels").glob("psycopg-*"):
        wheel.unlink()
    bundle = store_bundle(bundle_dir, tmp_path / "store")
    releases = tmp_path / "releases"
    with pytest.raises(Unavailable) as err:
        build_release(tarball=bundle.path, digest=bundle.digest, releases_dir=releases)
    assert "psycopg" in err.value.message
    assert not (release_dir(releases, bundle.digest) / ".built").exists()


def test_bad_digest_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as err:
        release_dir(tmp_path, "sha256:../../etc")
    assert err.value.field == "digest"
