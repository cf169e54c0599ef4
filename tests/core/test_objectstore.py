# ruff: noqa: S105, S106  (throwaway credentials for a throwaway server)
"""Object stores: one contract for directory, memory and S3 (a real moto server), Object
Lock on S3, errors that name the setting and never show the secret, and the settings."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pydantic import SecretStr

from tenantry.core.config import load_settings
from tenantry.core.errors import InvalidInput, Unavailable
from tenantry.core.objectstore import (
    DirectoryObjectStore,
    MemoryObjectStore,
    ObjectStore,
    S3ObjectStore,
    open_offsite,
)
from tests import s3server
from tests.conftest import TENANTRY, free_port
from tests.s3server import S3Server

s3_server = s3server.s3_server  # the fixture: one moto server for the session
LATEST = "audit/head.json"


def s3_store(server: S3Server, bucket: str, **kwargs: Any) -> S3ObjectStore:
    options: dict[str, Any] = {
        "bucket": bucket, "prefix": "tenantry", "endpoint": server.endpoint,
        "region": server.region, "access_key_id": server.access_key_id,
        "secret_access_key": SecretStr(server.secret_access_key), "mutable_keys": [LATEST]}
    return S3ObjectStore(**(options | kwargs))


@pytest.fixture(params=["directory", "memory",
                        pytest.param("s3", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "directory":
        yield DirectoryObjectStore(tmp_path / "offsite")
    elif request.param == "memory":
        yield MemoryObjectStore()
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        yield s3_store(server, server.new_bucket())


# ---------------------------------------------------------------- the contract

def test_put_then_get(store: ObjectStore) -> None:
    store.put("audit/heads/2026/01/01/000000.000000-1.json", b'{"n": 1}')
    store.put("empty", b"")
    store.put(LATEST, bytes(range(256)))
    assert store.get("audit/heads/2026/01/01/000000.000000-1.json") == b'{"n": 1}'
    assert store.get("empty") == b""
    assert store.get(LATEST) == bytes(range(256))


def test_put_again_replaces_what_get_answers(store: ObjectStore) -> None:
    store.put(LATEST, b"one")
    store.put(LATEST, b"two")
    assert store.get(LATEST) == b"two"


def test_missing_key_is_none(store: ObjectStore) -> None:
    assert store.get("audit/nothing-here.json") is None
    store.put("audit/a", b"1")
    assert store.get("audit/a/b") is None and store.get("audit") is None


def test_list_by_prefix_sorted(store: ObjectStore) -> None:
    assert store.list() == []
    for key in ("b/2", "a/1", "b/10", "b/1", "c"):
        store.put(key, key.encode())
    assert store.list() == ["a/1", "b/1", "b/10", "b/2", "c"]
    assert store.list("b/") == ["b/1", "b/10", "b/2"]
    assert store.list("b/1") == ["b/1", "b/10"]
    assert store.list("zzz") == []


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "..", ".", "a/./b", "a/"])
def test_bad_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidInput) as put:
        store.put(key, b"x")
    assert put.value.field == "key"
    with pytest.raises(InvalidInput):
        store.get(key)
    assert store.list() == []


# ---------------------------------------------------------------- S3 only

slow = pytest.mark.slow


@slow
def test_s3_keys_live_under_the_prefix_and_nothing_else_is_listed(
        s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    raw = s3_server.client()
    raw.put_object(Bucket=bucket, Key="other/x", Body=b"not ours")
    raw.put_object(Bucket=bucket, Key="tenantry-more/x", Body=b"not ours either")
    store = s3_store(s3_server, bucket)
    store.put("audit/x", b"ours")
    assert raw.get_object(Bucket=bucket, Key="tenantry/audit/x")["Body"].read() == b"ours"
    assert store.list() == ["audit/x"]
    assert store.get("other/x") is None


@slow
def test_s3_dated_objects_are_write_once_under_compliance_lock(
        s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket(lock=True)
    store = s3_store(s3_server, bucket, lock_days=30)
    raw = s3_server.client()
    dated = "audit/heads/2026/01/01/000000.000000-7.json"
    store.put(dated, b"signed head 7")
    store.put(LATEST, b"signed head 7")

    meta = raw.head_object(Bucket=bucket, Key=f"tenantry/{dated}")
    assert meta["ObjectLockMode"] == "COMPLIANCE"
    days = (meta["ObjectLockRetainUntilDate"] - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    assert 29.9 < days <= 30
    version = meta["VersionId"]

    # Deleting the version is refused, even by the key that wrote it, even with bypass
    # (that only lifts GOVERNANCE retention).
    for bypass in (False, True):
        with pytest.raises(ClientError) as refused:
            raw.delete_object(Bucket=bucket, Key=f"tenantry/{dated}", VersionId=version,
                              BypassGovernanceRetention=bypass)
        assert refused.value.response["Error"]["Code"] == "AccessDenied"

    # A rewrite does not change it in place: it adds a version, and the signed original
    # stays readable by its version id (an auditor lists versions to see the attempt).
    raw.put_object(Bucket=bucket, Key=f"tenantry/{dated}", Body=b"forged head")
    assert raw.get_object(Bucket=bucket, Key=f"tenantry/{dated}",
                          VersionId=version)["Body"].read() == b"signed head 7"
    versions = raw.list_object_versions(Bucket=bucket, Prefix=f"tenantry/{dated}")["Versions"]
    assert len(versions) == 2
    # moto does not refuse shortening a COMPLIANCE retention (PutObjectRetention), which
    # S3 does; nothing here asserts that part.

    # The latest pointer is rewritten at every ship, so it is left without retention.
    latest = raw.head_object(Bucket=bucket, Key=f"tenantry/{LATEST}")
    assert "ObjectLockMode" not in latest
    raw.delete_object(Bucket=bucket, Key=f"tenantry/{LATEST}", VersionId=latest["VersionId"])


@slow
def test_s3_bucket_without_object_lock_still_works_with_a_warning(
        s3_server: S3Server, caplog: pytest.LogCaptureFixture) -> None:
    bucket = s3_server.new_bucket(lock=False)
    store = s3_store(s3_server, bucket)
    with caplog.at_level(logging.WARNING, logger="tenantry.core.objectstore"):
        store.put("audit/heads/x.json", b"1")
        store.put("audit/heads/y.json", b"2")
    assert store.list("audit/heads/") == ["audit/heads/x.json", "audit/heads/y.json"]
    warnings = [r.getMessage() for r in caplog.records if "Object Lock" in r.getMessage()]
    assert len(warnings) == 1 and bucket in warnings[0]
    meta = s3_server.client().head_object(Bucket=bucket, Key="tenantry/audit/heads/x.json")
    assert "ObjectLockMode" not in meta


@slow
def test_s3_lock_days_zero_writes_without_retention(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket(lock=True)
    s3_store(s3_server, bucket, lock_days=0).put("audit/heads/x.json", b"1")
    meta = s3_server.client().head_object(Bucket=bucket, Key="tenantry/audit/heads/x.json")
    assert "ObjectLockMode" not in meta


def assert_clean(exc: Unavailable, *secrets: str) -> None:
    """Neither the message, nor repr, nor the formatted traceback carries a secret."""
    assert exc.__cause__ is None and exc.__suppress_context__
    shown = "".join([str(exc), repr(exc), *traceback.format_exception(exc)])
    for secret in secrets:
        assert secret not in shown


@slow
@pytest.mark.parametrize(("change", "field", "says"), [
    ({"secret": "wrong-secret-0123456789"}, "offsite_secret_access_key",
     "TENANTRY_OFFSITE_SECRET_ACCESS_KEY"),
    ({"access_key_id": "AKIDUNKNOWN000000000"}, "offsite_access_key_id",
     "TENANTRY_OFFSITE_ACCESS_KEY_ID"),
    ({"bucket": "no-such-bucket-here"}, "offsite_url", "TENANTRY_OFFSITE_URL"),
    ({"endpoint": "unreachable"}, "offsite_endpoint", "TENANTRY_OFFSITE_ENDPOINT"),
])
def test_s3_failures_name_the_setting_and_never_the_secret(
        s3_server: S3Server, change: dict[str, str], field: str, says: str) -> None:
    bucket = change.get("bucket") or s3_server.new_bucket()
    secret = change.get("secret", s3_server.secret_access_key)
    endpoint = s3_server.endpoint
    if change.get("endpoint"):
        endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = s3_store(s3_server, bucket, endpoint=endpoint, secret_access_key=SecretStr(secret),
                     access_key_id=change.get("access_key_id", s3_server.access_key_id),
                     timeout=3.0)
    for attempt in (lambda: store.put("audit/heads/x.json", b"1"),
                    lambda: store.get(LATEST), store.list):
        with pytest.raises(Unavailable) as failed:
            attempt()
        assert failed.value.field == field, failed.value.message
        assert says in failed.value.message
        assert_clean(failed.value, secret, s3_server.secret_access_key)


def test_repr_of_store_and_settings_hide_the_secret() -> None:
    secret = "s3cr3t-Value-That-Must-Not-Leak"
    settings = load_settings(offsite_url="s3://heads/tenantry",
                             offsite_endpoint="http://127.0.0.1:9000",
                             offsite_access_key_id="AKIDEXAMPLE",
                             offsite_secret_access_key=secret)
    store = open_offsite(settings, mutable_keys=[LATEST])
    assert isinstance(store, S3ObjectStore)
    for shown in (repr(settings), str(settings), repr(store), str(store),
                  repr(settings.offsite_secret_access_key), str(settings.model_dump())):
        assert secret not in shown
    assert "AKIDEXAMPLE" in repr(store) and "heads" in repr(store)


# ---------------------------------------------------------------- settings

def test_default_offsite_is_the_data_dir(tmp_path: Path) -> None:
    store = open_offsite(load_settings(data_dir=tmp_path))
    assert isinstance(store, DirectoryObjectStore) and store.root == tmp_path / "offsite"
    store = open_offsite(load_settings(data_dir=tmp_path, offsite_url=str(tmp_path / "x")))
    assert isinstance(store, DirectoryObjectStore) and store.root == tmp_path / "x"


def test_s3_settings_build_an_s3_store() -> None:
    store = open_offsite(load_settings(
        offsite_url="s3://audit-heads/eu/tenantry/", offsite_endpoint="https://s3.example:9000/",
        offsite_region="eu-central-1", offsite_access_key_id="AK",
        offsite_secret_access_key="SK", offsite_lock_days=2555), mutable_keys=[LATEST])
    assert isinstance(store, S3ObjectStore)
    assert (store.bucket, store.prefix, store.endpoint, store.region, store.lock_days) == (
        "audit-heads", "eu/tenantry", "https://s3.example:9000", "eu-central-1", 2555)
    assert store.mutable_keys == {LATEST}


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTRY_OFFSITE_URL", "s3://bucket-1")
    monkeypatch.setenv("TENANTRY_OFFSITE_ENDPOINT", "http://127.0.0.1:9000")
    monkeypatch.setenv("TENANTRY_OFFSITE_ACCESS_KEY_ID", "AK")
    monkeypatch.setenv("TENANTRY_OFFSITE_SECRET_ACCESS_KEY", "SK-from-env")
    monkeypatch.setenv("TENANTRY_OFFSITE_LOCK_DAYS", "7")
    settings = load_settings()
    assert settings.offsite_secret_access_key is not None
    assert settings.offsite_secret_access_key.get_secret_value() == "SK-from-env"
    assert settings.offsite_lock_days == 7 and "SK-from-env" not in repr(settings)


S3 = {"offsite_url": "s3://bucket-1/p"}


@pytest.mark.parametrize(("given", "field"), [
    ({"offsite_url": "gs://bucket-1/p"}, "offsite_url"),
    ({"offsite_url": "https://bucket-1/p"}, "offsite_url"),
    ({"offsite_url": "s3://Bad_Bucket"}, "offsite_url"),
    ({"offsite_url": "s3://ab"}, "offsite_url"),
    ({"offsite_url": "s3://user:pw@bucket-1/p"}, "offsite_url"),
    ({"offsite_url": "s3://bucket-1/a/../b"}, "offsite_url"),
    ({"offsite_url": "relative/dir"}, "offsite_url"),
    (S3 | {"offsite_endpoint": "ftp://127.0.0.1:9000"}, "offsite_endpoint"),
    (S3 | {"offsite_endpoint": "127.0.0.1:9000"}, "offsite_endpoint"),
    (S3 | {"offsite_endpoint": "http://ak:sk@127.0.0.1:9000"}, "offsite_endpoint"),
    (S3 | {"offsite_endpoint": "http://127.0.0.1:99999"}, "offsite_endpoint"),
    (S3 | {"offsite_endpoint": "http://127.0.0.1:9000/bucket"}, "offsite_endpoint"),
    (S3 | {"offsite_region": "Europe West"}, "offsite_region"),
    (S3 | {"offsite_lock_days": -1}, "offsite_lock_days"),
    (S3 | {"offsite_access_key_id": "AK"}, "offsite_secret_access_key"),
    (S3 | {"offsite_secret_access_key": "SK"}, "offsite_access_key_id"),
    ({"offsite_endpoint": "http://127.0.0.1:9000"}, "offsite_endpoint"),
    ({"offsite_url": "/srv/heads", "offsite_access_key_id": "AK",
      "offsite_secret_access_key": "SK"}, "offsite_access_key_id"),
])
def test_bad_offsite_settings_name_the_field(given: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as bad:
        load_settings(**given)
    assert bad.value.field == field, bad.value.message
    assert "ak:sk" not in bad.value.message and "pw@" not in bad.value.message


@pytest.mark.parametrize(("env", "field"), [
    ({"TENANTRY_OFFSITE_URL": "gs://bucket-1/p"}, "offsite_url"),
    ({"TENANTRY_OFFSITE_URL": "s3://bucket-1",
      "TENANTRY_OFFSITE_ENDPOINT": "http://127.0.0.1:9000/x"}, "offsite_endpoint"),
    ({"TENANTRY_OFFSITE_URL": "s3://bucket-1",
      "TENANTRY_OFFSITE_SECRET_ACCESS_KEY": "only-the-secret"}, "offsite_access_key_id"),
])
def test_up_refuses_bad_offsite_settings_at_start(tmp_path: Path, env: dict[str, str],
                                                  field: str) -> None:
    done = subprocess.run([*TENANTRY, "up", "--data-dir", str(tmp_path / "data")],
                          env=os.environ | env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    assert f"error ({field}):" in done.stderr and "Traceback" not in done.stderr
    assert "only-the-secret" not in done.stderr + done.stdout
    assert not (tmp_path / "data").exists()
