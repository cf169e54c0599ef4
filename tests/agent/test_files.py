"""Which files snapshot a restore brings back, and restic's own output read right."""

from __future__ import annotations

import json

import pytest

from tenantry.agent import files
from tenantry.platforms.contract import BackupRepo, FilesSnapshot


def _snap(sid: str, at: float, label: str) -> FilesSnapshot:
    return FilesSnapshot(id=sid, time=at, label=label)


SNAPS = [_snap("a", 100.0, "F1"), _snap("b", 200.0, "F1_I2"), _snap("c", 300.0, "F1_I3")]


def test_a_restore_to_a_backup_gets_the_snapshot_taken_with_it() -> None:
    assert files.pick(SNAPS, label="F1_I2", target=None) == SNAPS[1]
    assert files.pick(SNAPS, label="gone", target=None) is None


def test_a_restore_to_a_time_gets_the_newest_snapshot_at_or_before_it() -> None:
    assert files.pick(SNAPS, label=None, target=250.0) == SNAPS[1]
    assert files.pick(SNAPS, label=None, target=200.0) == SNAPS[1]
    assert files.pick(SNAPS, label=None, target=99.0) is None  # nothing that old
    assert files.pick(SNAPS, label=None, target=None) == SNAPS[2]  # the latest
    assert files.pick([], label=None, target=None) is None


def test_restics_snapshot_list_is_read_with_nanosecond_times_and_labels() -> None:
    text = json.dumps([
        {"time": "2026-12-01T10:17:29.39721025Z", "id": "044e801e" + "1" * 56,
         "short_id": "044e801e", "tags": ["label=20261201-101500F"], "paths": ["/x"]},
        {"time": "2026-12-01T09:00:00+01:00", "id": "99" * 32, "short_id": "99999999",
         "tags": None},
    ])
    found = files.parse_snapshots(text, {"044e801e": [3, 1200]})
    assert [s.id[:8] for s in found] == ["99999999", "044e801e"]  # oldest first
    assert found[0].time == pytest.approx(1796112000.0)
    assert found[1].time == pytest.approx(1796120249.39721025, abs=1e-6)
    assert (found[1].label, found[1].files, found[1].size) == ("20261201-101500F", 3, 1200)
    assert found[0].label is None and found[0].files == 0


def test_the_repository_sits_beside_pgbackrests() -> None:
    assert files.location(BackupRepo(type="posix", path="/d/backups/bms/p1")) == \
        "/d/backups/bms/p1/files"
    s3 = BackupRepo(type="s3", path="/tn/bms/p1", bucket="b", endpoint="localhost:9443")
    assert files.location(s3) == "s3:https://localhost:9443/b/tn/bms/p1/files"
