"""What the agent exports of a platform's backups, read from its directories."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tenantry.agent import backups
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
