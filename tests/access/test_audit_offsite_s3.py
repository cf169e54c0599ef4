"""A running control plane ships its signed audit heads to a real S3-compatible server
(moto, with IAM auth and Object Lock), verifies against them, catches a truncated tail with
them, and never writes the secret key anywhere.

The tests share one plane and run in file order: the last one restarts it with a wrong
secret.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import s3server
from tests.conftest import ControlPlaneProcess, free_port, short_tmp
from tests.s3server import S3Server

pytestmark = pytest.mark.slow
s3_server = s3server.s3_server  # the fixture: one moto server for the session

PREFIX = "tenantry"
HEAD = f"{PREFIX}/audit/head.json"
HEADS = f"{PREFIX}/audit/heads/"
SHIPPED_WITHIN = 60 + 15  # the worker ships at least every 60 s; slack for a busy machine


@dataclass
class S3Plane(ControlPlaneProcess):
    """A control plane whose processes (and CLI) get the offsite settings in their env."""

    extra_env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def env(self) -> dict[str, str]:
        return super().env | self.extra_env


@dataclass
class Setup:
    plane: S3Plane
    server: S3Server
    bucket: str
    root: Path

    def head(self) -> dict[str, Any] | None:
        try:
            body = self.server.client().get_object(Bucket=self.bucket, Key=HEAD)["Body"]
        except Exception as exc:  # NoSuchKey until the first ship
            if "NoSuchKey" in str(exc):
                return None
            raise
        head: dict[str, Any] = json.loads(body.read())
        return head

    def wait_for_head(self, at_least: int, timeout: float = SHIPPED_WITHIN) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            head = self.head()
            if head is not None and head["last_id"] >= at_least:
                return head
            assert time.monotonic() < deadline, f"no head with entry {at_least} in {timeout}s"
            time.sleep(1)


def store(plane: ControlPlaneProcess) -> psycopg.Connection[Any]:
    return psycopg.connect(host=str(plane.data_dir / "controlplane" / "run"), user="tenantry",
                           dbname="tenantry", autocommit=True)


@pytest.fixture(scope="module")
def setup(s3_server: S3Server) -> Iterator[Setup]:
    bucket = s3_server.new_bucket(lock=True)
    root = short_tmp("tnt-")
    plane = S3Plane(data_dir=root / "data", listen_port=free_port(), ingress_port=free_port(),
                    extra_env=s3_server.env(bucket, PREFIX))
    try:
        plane.start()
        yield Setup(plane, s3_server, bucket, root)
    finally:
        plane.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def one_line(text: str) -> str:
    """The CLI's stderr with Rich's line wrapping undone."""
    return " ".join(text.split())


def audited_isv(plane: ControlPlaneProcess) -> int:
    """Create an ISV; the id of the audit entry that recorded it."""
    name = f"s3-{secrets.token_hex(3)}"
    plane.cli("isv", "create", name)
    rows = plane.cli_json("audit", "list", "--target", f"/isvs/{name}")
    return max(r["id"] for r in rows)


def test_heads_reach_the_bucket_within_a_minute_and_verify_uses_them(setup: Setup) -> None:
    plane = setup.plane
    entry = audited_isv(plane)
    head = setup.wait_for_head(entry)
    assert len(head["sig"]) == 64

    report = plane.cli_json("audit", "verify")
    assert report["ok"] and report["first_bad"] is None
    assert report["head"]["last_id"] >= head["last_id"] and report["checked"] >= entry
    assert not (plane.data_dir / "offsite").exists()  # nothing went to the local default

    raw = setup.server.client()
    dated = [o["Key"] for o in raw.list_objects_v2(Bucket=setup.bucket,
                                                   Prefix=HEADS)["Contents"]]
    assert dated and all(k.endswith(".json") for k in dated)
    for key in dated:  # every dated head is under COMPLIANCE retention ...
        meta = raw.head_object(Bucket=setup.bucket, Key=key)
        assert meta["ObjectLockMode"] == "COMPLIANCE"
        with pytest.raises(Exception, match="AccessDenied"):
            raw.delete_object(Bucket=setup.bucket, Key=key, VersionId=meta["VersionId"])
    # ... and the latest pointer, rewritten at every ship, is not (it only gains versions).
    assert "ObjectLockMode" not in raw.head_object(Bucket=setup.bucket, Key=HEAD)


def test_verify_reports_a_truncated_tail_against_the_s3_head(setup: Setup) -> None:
    plane = setup.plane
    head = setup.wait_for_head(audited_isv(setup.plane))
    first_gone = head["last_id"] - 1
    with store(plane) as conn:  # whoever owns the store deletes the newest entries
        conn.execute("DELETE FROM audit_entries WHERE id >= %s", (first_gone,))

    done = plane.cli("audit", "verify", check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"entry {first_gone}" in done.stderr and "truncated" in done.stderr
    report = json.loads(plane.cli("audit", "verify", "--json", check=False).stdout)
    assert not report["ok"] and report["first_bad"]["id"] == first_gone
    assert report["head"]["last_id"] >= head["last_id"]
    assert "missing" in report["first_bad"]["reason"]

    # Shipping a shorter head would launder the truncation: refused, the S3 head stays.
    shipped = setup.head()
    refused = plane.cli("audit", "ship", check=False)
    assert refused.returncode == 2 and "no longer reaches" in one_line(refused.stderr)
    assert setup.head() == shipped


def test_secrets_never_reach_logs_and_bad_credentials_fail_clearly(setup: Setup) -> None:
    plane, server = setup.plane, setup.server
    wrong = f"wrong-{secrets.token_urlsafe(24)}"
    plane.stop()
    plane.extra_env["TENANTRY_OFFSITE_SECRET_ACCESS_KEY"] = wrong
    plane.start()

    done = plane.cli("audit", "verify", check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    said = one_line(done.stderr)
    assert "error (offsite_secret_access_key):" in said and "SignatureDoesNotMatch" in said
    assert "check TENANTRY_OFFSITE_SECRET_ACCESS_KEY" in said and "Traceback" not in said

    worker_log = plane.data_dir / "logs" / "worker.log"  # housekeeping keeps trying to ship
    deadline = time.monotonic() + 30
    while "SignatureDoesNotMatch" not in worker_log.read_text(errors="replace"):
        assert time.monotonic() < deadline, worker_log.read_text()[-3000:]
        time.sleep(1)

    leaked = []
    for path in setup.root.rglob("*"):  # every log and file of the plane, the store's too
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 64 << 20:
                data = path.read_bytes()
                leaked += [str(path) for s in (server.secret_access_key, wrong)
                           if s.encode() in data]
    assert not leaked
    assert plane.log.exists() and worker_log.stat().st_size > 0
