"""Repositories of destroyed platforms: kept for the keep period after their last write, then
deleted (with an event); a live platform's repository, a recent one and anything not named
like a platform are never touched. In a directory, and in a real S3 server (moto)."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from tenantry.backups import purge
from tenantry.core.models import Event
from tenantry.platforms.models import Platform
from tests.backups.seed import seeded_store
from tests.s3server import S3Server, s3_server  # noqa: F401 (a fixture)

LIVE, GONE, RECENT = "p00000000aa", "p00000000bb", "p00000000cc"
DAY = 86400


@pytest.fixture(scope="module")
def store() -> Iterator[Any]:
    with seeded_store("tnpurge-") as runtime:
        with runtime.sessions() as session:
            session.add(Platform(id=LIVE, isv_id="i1", name="live", region_id="g1",
                                 release_id="r1", state="ready"))
            session.commit()
        yield runtime


@pytest.fixture(autouse=True)
def settings(store: Any) -> Iterator[None]:
    before = store.settings.model_copy()
    yield
    for name in ("backup_url", "backup_endpoint", "backup_access_key_id",
                 "backup_secret_access_key", "backup_keep_destroyed_days"):
        setattr(store.settings, name, getattr(before, name))
    with store.sessions() as session:
        session.execute(delete(Event))
        session.commit()


def events(store: Any) -> list[str]:
    with store.sessions() as session:
        return list(session.scalars(select(Event.message).where(
            Event.kind == "BACKUP_REPOSITORY_DELETED")))


def write_repo(root: Path, isv: str, name: str, age_days: float) -> Path:
    repo = root / isv / name
    for part in ("archive/x/000000010000000000000001", "backup/x/backup.info", "files/config"):
        f = repo / part
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x" * 100)
        when = time.time() - age_days * DAY
        os.utime(f, (when, when))
    return repo


def test_in_a_directory_only_a_destroyed_platforms_old_repository_goes(store: Any) -> None:
    root = store.settings.data_dir / "backups"
    live = write_repo(root, "bms", LIVE, 100)
    gone = write_repo(root, "bms", GONE, 31)
    recent = write_repo(root, "bms", RECENT, 29)
    other = write_repo(root, "bms", "not-a-platform", 100)
    assert store.settings.backup_keep_destroyed_days == 30  # the default
    deleted = purge.purge_destroyed(store)
    assert [(r.isv, r.platform_id, r.objects) for r in deleted] == [("bms", GONE, 3)]
    assert not gone.exists() and live.exists() and recent.exists() and other.exists()
    [message] = events(store)
    assert f"bms/{GONE}: 3 objects" in message and "after 30 days without a write" in message

    # a month later the recent one goes too; 0 keeps everything for ever
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    store.settings.backup_keep_destroyed_days = 0
    assert purge.purge_destroyed(store, now=later) == []
    store.settings.backup_keep_destroyed_days = 30
    assert [r.platform_id for r in purge.purge_destroyed(store, now=later)] == [RECENT]
    assert live.exists() and other.exists()


def test_in_an_s3_bucket_only_a_destroyed_platforms_old_repository_goes(
        store: Any, s3_server: S3Server) -> None:  # noqa: F811
    bucket = s3_server.new_bucket(lock=False)
    client = s3_server.client()
    for name in (LIVE, GONE, "not-a-platform"):
        for part in ("archive/x/1", "backup/x/backup.info", "files/config"):
            client.put_object(Bucket=bucket, Key=f"tn/bms/{name}/{part}", Body=b"x" * 100)
    client.put_object(Bucket=bucket, Key="tn/elsewhere.txt", Body=b"x")
    store.settings.backup_url = f"s3://{bucket}/tn"
    store.settings.backup_endpoint = s3_server.endpoint
    store.settings.backup_access_key_id = s3_server.access_key_id
    from pydantic import SecretStr
    store.settings.backup_secret_access_key = SecretStr(s3_server.secret_access_key)
    store.settings.backup_keep_destroyed_days = 30

    assert purge.purge_destroyed(store) == []  # written just now
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
    deleted = purge.purge_destroyed(store, now=later)
    assert [(r.platform_id, r.objects, r.size) for r in deleted] == [(GONE, 3, 300)]
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert not [k for k in keys if GONE in k]
    assert len([k for k in keys if LIVE in k]) == 3
    assert len([k for k in keys if "not-a-platform" in k]) == 3
    assert "tn/elsewhere.txt" in keys
    assert len(events(store)) == 1


def test_a_wrong_secret_is_said_naming_the_setting_and_deletes_nothing(
        store: Any, s3_server: S3Server) -> None:  # noqa: F811
    from pydantic import SecretStr

    from tenantry.core.errors import Unavailable

    bucket = s3_server.new_bucket(lock=False)
    s3_server.client().put_object(Bucket=bucket, Key=f"tn/bms/{GONE}/backup/x", Body=b"x")
    store.settings.backup_url = f"s3://{bucket}/tn"
    store.settings.backup_endpoint = s3_server.endpoint
    store.settings.backup_access_key_id = s3_server.access_key_id
    store.settings.backup_secret_access_key = SecretStr("wrong-secret")
    store.settings.backup_keep_destroyed_days = 30
    with pytest.raises(Unavailable) as refused:
        purge.purge_destroyed(store, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=31))
    assert refused.value.field == "backup_secret_access_key"
    assert "TENANTRY_BACKUP_SECRET_ACCESS_KEY" in refused.value.message
    assert "wrong-secret" not in refused.value.message
    assert s3_server.client().list_objects_v2(Bucket=bucket)["KeyCount"] == 1
