"""The whole path: an agent configures a host's sshd from tenantry; a person logs in with a
15-minute certificate; revoking it locks them out within a minute; the login is audited."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from tests.conftest import TENANTRY, ControlPlaneProcess, free_port, port_block, short_tmp

pytestmark = pytest.mark.slow
ACCOUNT = "tnt-admin"


def wait_until(predicate: object, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def ssh_login(key: Path, cert: Path, port: int) -> int:
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(key), "-o", f"CertificateFile={cert}",
         "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
         "-o", "ConnectTimeout=5", "-p", str(port), f"{ACCOUNT}@127.0.0.1", "true"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL).returncode


def test_certificate_login_revocation_and_audit(plane: ControlPlaneProcess) -> None:
    root = short_tmp("tnh-")
    etc = root / "etc-root"
    agent = sshd_proc = None
    made_account = subprocess.run(["id", ACCOUNT], capture_output=True).returncode != 0
    try:
        if made_account:
            subprocess.run(["useradd", "-m", "-s", "/bin/sh", ACCOUNT], check=True)
            subprocess.run(["usermod", "-p", "*", ACCOUNT], check=True)
        token = plane.cli_json("host", "enroll-token")["token"]
        sshd_log = root / "sshd.log"
        agent = subprocess.Popen(
            [*TENANTRY, "agent", "--data-dir", str(root / "agent"), "--server", plane.url,
             "--region", "secure", "--name", "bastion-1", "--ingress-port", str(free_port()),
             "--port-range", "{}-{}".format(*port_block()), "--stop-services-on-exit",
             "--host-access", "--etc-root", str(etc), "--sshd-pid-file", str(root / "sshd.pid"),
             "--sshd-log", str(sshd_log)],
            env={**plane.env, "TENANTRY_ENROLL_TOKEN": token}, stdout=subprocess.DEVNULL,
            stderr=(root / "agent.log").open("wb"), start_new_session=True)
        config = etc / "etc" / "ssh" / "sshd_config"
        wait_until(lambda: (etc / "etc/ssh/tenantry-principals" / ACCOUNT).exists()
                   and config.exists(), 60, "the agent to write the sshd configuration")
        assert "bastion-1" in (etc / "etc/ssh/tenantry-principals" / ACCOUNT).read_text()
        sudoers = (etc / "etc/sudoers.d/tenantry").read_text()
        assert f"{ACCOUNT} ALL=(ALL:ALL) NOPASSWD: ALL" in sudoers

        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(root / "host_key")], check=True)
        port = free_port()
        sshd_proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(sshd_log),
             "-o", f"Port={port}", "-o", "ListenAddress=127.0.0.1",
             "-o", f"HostKey={root / 'host_key'}", "-o", f"PidFile={root / 'sshd.pid'}",
             "-o", "UsePAM=no", "-o", "StrictModes=no"])
        wait_until(lambda: _listening(port), 15, "sshd")

        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(root / "me")], check=True)
        with plane.api() as api:
            issued = api.post("/ssh/certs", json={
                "host": "bastion-1", "public_key": (root / "me.pub").read_text(),
                "reason": "INC-42: look at the ingress logs"})
            assert issued.status_code == 201, issued.text
            cert = root / "me-cert.pub"
            cert.write_text(issued.json()["certificate"] + "\n")
            assert ssh_login(root / "me", cert, port) == 0

            revoked = api.post(f"/ssh/certs/{issued.json()['serial']}/revoke")
            assert revoked.status_code == 200, revoked.text
        took = wait_until(lambda: ssh_login(root / "me", cert, port) != 0, 60,
                          "the revocation to reach the host")
        print(f"revocation took effect on the host after {took:.1f} s")

        def audited() -> bool:
            rows = plane.cli_json("audit", "list", "--action", "ssh.login", "--limit", "20")
            return any(r["actor"] == "admin" for r in rows)

        wait_until(audited, 60, "the host login to reach the audit log")
    finally:
        for proc in (sshd_proc, agent):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(60)
                if proc.poll() is None:
                    proc.kill()
        if made_account:
            subprocess.run(["userdel", "-r", "-f", ACCOUNT], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
