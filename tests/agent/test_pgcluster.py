# ruff: noqa: S105, S106  (throwaway passwords for a throwaway cluster)
from __future__ import annotations

import os
import pwd
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tenantry.agent import pgcluster, unixusers
from tenantry.agent.supervisord import SupervisordManager
from tenantry.core.errors import InvalidInput, Unavailable
from tests.conftest import wait_until

try:
    pgcluster.pg_bin("postgres")
except Unavailable:  # pragma: no cover - the project's setup installs it
    pytest.skip("PostgreSQL is not installed", allow_module_level=True)

OWNER = "tenantry-t1"
PASSWORD = "pa'ss %w0rd;\"x@y/z"


def test_database_url_quotes_the_password() -> None:
    url = pgcluster.database_url(role="app", password="a@b:c/d%", dbname="appdb", port=5433)
    assert url == "postgresql://app:a%40b%3Ac%2Fd%25@127.0.0.1:5433/appdb"


def test_sizes_and_bad_names() -> None:
    assert set(pgcluster.SIZES) == {"s", "m", "l"}
    with pytest.raises(InvalidInput):
        pgcluster.ClusterSpec(
            datadir=Path("/x"), port=5432, owner=None, size="xl", socket_dir=Path("/y")
        )


@pytest.mark.slow
def test_cluster_from_template_under_supervisord(
    supervisor: SupervisordManager, short_tmp: Path, free_port: Callable[[], int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    as_root = unixusers.running_as_root()
    owner = OWNER if as_root else None
    unixusers.ensure_user(OWNER)
    port = free_port()
    spec = pgcluster.ClusterSpec(
        datadir=short_tmp / "p1" / "data",
        port=port,
        owner=owner,
        size="s",
        socket_dir=short_tmp / "p1" / "run",
    )
    template = short_tmp / "template"
    try:
        pgcluster.init_cluster(spec, template_dir=template)
        pgcluster.init_cluster(spec, template_dir=template)  # idempotent
        assert stat.S_IMODE(spec.datadir.stat().st_mode) == 0o700
        assert stat.S_IMODE(spec.socket_dir.stat().st_mode) == 0o700

        started = time.monotonic()
        logs = short_tmp / "p1" / "logs"  # the cluster writes its log itself, as its owner
        logs.mkdir(mode=0o700)
        unixusers.chown_tree(logs, owner)
        program = pgcluster.program_spec(spec, name="pg-p1", log_file=str(logs / "pg.log"))
        supervisor.put(program)
        pgcluster.wait_ready(spec, timeout=30)
        pgcluster.ensure_database(spec, role="app", password=PASSWORD, dbname="appdb")
        pgcluster.ensure_database(spec, role="app", password=PASSWORD, dbname="appdb")
        assert time.monotonic() - started < 5

        url = pgcluster.database_url(role="app", password=PASSWORD, dbname="appdb", port=port)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("app",)
        # A small cluster's idle settings are in effect, and changing one is a reload, not a
        # restart (its program's digest stays); any other setting's change restarts it.
        def show(name: str) -> str:
            with psycopg.connect(url) as conn:
                return str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]

        assert show("autovacuum_naptime") == "5min" and show("bgwriter_delay") == "10s"
        postmaster = (spec.datadir / "postmaster.pid").read_text().split()[0]
        digest = pgcluster.restart_digest(spec)
        monkeypatch.setitem(pgcluster.SIZES, "s",
                            pgcluster.SIZES["s"] | {"autovacuum_naptime": "120"})
        assert not pgcluster.conf_current(spec)
        assert pgcluster.restart_digest(spec) == digest
        pgcluster.configure(spec)
        wait_until(lambda: show("autovacuum_naptime") == "2min", 10, "the reload")
        assert (spec.datadir / "postmaster.pid").read_text().split()[0] == postmaster
        monkeypatch.setitem(pgcluster.SIZES, "s", pgcluster.SIZES["s"] | {"max_connections": "21"})
        assert pgcluster.restart_digest(spec) != digest
        monkeypatch.undo()

        bad = pgcluster.database_url(role="app", password="wrong", dbname="appdb", port=port)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(bad)

        pgcluster.ensure_database(spec, role="other", password="o-pass", dbname="otherdb")
        other = pgcluster.database_url(role="other", password="o-pass", dbname="appdb", port=port)
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            psycopg.connect(other)
        # The superuser is only reachable over the socket, never by TCP.
        su = pgcluster.database_url(role="postgres", password="x", dbname="postgres", port=port)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(su)
        assert PASSWORD not in (short_tmp / "p1" / "logs" / "pg.log").read_text()

        if as_root:
            assert spec.datadir.stat().st_uid == pwd.getpwnam(OWNER).pw_uid
            peek = subprocess.run(
                unixusers.run_as("nobody", ["ls", str(spec.datadir)]),
                capture_output=True,
                check=False,
            )
            assert peek.returncode != 0
    finally:
        supervisor.remove("pg-p1")
        pgcluster.remove_cluster(spec)
    assert not spec.datadir.exists() and not spec.socket_dir.exists()
    if as_root:
        unixusers.remove_user(OWNER)


@pytest.mark.slow
def test_half_made_datadir_is_wiped_and_recreated(
    short_tmp: Path, free_port: Callable[[], int]
) -> None:
    spec = pgcluster.ClusterSpec(
        datadir=short_tmp / "p2" / "data",
        port=free_port(),
        owner=None,
        size="s",
        socket_dir=short_tmp / "p2" / "run",
    )
    spec.datadir.mkdir(parents=True)
    (spec.datadir / "junk").write_text("left by a crash")
    pgcluster.init_cluster(spec, template_dir=short_tmp / "template")
    assert (spec.datadir / "PG_VERSION").exists()
    assert not (spec.datadir / "junk").exists()
    assert f"port = {spec.port}" in (spec.datadir / "tenantry.conf").read_text()
    assert os.listdir(spec.socket_dir) == []


def test_a_time_target_past_the_last_commit_is_dropped_for_the_end_of_the_archive(
        tmp_path: Path) -> None:
    """PostgreSQL 15 stops with FATAL when the archive ends before its target time (no
    commit after it): the agent then recovers to the end of the archive instead."""
    from tenantry.agent.pgcluster import ClusterSpec, drop_recovery_target, target_unreached

    data = tmp_path / "pgdata"
    data.mkdir()
    spec = ClusterSpec(datadir=data, port=21000, owner=None, size="s",
                       socket_dir=tmp_path / "sock")
    log = tmp_path / "postgres.log"
    (data / "postgresql.auto.conf").write_text(
        "restore_command = 'pgbackrest archive-get %f \"%p\"'\n"
        "recovery_target_time = '2026-12-01 11:08:08+00'\nrecovery_target_action = 'promote'\n")
    log.write_text("LOG:  starting point-in-time recovery\n")
    assert not target_unreached(spec, log)  # no recovery.signal: not recovering
    (data / "recovery.signal").touch()
    assert not target_unreached(spec, log)  # recovering, not stopped short
    with log.open("a") as f:
        f.write("FATAL:  recovery ended before configured recovery target was reached\n")
    assert target_unreached(spec, log)
    drop_recovery_target(spec)
    assert (data / "postgresql.auto.conf").read_text() == \
        "restore_command = 'pgbackrest archive-get %f \"%p\"'\n"
    assert not target_unreached(spec, log)  # done once
