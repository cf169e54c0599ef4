"""The bodyshop example end to end: real PostgreSQL, real bundles, real release venvs."""

from __future__ import annotations

import http.client
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tenantry.agent.releases import build_release, process_env
from tenantry.platforms.bundles import store_bundle

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "bodyshop"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "tenantry-test"

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster owned by an unprivileged user; stopped by its PID."""
    if not (PG_BIN / "postgres").exists():
        pytest.skip("PostgreSQL 15 binaries are not installed")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", PG_USER], check=True)
        user = pwd.getpwnam(PG_USER)
        as_user = ["runuser", "-u", PG_USER, "--"]
    else:
        user = pwd.getpwuid(os.getuid())
        as_user = []

    base = Path(tempfile.mkdtemp(prefix="bodyshop-pg-"))
    os.chown(base, user.pw_uid, user.pw_gid)
    superpass = secrets.token_hex(12)
    pwfile = base / "pw"
    pwfile.write_text(superpass + "\n")
    os.chown(pwfile, user.pw_uid, user.pw_gid)
    data = base / "data"
    subprocess.run(
        [*as_user, PG_BIN / "initdb", "-D", data, "-U", "postgres", f"--pwfile={pwfile}",
         "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    with open(base / "postgres.log", "wb") as pg_log:
        server = subprocess.Popen(
            [PG_BIN / "postgres", "-D", data, "-p", str(port), "-c", "listen_addresses=127.0.0.1",
             "-c", f"unix_socket_directories={base}", "-c", "fsync=off"],
            user=user.pw_uid, group=user.pw_gid, extra_groups=[],
            stdout=subprocess.DEVNULL, stderr=pg_log,
        )  # fmt: skip
    admin = f"postgresql://postgres:{superpass}@127.0.0.1:{port}/postgres"
    try:

        def ready() -> bool:
            try:
                psycopg.connect(admin, connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                assert server.poll() is None, (base / "postgres.log").read_text()
                return False

        wait_for(ready, "PostgreSQL")
        password = secrets.token_hex(12)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE bodyshop LOGIN PASSWORD '{password}'")
            conn.execute("CREATE DATABASE bodyshop OWNER bodyshop")
        yield f"postgresql://bodyshop:{password}@127.0.0.1:{port}/bodyshop"
    finally:
        server.send_signal(signal.SIGINT)  # fast shutdown
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not list((EXAMPLE / "wheels").glob("*.whl")):
        subprocess.run([REPO / "scripts" / "fetch-example-wheels", "bodyshop"], check=True)
    work = tmp_path_factory.mktemp("bodyshop")
    built = {}
    for version in ("1.0.0", "1.1.0"):
        out = work / version
        subprocess.run([sys.executable, EXAMPLE / "build.py", version, out], check=True)
        bundle = store_bundle(out, work / "store")
        assert bundle.manifest.version == version
        built[version] = build_release(
            tarball=bundle.path, digest=bundle.digest, releases_dir=work / "releases"
        )
    return built


def run_in(release: Path, url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **process_env(release), "DATABASE_URL": url}
    return subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=60)


class App:
    def __init__(self, release: Path, url: str, log: Path,
                 extra: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **process_env(release), "DATABASE_URL": url, "PORT": str(self.port),
               **(extra or {})}
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                ["python", "-m", "bodyshop.server"], env=env, stdout=out, stderr=subprocess.STDOUT
            )

        def healthy() -> bool:
            assert self.proc.poll() is None, log.read_text()
            try:
                return self.call("GET", "/health")[0] == 200
            except OSError:
                return False

        wait_for(healthy, "bodyshop health")

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, Any]:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310
        request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                status, raw, ctype = response.status, response.read(), response.headers
        except urllib.error.HTTPError as err:
            status, raw, ctype = err.code, err.read(), err.headers
        if ctype.get_content_type() == "application/json":
            return status, json.loads(raw)
        if ctype.get_content_type().startswith("image/"):
            return status, raw
        return status, raw.decode()

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(
            next(line for line in status.splitlines() if line.startswith("RssAnon")).split()[1]
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_bodyshop_lifecycle_upgrade_and_rollback(
    database_url: str, releases: dict[str, Path], tmp_path: Path
) -> None:
    v1, v11 = releases["1.0.0"], releases["1.1.0"]

    migrated = run_in(v1, database_url, "python", "-m", "bodyshop.migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "applied 0001_jobs" in migrated.stdout
    again = run_in(v1, database_url, "python", "-m", "bodyshop.migrate")
    assert again.returncode == 0 and "nothing to do" in again.stdout

    app = App(v1, database_url, tmp_path / "v1.log")
    try:
        assert app.call("GET", "/health") == (200, {"status": "ok", "version": "1.0.0"})
        status, job = app.call("POST", "/api/jobs", {"registration": "ab-12 cd", "customer": "Ann"})
        assert status == 201, job
        assert job["registration"] == "AB-12 CD" and job["stage"] == "received"
        assert "estimate" not in job and job["created_at"] and job["updated_at"]
        status, other = app.call(
            "POST", "/api/jobs", {"registration": "XY9", "customer": "<b>Bob</b>"}
        )
        assert status == 201

        for bad, field in [
            ({"customer": "Ann"}, "registration"),
            ({"registration": "A" * 17, "customer": "Ann"}, "registration"),
            ({"registration": "AB_12", "customer": "Ann"}, "registration"),
            ({"registration": "AB12", "customer": ""}, "customer"),
            ({"registration": "AB12", "customer": "x" * 201}, "customer"),
            ({"registration": "AB12", "customer": "Ann", "estimate": "10"}, "estimate"),
            ([1, 2], None),
        ]:
            status, err = app.call("POST", "/api/jobs", bad)
            assert status == 422, bad
            assert err["error"]["code"] == "invalid_input" and err["error"]["field"] == field

        for stage in ("estimate", "repair", "paint", "ready"):
            status, moved = app.call("PATCH", f"/api/jobs/{job['id']}", {"stage": stage})
            assert status == 200 and moved["stage"] == stage
        status, err = app.call("PATCH", f"/api/jobs/{job['id']}", {"stage": "washed"})
        assert status == 422 and err["error"]["field"] == "stage"
        assert app.call("PATCH", "/api/jobs/999999", {"stage": "paint"})[0] == 404
        assert app.call("GET", "/api/jobs/999999")[0] == 404
        assert app.call("GET", "/api/jobs/nope")[0] == 404
        assert app.call("GET", f"/api/jobs/{job['id']}")[1]["stage"] == "ready"

        status, listed = app.call("GET", "/api/jobs")
        assert status == 200 and [j["id"] for j in listed] == [job["id"], other["id"]]
        assert [j["id"] for j in app.call("GET", "/api/jobs?stage=ready")[1]] == [job["id"]]
        assert app.call("GET", "/api/jobs?stage=bogus")[0] == 422

        status, page = app.call("GET", "/")
        assert status == 200 and "AB-12 CD" in page
        assert "&lt;b&gt;Bob&lt;/b&gt;" in page and "<b>Bob</b>" not in page
        print(f"bodyshop private (RssAnon) memory after requests: {app.rss_kib()} KiB")
        assert app.rss_kib() < 32 * 1024  # private memory; libpq and libpython pages are shared
    finally:
        app.stop()
    log = app.log.read_text()
    assert "POST /api/jobs 201" in log and database_url.split("@")[0].split(":")[-1] not in log

    # Upgrade: 1.1.0 adds the estimate column and keeps every job.
    migrated = run_in(v11, database_url, "python", "-m", "bodyshop.migrate")
    assert migrated.returncode == 0 and "applied 0002_estimate" in migrated.stdout
    app = App(v11, database_url, tmp_path / "v11.log")
    try:
        assert app.call("GET", "/health")[1]["version"] == "1.1.0"
        status, kept = app.call("GET", f"/api/jobs/{job['id']}")
        assert status == 200 and kept["stage"] == "ready" and kept["estimate"] is None
        status, quoted = app.call(
            "POST", "/api/jobs", {"registration": "Q1", "customer": "Cy", "estimate": "1250.50"}
        )
        assert status == 201 and quoted["estimate"] == "1250.50"
        status, priced = app.call("PATCH", f"/api/jobs/{job['id']}", {"estimate": 99})
        assert status == 200 and priced["estimate"] == "99.00" and priced["stage"] == "ready"
        assert app.call("PATCH", f"/api/jobs/{job['id']}", {"estimate": -1})[0] == 422
        assert app.call("PATCH", f"/api/jobs/{job['id']}", {"estimate": "1.001"})[0] == 422
        assert len(app.call("GET", "/api/jobs")[1]) == 3
    finally:
        app.stop()

    # Rollback: 1.0.0 code runs against the 1.1.0 schema.
    old_migrate = run_in(v1, database_url, "python", "-m", "bodyshop.migrate")
    assert old_migrate.returncode == 0 and "0002_estimate" in old_migrate.stdout
    app = App(v1, database_url, tmp_path / "rollback.log")
    try:
        status, listed = app.call("GET", "/api/jobs")
        assert status == 200 and len(listed) == 3 and all("estimate" not in j for j in listed)
        status, new = app.call("POST", "/api/jobs", {"registration": "R0LL", "customer": "Di"})
        assert status == 201
        assert app.call("PATCH", f"/api/jobs/{new['id']}", {"stage": "collected"})[0] == 200
    finally:
        app.stop()


def test_requests_on_a_kept_connection_are_answered_at_once(
    database_url: str, releases: dict[str, Path], tmp_path: Path
) -> None:
    """The ingress keeps its connection to the app. With Nagle's algorithm on, a response's
    body (its second write) waited for the client to acknowledge the headers, which Linux
    delays by up to 40 ms: every request after the first on a connection took 44 ms."""
    app = App(releases["1.0.0"], database_url, tmp_path / "app.log")
    took = []
    try:
        conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
        for _ in range(10):
            started = time.monotonic()
            conn.request("GET", "/health")
            response = conn.getresponse()
            assert response.status == 200, response.read()
            assert json.loads(response.read())["status"] == "ok"
            took.append(time.monotonic() - started)
        conn.close()
    finally:
        app.stop()
    # The stall is at least 40 ms a request; an answer without it takes a few.
    assert statistics.median(took[1:]) < 0.03, [f"{t * 1000:.1f} ms" for t in took]


def test_health_is_503_without_database(releases: dict[str, Path], tmp_path: Path) -> None:
    dead = f"postgresql://nobody:secret@127.0.0.1:{free_port()}/none"
    port = free_port()
    env = {**os.environ, **process_env(releases["1.0.0"]), "DATABASE_URL": dead}
    env["PORT"] = str(port)
    proc = subprocess.Popen(
        ["python", "-m", "bodyshop.server"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and "listening" in proc.stdout.readline()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10)
        assert err.value.code == 503
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "secret" not in out

    failed = run_in(releases["1.0.0"], dead, "python", "-m", "bodyshop.migrate")
    assert failed.returncode == 1 and "cannot reach the database" in failed.stderr
    assert "secret" not in failed.stderr


def test_photos_of_a_job_are_kept_in_the_files_directory(
    database_url: str, releases: dict[str, Path], tmp_path: Path
) -> None:
    """POST /api/jobs/{id}/photos stores the image under TENANTRY_FILES_DIR (what restic
    backs up); bad images and unknown jobs are refused with nothing written."""
    assert run_in(releases["1.0.0"], database_url, "python", "-m", "bodyshop.migrate"
                  ).returncode == 0
    files = tmp_path / "files"
    files.mkdir()
    app = App(releases["1.0.0"], database_url, tmp_path / "photos.log",
              {"TENANTRY_FILES_DIR": str(files)})
    try:
        status, job = app.call("POST", "/api/jobs", {"registration": "PH0", "customer": "Ed"})
        assert status == 201
        png = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(3000)
        status, photo = app.call("POST", f"/api/jobs/{job['id']}/photos", raw=png,
                                 content_type="image/png")
        assert status == 201, photo
        assert photo["size"] == len(png) and photo["type"] == "image/png"
        stored = files / "photos" / str(job["id"]) / photo["name"]
        assert stored.read_bytes() == png
        status, listed = app.call("GET", f"/api/jobs/{job['id']}/photos")
        assert status == 200 and [p["name"] for p in listed] == [photo["name"]]
        assert app.call("GET", photo["url"]) == (200, png)

        for raw, ctype, field in [(b"", "image/png", "body"),
                                  (b"GIF89a" + b"x" * 50, "image/gif", "body"),
                                  (png, "image/jpeg", "Content-Type")]:
            status, err = app.call("POST", f"/api/jobs/{job['id']}/photos", raw=raw,
                                   content_type=ctype)
            assert status == 422 and err["error"]["field"] == field, err
        assert app.call("POST", "/api/jobs/999999/photos", raw=png,
                        content_type="image/png")[0] == 404
        assert app.call("GET", f"/api/jobs/{job['id']}/photos/..%2F..%2Fpw")[0] == 404
        status, err = app.call("POST", f"/api/jobs/{job['id']}/photos",
                               raw=b"\xff\xd8\xff" + b"0" * (10 * 2**20),
                               content_type="image/jpeg")
        assert status == 413 and err["error"]["field"] == "body"
        assert [p.name for p in stored.parent.iterdir()] == [photo["name"]]
    finally:
        app.stop()
