"""A real S3-compatible server for tests: moto's server mode, on loopback, with IAM auth on.

Tests that need it import the fixture (`from tests.s3server import s3_server`). The server
checks signatures (INITIAL_NO_AUTH_ACTION_COUNT): the first three calls, unauthenticated,
create an IAM user with an access key allowed `s3:*`, and every later call must be signed
with that key, so a wrong secret is refused as it would be by a real provider.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, short_tmp

SETUP_CALLS = 3  # create_user, create_access_key, put_user_policy


@dataclass
class S3Server:
    endpoint: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = "us-east-1"
    log: Path | None = None

    def client(self, *, secret: str | None = None) -> Any:
        import boto3.session
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=secret or self.secret_access_key,
            config=Config(s3={"addressing_style": "path"},
                          retries={"mode": "standard", "total_max_attempts": 2}))

    def new_bucket(self, *, lock: bool = True) -> str:
        """A fresh bucket; with Object Lock (which turns versioning on) unless `lock=False`."""
        name = f"tnt-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
        return name

    def env(self, bucket: str, prefix: str = "tenantry") -> dict[str, str]:
        """The control plane's settings for a bucket of this server."""
        return {"TENANTRY_OFFSITE_URL": f"s3://{bucket}/{prefix}",
                "TENANTRY_OFFSITE_ENDPOINT": self.endpoint,
                "TENANTRY_OFFSITE_REGION": self.region,
                "TENANTRY_OFFSITE_ACCESS_KEY_ID": self.access_key_id,
                "TENANTRY_OFFSITE_SECRET_ACCESS_KEY": self.secret_access_key}


def _iam(endpoint: str) -> Any:
    import boto3.session

    return boto3.session.Session().client(
        "iam", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="AKIDSETUP", aws_secret_access_key="setup-only")  # noqa: S106


@contextlib.contextmanager
def moto_server(timeout: float = 60) -> Iterator[S3Server]:
    """`python -m moto.server` on 127.0.0.1, stopped by its PID afterwards, even on failure."""
    root = short_tmp("tnt-s3-")
    port = free_port()
    log = root / "moto.log"
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(SETUP_CALLS))
    for name in [k for k in env if k.startswith("AWS_")]:
        del env[name]  # no stray credentials or profiles of the machine
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=root, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto server exited: {log.read_text()[-2000:]}")
            try:  # moto's own API does not count as one of the unauthenticated calls
                if httpx.get(f"{endpoint}/moto-api/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not answer: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        iam = _iam(endpoint)
        iam.create_user(UserName="tenantry")
        key = iam.create_access_key(UserName="tenantry")["AccessKey"]
        iam.put_user_policy(UserName="tenantry", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        yield S3Server(endpoint=endpoint, access_key_id=key["AccessKeyId"],
                       secret_access_key=key["SecretAccessKey"], log=log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto server for the session; each test makes its own buckets (`new_bucket`)."""
    with moto_server() as server:
        yield server


@dataclass
class TlsFront:
    """HTTPS on `localhost:port` before a plain-HTTP server, with a certificate of its own
    (self-signed for `localhost`; `ca_file` is what a client trusts). pgBackRest reaches S3
    over TLS only, and moto's own TLS breaks its PUTs (docs/backups.md)."""

    port: int
    ca_file: Path
    process: subprocess.Popen[bytes] | None = None
    config: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"https://localhost:{self.port}"

    def start(self, timeout: float = 30) -> None:
        assert self.config is not None
        self.process = subprocess.Popen(
            ["caddy", "run", "--config", str(self.config)], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(self.endpoint, verify=str(self.ca_file), timeout=2)
                return
            except httpx.HTTPError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the TLS front did not come up") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None


@contextlib.contextmanager
def tls_front(upstream: str) -> Iterator[TlsFront]:
    """Caddy terminating TLS for `localhost` and passing everything to `upstream`
    (http://HOST:PORT), Host header kept (S3 signatures cover it); stopped by its PID."""
    root = short_tmp("tnt-tls-")
    cert, key = root / "localhost.pem", root / "localhost-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    front = TlsFront(port=free_port(), ca_file=cert, config=root / "caddy.json")
    dial = upstream.removeprefix("http://")
    front.config.write_text(json.dumps({
        "admin": {"disabled": True},
        "logging": {"logs": {"default": {"level": "ERROR"}}},
        "apps": {
            "http": {"servers": {"s3": {
                "listen": [f"127.0.0.1:{front.port}"],
                "routes": [{"handle": [{"handler": "reverse_proxy",
                                        "upstreams": [{"dial": dial}]}]}],
                "tls_connection_policies": [{}],
                "automatic_https": {"disable": True}}}},
            "tls": {"certificates": {"load_files": [{"certificate": str(cert),
                                                     "key": str(key)}]}},
        }}))
    try:
        front.start()
        yield front
    finally:
        front.stop()
        shutil.rmtree(root, ignore_errors=True)
