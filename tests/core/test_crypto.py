"""After a full scenario, no secret is in the control-plane store or in any log in plaintext.

Secrets collected: a platform's database password (from its app process's environment), its
ingress private key, an uploaded site certificate's key, the admin token and password, the
master keys before and after a rotation, and every unwrapped data key. Searched: a
`pg_dump` of the store, everything under DATA_DIR/logs, the `up` log, the store's
postgres.log, supervisord's and the platforms' logs and Caddy's logs.

Not searched, because holding secrets is their job: the agent's own 0600 runtime files
(`agent/agent.json`, supervisord's `programs/*.conf` with each app's environment), Caddy's
state under `agent/ingress` (it serves the keys), the platforms' data directories, and the
key files in DATA_DIR itself (master.key, admin-*, ca-key.pem).
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from tenantry.core.config import load_settings
from tenantry.core.keystore import DataKey
from tenantry.core.runtime import make_runtime
from tenantry.platforms.models import Platform
from tests.access.test_keys_certs import INTER, issue
from tests.conftest import ControlPlaneProcess, make_isv

pytestmark = pytest.mark.slow

PG_DUMP = "/usr/lib/postgresql/15/bin/pg_dump"


def app_database_password(platform_id: str) -> str:
    uid = pwd.getpwnam(f"tp-{platform_id}").pw_uid
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for entry in environ:
            if entry.startswith(b"DATABASE_URL="):
                password = urlsplit(entry.split(b"=", 1)[1].decode()).password
                if password:
                    return password
    raise AssertionError(f"no process of tp-{platform_id} has a DATABASE_URL with a password")


def pem_needles(pem: str) -> list[str]:
    """The base64 lines of a PEM key: any of them found means the key leaked."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")
            and len(line) >= 40]


def haystacks(plane: ControlPlaneProcess) -> dict[str, bytes]:
    data = plane.data_dir
    found: dict[str, bytes] = {}
    dump = subprocess.run([PG_DUMP, "-h", str(data / "controlplane" / "run"), "-U", "tenantry",
                           "-d", "tenantry"], capture_output=True, check=True, timeout=120)
    found["pg_dump"] = dump.stdout
    assert b"CREATE TABLE public.data_keys" in dump.stdout
    found["up log"] = plane.log.read_bytes()
    logs = [*(data / "logs").rglob("*"), data / "controlplane" / "postgres.log",
            *(data / "agent" / "services" / "logs").rglob("*"),
            *(data / "agent" / "ingress").rglob("*.log"),
            *(p for d in (data / "agent" / "platforms").glob("*/logs") for p in d.rglob("*"))]
    for path in logs:
        if path.is_file():
            found[str(path.relative_to(data))] = path.read_bytes()
    assert "logs/api.log" in found and "logs/worker.log" in found
    return found


def test_no_secret_in_store_or_logs(plane: ControlPlaneProcess, isv: str,
                                    bundles: dict[str, Path]) -> None:
    created = plane.cli_json("platform", "create", isv, "--tenant", "t1",
                             "--app", "bodyshop@1.0.0", "--wait")
    site = issue("shop", INTER, names=["shop.example.com"])
    with plane.api() as api:
        resp = api.post(f"/isvs/{isv}/certificates", json={
            "domain": "shop.example.com", "certificate_pem": site.pem + INTER.pem,
            "key_pem": site.key_pem})
        assert resp.status_code == 201, resp.text
        listed = api.get(f"/isvs/{isv}/certificates").json()
        assert [c["domain"] for c in listed] == ["shop.example.com"]
        assert "key_pem" not in listed[0] and "PRIVATE KEY" not in resp.text
    old_master = (plane.data_dir / "master.key").read_text().strip()

    # rotate the master key while everything runs, then make a data key under the new one
    plane.cli("secrets", "rotate-master")
    new_master = (plane.data_dir / "master.key").read_text().strip()
    assert new_master != old_master
    second = make_isv(plane, bundles)
    again = plane.cli_json("platform", "create", second, "--tenant", "t1",
                           "--app", "bodyshop@1.0.0", "--wait")
    assert again["state"] == "ready"
    status = plane.cli_json("secrets", "status")
    assert [row["current"] for row in status] == ["yes"]
    assert plane.https(f"t1.{isv}.localhost", "/health").status_code == 200

    secrets: dict[str, list[str]] = {
        "database password": [app_database_password(created["id"]),
                              app_database_password(again["id"])],
        "admin token": [plane.token],
        "admin password": [(plane.data_dir / "admin-password").read_text().strip()],
        "master key": [old_master, new_master],
        "site key": pem_needles(site.key_pem),
    }
    runtime = make_runtime(load_settings(data_dir=plane.data_dir), pool_size=1)
    try:
        with runtime.sessions() as session:
            platform = session.get(Platform, created["id"])
            assert platform is not None and platform.desired.cert is not None
            ingress_key = runtime.secrets.decrypt(platform.desired.cert.key)
            secrets["ingress key"] = pem_needles(ingress_key.get_secret_value())
            secrets["data keys"] = [runtime.secrets.master.unwrap(k.wrapped).decode()
                                    for k in session.scalars(select(DataKey))]
    finally:
        runtime.engine.dispose()
    assert all(len(s) >= 16 for values in secrets.values() for s in values)
    # the one place the app's password is meant to be: its program's 0600 environment
    programs = b"".join(p.read_bytes() for p in
                        (plane.data_dir / "agent" / "services" / "programs").glob("*.conf"))
    assert secrets["database password"][0].encode() in programs
    assert len(secrets["data keys"]) >= 3  # provider, and one per ISV

    leaks = [(what, where) for where, content in haystacks(plane).items()
             for what, values in secrets.items() for value in values
             if value.encode() in content]
    assert leaks == []
