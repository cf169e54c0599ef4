"""Backups into a real S3-compatible server (moto, signatures checked) behind a TLS front:
each ISV under its own prefix, every object encrypted, a platform restored from it, and a
store that is away failing the backup with the setting to check, touching nothing stored."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ControlPlaneProcess, make_isv, running_plane, wait_until
from tests.s3server import S3Server, TlsFront, moto_server, tls_front

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store() -> Iterator[tuple[S3Server, TlsFront]]:
    with moto_server() as s3, tls_front(s3.endpoint) as front:
        yield s3, front


@pytest.fixture(scope="module")
def s3_plane(store: tuple[S3Server, TlsFront]) -> Iterator[tuple[ControlPlaneProcess, str]]:
    s3, front = store
    bucket = s3.new_bucket(lock=False)
    env = {"TENANTRY_BACKUP_URL": f"s3://{bucket}/backups",
           "TENANTRY_BACKUP_ENDPOINT": front.endpoint,
           "TENANTRY_BACKUP_REGION": s3.region,
           "TENANTRY_BACKUP_ACCESS_KEY_ID": s3.access_key_id,
           "TENANTRY_BACKUP_SECRET_ACCESS_KEY": s3.secret_access_key,
           "TENANTRY_BACKUP_CA_FILE": str(front.ca_file)}
    with running_plane(env=env) as cp:
        yield cp, bucket


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_backups_go_to_s3_encrypted_under_the_isvs_prefix_and_restore_from_there(
        store: tuple[S3Server, TlsFront], s3_plane: tuple[ControlPlaneProcess, str],
        bundles: dict[str, Path]) -> None:
    s3, front = store
    plane, bucket = s3_plane
    isv = make_isv(plane, bundles)
    made = plane.cli_json("platform", "create", isv, "--tenant", "t1",
                          "--app", "bodyshop@1.0.0", "--wait")
    assert made["state"] == "ready", made
    ref, host = f"{isv}/t1", f"t1.{isv}.localhost"
    assert [b["type"] for b in plane.cli_json("backup", "list", ref)] == ["full"]
    assert not (plane.data_dir / "backups").exists()  # nothing went to the local default

    keys = [o["Key"] for page in s3.client().get_paginator("list_objects_v2").paginate(
        Bucket=bucket) for o in page.get("Contents", [])]
    prefix = f"backups/{isv}/{made['id']}/"
    assert keys and all(k.startswith(prefix) for k in keys), keys[:5]
    info = s3.client().get_object(Bucket=bucket, Key=f"{prefix}backup/{made['id']}/"
                                  "backup.info")["Body"].read()
    assert info.startswith(b"Salted__")
    # restic's repository of the platform's files sits beside pgBackRest's, encrypted.
    config = s3.client().get_object(Bucket=bucket, Key=f"{prefix}files/config")["Body"].read()
    assert config and b"chunker_polynomial" not in config
    assert any(k.startswith(f"{prefix}files/snapshots/") for k in keys)

    assert plane.https(host, "/api/jobs", "POST",
                       json={"registration": "S3 1", "customer": "Ana"}).status_code == 201
    time.sleep(1.5)
    chosen = dt.datetime.now(dt.UTC).replace(microsecond=0)
    time.sleep(1.5)
    assert plane.https(host, "/api/jobs", "POST",
                       json={"registration": "S3 2", "customer": "Bo"}).status_code == 201
    after = time.time()
    wait_until(lambda: _ts(plane.cli_json("backup", "window", ref)["latest"]) >= after, 60,
               "the second commit archived to S3", every=1)
    done = plane.cli_json("backup", "restore", ref, "--to-time", chosen.isoformat(), "--wait")
    assert done["state"] == "succeeded", done
    jobs = sorted(j["registration"] for j in plane.https(host, "/api/jobs").json())
    assert jobs == ["S3 1"]


def test_a_store_that_is_away_fails_the_backup_naming_the_setting(
        store: tuple[S3Server, TlsFront], s3_plane: tuple[ControlPlaneProcess, str],
        bundles: dict[str, Path]) -> None:
    s3, front = store
    plane, bucket = s3_plane
    isv = make_isv(plane, bundles)
    plane.cli_json("platform", "create", isv, "--tenant", "t2", "--app", "bodyshop@1.0.0",
                   "--wait")
    ref = f"{isv}/t2"
    before = plane.cli_json("backup", "list", ref)
    objects = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"backups/{isv}/")["KeyCount"]
    front.stop()
    try:
        failed = plane.cli("backup", "run", ref, "--type", "full", "--wait", "--json",
                           check=False)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "TENANTRY_BACKUP_ENDPOINT" in failed.stdout, failed.stdout
        events = plane.cli_json("events", "--platform", ref)
        assert any(e["kind"] == "BACKUP_FAILED" for e in events)
    finally:
        front.start()
    assert plane.cli_json("backup", "list", ref) == before  # nothing stored was touched
    assert s3.client().list_objects_v2(Bucket=bucket,
                                       Prefix=f"backups/{isv}/")["KeyCount"] >= objects
    again = plane.cli_json("backup", "run", ref, "--type", "incr", "--wait")
    assert again["state"] == "succeeded", again
