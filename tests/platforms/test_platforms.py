"""Platforms end to end against a real `tenantry up`: PostgreSQL, supervisord, Caddy, agent."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests.conftest import ControlPlaneProcess

pytestmark = pytest.mark.slow


def variant(src: Path, dst: Path, version: str, *, replace: dict[str, str] | None = None) -> Path:
    """A copy of a bundle under another version, with manifest lines replaced."""
    shutil.copytree(src, dst)
    manifest = (dst / "tenantry.toml").read_text()
    manifest = manifest.replace(f'version = "{_version_of(manifest)}"', f'version = "{version}"')
    for old, new in (replace or {}).items():
        assert old in manifest, old
        manifest = manifest.replace(old, new)
    (dst / "tenantry.toml").write_text(manifest)
    return dst


def _version_of(manifest: str) -> str:
    line = next(x for x in manifest.splitlines() if x.startswith("version"))
    return line.split('"')[1]


def serves(plane: ControlPlaneProcess, host: str) -> bool:
    """A stopped or removed platform has no route, and so no certificate: TLS fails."""
    try:
        return plane.https(host, "/health").status_code == 200
    except httpx.ConnectError:
        return False


def hostname(platform: dict[str, str]) -> str:
    return f"{platform['name']}.{platform['isv']}.localhost"


def test_create_upgrade_rollback_keeps_data(plane: ControlPlaneProcess, isv: str) -> None:
    created = plane.cli_json("platform", "create", isv, "--tenant", "t1",
                             "--app", "bodyshop@1.0.0", "--wait")
    for key in ("id", "isv", "name", "tenants", "state", "release", "region", "host", "url"):
        assert key in created
    assert created["state"] == "ready"
    assert created["release"] == "bodyshop@1.0.0"
    assert created["tenants"] == ["t1"]
    assert created["url"] == f"https://t1.{isv}.localhost:{plane.ingress_port}/"
    host = hostname(created)

    resp = plane.https(host, "/api/jobs", "POST",
                       json={"registration": "lb-123", "customer": "Ana"})
    assert resp.status_code == 201, resp.text
    job = resp.json()
    moved = plane.https(host, f"/api/jobs/{job['id']}", "PATCH", json={"stage": "estimate"})
    assert moved.json()["stage"] == "estimate"

    upgraded = plane.cli_json("platform", "upgrade", f"{isv}/t1", "--app", "bodyshop@1.1.0",
                              "--wait")
    assert upgraded["release"] == "bodyshop@1.1.0"
    assert upgraded["previous_release"] == "bodyshop@1.0.0"
    assert plane.https(host, "/health").json()["version"] == "1.1.0"
    jobs = plane.https(host, "/api/jobs").json()
    assert [(j["registration"], j["stage"]) for j in jobs] == [("LB-123", "estimate")]
    assert "estimate" in jobs[0]  # the field 1.1.0 added through its migration
    priced = plane.https(host, "/api/jobs", "POST",
                         json={"registration": "XY 9", "customer": "Bo", "estimate": "120.50"})
    assert priced.status_code == 201, priced.text

    back = plane.cli_json("platform", "rollback", created["id"], "--wait")
    assert back["release"] == "bodyshop@1.0.0"
    assert plane.https(host, "/health").json()["version"] == "1.0.0"
    registrations = sorted(j["registration"] for j in plane.https(host, "/api/jobs").json())
    assert registrations == ["LB-123", "XY 9"]

    kinds = [e["kind"] for e in plane.cli_json("events", "--platform", f"{isv}/t1")]
    for kind in ("PLATFORM_CREATED", "DEPLOYED", "UPGRADED", "ROLLED_BACK"):
        assert kind in kinds
    job_list = plane.cli_json("job", "list", "--platform", f"{isv}/t1")
    assert {j["kind"] for j in job_list} == {"create", "upgrade", "rollback"}
    assert all(j["state"] == "succeeded" for j in job_list)
    shown = plane.cli_json("job", "show", str(job_list[0]["id"]))
    assert [s["state"] for s in shown["steps"]] == ["done"] * len(shown["steps"])


@pytest.mark.parametrize("broken", ["migration", "process"])
def test_failed_upgrade_rolls_back_and_keeps_serving(
        plane: ControlPlaneProcess, isv: str, bundles: dict[str, Path], tmp_path: Path,
        broken: str) -> None:
    plane.cli_json("platform", "create", isv, "--tenant", "t2", "--app", "bodyshop@1.0.0",
                   "--wait")
    host = f"t2.{isv}.localhost"
    assert plane.https(host, "/api/jobs", "POST",
                       json={"registration": "KEEP 1", "customer": "C"}).status_code == 201
    if broken == "migration":
        bad = variant(bundles["1.1.0"], tmp_path / "bad", "1.2.0", replace={
            'command = "python -m bodyshop.migrate"':
            'command = "python -c \\"import sys; sys.exit(\'migration exploded\')\\""'})
    else:
        bad = variant(bundles["1.1.0"], tmp_path / "bad", "1.2.0", replace={
            'web = "python -m bodyshop.server"': 'web = "python -m bodyshop.no_such_module"'})
    plane.cli("app", "release", isv, str(bad))

    done = plane.cli("platform", "upgrade", f"{isv}/t2", "--app", "bodyshop@1.2.0", "--wait",
                     "--json", check=False)
    assert done.returncode == 1
    expected = "migration exploded" if broken == "migration" else "did not start"
    assert expected in done.stderr
    platform = plane.cli_json("platform", "show", f"{isv}/t2")
    assert platform["state"] == "ready"
    assert platform["release"] == "bodyshop@1.0.0"
    assert "rolled back" in platform["error"]
    assert plane.https(host, "/health").json()["version"] == "1.0.0"
    assert [j["registration"] for j in plane.https(host, "/api/jobs").json()] == ["KEEP 1"]
    kinds = [e["kind"] for e in plane.cli_json("events", "--platform", f"{isv}/t2")
             if not e["kind"].startswith("ALERT")]  # the probe may notice the failed start
    assert "UPGRADE_FAILED" in kinds and kinds[-1] == "ROLLED_BACK"


def test_multi_tenant_platform_and_filters(plane: ControlPlaneProcess, isv: str) -> None:
    created = plane.cli_json("platform", "create", isv, "--tenant", "t1", "--tenant", "t3",
                             "--name", "shared", "--app", "bodyshop@1.0.0", "--size", "m",
                             "--wait")
    assert created["tenants"] == ["t1", "t3"]
    assert plane.https(f"shared.{isv}.localhost", "/health").status_code == 200
    by_tenant = plane.cli_json("platform", "list", "--isv", isv, "--tenant", "t3")
    assert [p["name"] for p in by_tenant] == ["shared"]
    assert plane.cli_json("platform", "list", "--isv", isv, "--region", "nowhere") == []


def test_stop_start_destroy_leave_nothing(plane: ControlPlaneProcess, isv: str) -> None:
    created = plane.cli_json("platform", "create", isv, "--tenant", "t1", "--name", "gone",
                             "--app", "bodyshop@1.0.0", "--wait")
    host, pid = f"gone.{isv}.localhost", created["id"]
    stopped = plane.cli_json("platform", "stop", f"{isv}/gone", "--wait")
    assert stopped["state"] == "stopped"
    assert not serves(plane, host)
    started = plane.cli_json("platform", "start", f"{isv}/gone", "--wait")
    assert started["state"] == "ready"
    assert plane.https(host, "/health").status_code == 200

    import grp
    import pwd

    from tenantry.agent.backups import isv_group

    assert f"tp-{pid}" in grp.getgrnam(isv_group(isv)).gr_mem  # it reads the ISV's repository
    plane.cli("platform", "destroy", f"{isv}/gone", "--wait")
    # With its route gone, Caddy has no certificate for the name either: the TLS handshake
    # itself is refused.
    with pytest.raises(httpx.ConnectError):
        plane.https(host, "/health")
    assert not (plane.data_dir / "agent" / "platforms" / pid).exists()
    programs = list((plane.data_dir / "agent" / "services" / "programs").glob(f"{pid}-*"))
    assert programs == []
    with pytest.raises(KeyError):
        pwd.getpwnam(f"tp-{pid}")
    with pytest.raises(KeyError):  # the ISV's last platform here: its group goes with it
        grp.getgrnam(isv_group(isv))
    assert plane.cli("platform", "show", f"{isv}/gone", check=False).returncode == 3
