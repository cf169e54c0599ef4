"""A second agent on the same machine enrolls as another host in another region."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import httpx
import pytest

from tests.conftest import (
    TENANTRY,
    ControlPlaneProcess,
    free_port,
    port_block,
    short_tmp,
    wait_until,
)

pytestmark = pytest.mark.slow


def test_second_agent_in_another_region(plane: ControlPlaneProcess, isv: str) -> None:
    token = plane.cli_json("host", "enroll-token")["token"]
    root = short_tmp("tna-")
    ingress_port = free_port()
    log = (root / "agent.log").open("wb")
    agent = subprocess.Popen(
        [*TENANTRY, "agent", "--data-dir", str(root / "agent"), "--server", plane.url,
         "--region", "eu", "--name", "eu-host-1", "--ingress-port", str(ingress_port),
         "--port-range", "{}-{}".format(*port_block()), "--stop-services-on-exit"],
        env={**plane.env, "TENANTRY_ENROLL_TOKEN": token}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not any(h["name"] == "eu-host-1" and h["state"] == "online"
                      for h in plane.cli_json("host", "list")):
            assert agent.poll() is None, (root / "agent.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.5)
        # The token was for one enrollment only.
        again = plane.api().post("/agent/enroll", json={
            "token": token, "name": "eu-host-2", "region": "eu", "ingress_port": 1234})
        assert again.status_code == 401

        created = plane.cli_json("platform", "create", isv, "--tenant", "t1", "--region", "eu",
                                 "--app", "bodyshop@1.0.0", "--wait")
        assert (created["region"], created["host"]) == ("eu", "eu-host-1")
        assert created["url"] == f"https://t1.{isv}.localhost:{ingress_port}/"
        assert (root / "agent" / "platforms" / created["id"]).is_dir()
        probe = ControlPlaneProcess(data_dir=plane.data_dir, listen_port=plane.listen_port,
                                    ingress_port=ingress_port)
        assert probe.https(f"t1.{isv}.localhost", "/health").status_code == 200
        assert plane.cli_json("platform", "list", "--region", "eu")[0]["id"] == created["id"]

        # Its agent serves its exporters to the same Prometheus, found by discovery.
        def scraped() -> set[str]:
            found = httpx.get(f"{prometheus_url(plane)}/api/v1/targets", timeout=5).json()
            return {t["labels"]["job"] for t in found["data"]["activeTargets"]
                    if t["labels"].get("host") == "eu-host-1" and t["health"] == "up"}
        wait_until(lambda: {"node", "agent", "postgres", "probe_proxy"} <= scraped(), 60,
                   "eu-host-1 scraped")

        # Its agent probes the platform through its ingress, and says so to Prometheus.
        def probed() -> list[str]:
            found = httpx.get(f"{prometheus_url(plane)}/api/v1/query", timeout=5, params={
                "query": 'tenantry_probe_success{host="eu-host-1"}'}).json()
            return [f'{r["metric"]["platform"]}={r["value"][1]}'
                    for r in found["data"]["result"]]
        wait_until(lambda: probed() == [f"{isv}/t1=1"], 60, "the platform probed by its agent")

        # --plan on a converged host has nothing to do.
        plan = subprocess.run([*TENANTRY, "agent", "--data-dir", str(root / "agent"), "--plan"],
                              env=plane.env, capture_output=True, text=True, timeout=60)
        assert plan.returncode == 0, plan.stderr
        assert plan.stdout.strip() == ""
        assert "converged" in plan.stderr

        plane.cli("platform", "destroy", created["id"], "--wait")
        assert not (root / "agent" / "platforms" / created["id"]).exists()

        # A host that stops reporting goes offline, and comes back when its agent does.
        agent.kill()
        agent.wait()
        wait_until(lambda: [a for a in plane.cli_json("alert", "list", "--host", "eu-host-1",
                                                      "--open") if a["check"] == "heartbeat"],
                   60, "the silent host's heartbeat alert")
        wait_event(plane, "HOST_OFFLINE", timeout=60)
        agent = subprocess.Popen(
            [*TENANTRY, "agent", "--data-dir", str(root / "agent"), "--stop-services-on-exit"],
            env=plane.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_event(plane, "HOST_ONLINE", timeout=60)
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(60)
        except subprocess.TimeoutExpired:
            agent.kill()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def prometheus_url(plane: ControlPlaneProcess) -> str:
    import json

    stack = json.loads((plane.data_dir / "monitoring" / "stack.json").read_text())
    return str(stack["prometheus"])


def wait_event(plane: ControlPlaneProcess, kind: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e["kind"] == kind and "eu-host-1" in e["message"]
               for e in plane.cli_json("events", "--limit", "50")):
            return
        time.sleep(1)
    raise AssertionError(f"no {kind} event for eu-host-1 within {timeout} s")


def test_region_without_hosts_is_refused(plane: ControlPlaneProcess, isv: str) -> None:
    before = plane.cli_json("platform", "list", "--isv", isv)
    done = plane.cli("platform", "create", isv, "--tenant", "t1", "--region", "mars",
                     "--app", "bodyshop@1.0.0", check=False)
    assert done.returncode == 3
    assert "region" in done.stderr
    assert plane.cli_json("platform", "list", "--isv", isv) == before


