"""What the agent exports of a platform's backups, read from its directories."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tenantry.agent import backups, pgcluster
from tenantry.platforms.contract import BackupTask, DesiredHost
from tests.platforms.test_contract import WIRE_DOC


def test_pending_wal_its_age_the_newest_backup_and_the_latest_checks(tmp_path: Path) -> None:
    p = DesiredHost.model_validate(WIRE_DOC).platforms[0]
    assert p.backup is not None
    p.backup.tasks = [BackupTask(id="v1", type="verify"), BackupTask(id="t1", type="restore-test"),
                      BackupTask(id="v2", type="verify"), BackupTask(id="t2",
                                                                    type="restore-test")]
    status = tmp_path / "pgdata" / "pg_wal" / "archive_status"
    status.mkdir(parents=True)
    spool = tmp_path / "backup" / "spool" / "archive" / p.id / "out"
    spool.mkdir(parents=True)
    old = status / "000000010000000000000007.ready"
    old.touch()
    os.utime(old, (time.time() - 90, time.time() - 90))
    (status / "000000010000000000000006.done").touch()  # archived already
    (spool / "000000010000000000000005").touch()  # in pgBackRest's queue
    (spool / "000000010000000000000004.ok").touch()  # pushed
    (tmp_path / "backup" / "state.json").write_text(json.dumps({
        "backups": [{"finished_at": 100.0}, {"finished_at": 250.5}],
        "tasks": {"v1": "ok: fine", "t1": "ok: 2 tables", "v2": "failed: checksum",
                  "t2": "running"}}))

    found = backups.metrics(tmp_path, p)
    assert (found.isv, found.platform) == ("bms", "bms/lbh")
    assert found.last_backup_at == 250.5
    assert found.archive_pending == 2
    assert 89 <= found.archive_lag <= 120
    # The latest verify failed; the latest restore test still runs, so the one before counts.
    assert found.checks == (("verify", False), ("restore-test", True))


def test_a_platform_with_nothing_yet(tmp_path: Path) -> None:
    p = DesiredHost.model_validate(WIRE_DOC).platforms[0]
    found = backups.metrics(tmp_path, p)
    assert (found.last_backup_at, found.archive_pending, found.archive_lag, found.checks) == (
        None, 0, 0.0, ())


def test_a_repository_that_cannot_be_read_fails_info_at_once() -> None:
    """pgbackrest info answers status 99 when the store is away (after its own retries):
    the backup fails with that reason instead of trying the store again."""
    import pytest

    from tenantry.core.errors import Unavailable

    away = json.dumps([{"name": "p1", "backup": [], "status": {"code": 99, "message": "other"},
                        "repo": [{"key": 1, "status": {
                            "code": 99, "message": "[HostConnectError] unable to connect to "
                            "'localhost:45991': [111] Connection refused"}}]}])
    with pytest.raises(Unavailable) as caught:
        backups.parse_info(away, "p1")
    assert "unable to connect" in str(caught.value)
    empty = json.dumps([{"name": "p1", "backup": [], "status": {
        "code": 2, "message": "no valid backups"}}])
    assert backups.parse_info(empty, "p1") == []


def _aged(path: Path, seconds: float = 5.0) -> None:
    """As if `path` last changed `seconds` ago: older than the readers' racy second."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_the_reader_parses_state_again_only_once_it_was_replaced(tmp_path: Path) -> None:
    p = DesiredHost.model_validate(WIRE_DOC).platforms[0]
    reader = backups.MetricsReader()
    state = tmp_path / "backup" / "state.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"backups": [{"finished_at": 100.0}]}))
    assert reader.of(tmp_path, p).last_backup_at == 100.0
    # The reader keeps what it parsed: a file whose inode, mtime and size are as they were
    # is not read again (rewritten in place here, its mtime put back, to show it)...
    stamp = state.stat().st_mtime_ns
    state.write_text(json.dumps({"backups": [{"finished_at": 900.0}]}))
    os.utime(state, ns=(stamp, stamp))
    assert reader.of(tmp_path, p).last_backup_at == 100.0
    # ...and one replaced whole, as the runner writes it, is.
    fresh = state.with_suffix(".tmp")
    fresh.write_text(json.dumps({"backups": [{"finished_at": 100.0}, {"finished_at": 300.0}]}))
    fresh.rename(state)
    assert reader.of(tmp_path, p).last_backup_at == 300.0
    state.unlink()
    assert reader.of(tmp_path, p).last_backup_at is None


def test_the_reader_lists_a_wal_queue_again_only_once_it_moved(tmp_path: Path) -> None:
    p = DesiredHost.model_validate(WIRE_DOC).platforms[0]
    now = [time.time()]
    reader = backups.MetricsReader(clock=lambda: now[0])
    status = tmp_path / "pgdata" / "pg_wal" / "archive_status"
    status.mkdir(parents=True)
    ready = status / "000000010000000000000007.ready"
    ready.touch()
    _aged(ready, 30)
    _aged(status)
    first = reader.of(tmp_path, p)
    assert (first.archive_pending, 29 <= first.archive_lag <= 40) == (1, True)
    # Unchanged: the listing is kept, and the lag still counts to now.
    now[0] += 60
    assert 89 <= reader.of(tmp_path, p).archive_lag <= 100
    # The segment archived: PostgreSQL renames it, the folder's mtime moves, it is listed again.
    ready.rename(status / "000000010000000000000007.done")
    assert reader.of(tmp_path, p).archive_pending == 0


def test_the_reader_does_not_trust_a_folder_changed_within_the_last_second(
        tmp_path: Path) -> None:
    """A change in the same clock tick as the listing leaves the mtime as it was: a folder
    that changed just now is listed again at the next look, whatever its mtime says."""
    p = DesiredHost.model_validate(WIRE_DOC).platforms[0]
    reader = backups.MetricsReader()
    status = tmp_path / "pgdata" / "pg_wal" / "archive_status"
    status.mkdir(parents=True)
    assert reader.of(tmp_path, p).archive_pending == 0  # the folder is brand new
    stamp = status.stat().st_mtime_ns
    (status / "000000010000000000000008.ready").touch()
    os.utime(status, ns=(stamp, stamp))  # as if the change fell in the same tick
    assert reader.of(tmp_path, p).archive_pending == 1


class CountingAsk:
    def __init__(self, answer: backups.Archiver | None = (1000.0, None)) -> None:
        self.answer = answer
        self.asked = 0

    def __call__(self, spec: pgcluster.ClusterSpec) -> backups.Archiver | None:
        self.asked += 1
        return self.answer


def _spec(tmp_path: Path) -> pgcluster.ClusterSpec:
    return pgcluster.ClusterSpec(datadir=tmp_path / "pgdata", port=5432, owner=None, size="s",
                                 socket_dir=tmp_path)


def test_the_archiver_is_asked_again_only_when_its_folder_moved_or_a_segment_waits(
        tmp_path: Path) -> None:
    """An idle cluster's pg_stat_archiver is asked once, not at every look (each is a new
    connection): only a segment waiting, or one that went, asks again."""
    spec = _spec(tmp_path)
    status = tmp_path / "pgdata" / "pg_wal" / "archive_status"
    status.mkdir(parents=True)
    _aged(status)
    ask = CountingAsk()
    cache = backups.ArchiverCache(ask=ask)
    for _ in range(5):
        assert cache.of(spec) == (1000.0, None)
    assert ask.asked == 1
    # A segment waits: every look asks, since a failure shows only in the statistics.
    ready = status / "000000010000000000000009.ready"
    ready.touch()
    ask.answer = (1000.0, "archiving WAL segment 000000010000000000000009 failed at …")
    assert cache.of(spec)[1] is not None
    assert cache.of(spec)[1] is not None
    assert ask.asked == 3
    # Archived at last: asked once more, then the answer is kept again.
    ready.rename(status / "000000010000000000000009.done")
    _aged(status)
    ask.answer = (2000.0, None)
    assert cache.of(spec) == (2000.0, None)
    assert cache.of(spec) == (2000.0, None)
    assert ask.asked == 4


def test_an_archiver_that_could_not_be_asked_is_asked_at_the_next_look(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    status = tmp_path / "pgdata" / "pg_wal" / "archive_status"
    status.mkdir(parents=True)
    _aged(status)
    ask = CountingAsk(answer=None)  # the cluster refused the connection, say
    cache = backups.ArchiverCache(ask=ask)
    assert cache.of(spec) == (None, None)
    ask.answer = (1000.0, None)
    assert cache.of(spec) == (1000.0, None)
    assert ask.asked == 2
