"""The whole path on a real sshd and real sudo, configured by a real agent from tenantry.

Each person logs in as their own account with a 15-minute certificate; their sudo runs are
audited under their name; an operator becomes a hands-on platform's Unix user only while its
ISV grants support access; an ISV admin becomes their own platform's user but not root;
revoking a certificate locks its holder out within a minute.

sudo reads only /etc/sudoers.d, while the agent here writes under a temporary /etc (so the
machine's own sshd is left alone): `Host.install_sudoers` copies the agent's file, as is,
to where sudo reads it, and removes it at the end.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tenantry.access.ssh.policy import LOGIN_GROUP, login_account
from tests.conftest import (
    TENANTRY,
    ControlPlaneProcess,
    api_as,
    free_port,
    make_isv,
    person_token,
    port_block,
    short_tmp,
    wait_until,
)

pytestmark = pytest.mark.slow



@dataclass
class Host:
    name: str
    region: str
    root: Path
    etc: Path
    port: int
    sudoers_copy: Path

    def key(self, name: str) -> Path:
        path = self.root / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                       check=True)
        return path

    def certify(self, api: httpx.Client, key: Path, reason: str = "INC-42 ingress logs",
                ) -> dict[str, Any]:
        issued = api.post("/ssh/certs", json={
            "host": self.name, "public_key": key.with_suffix(".pub").read_text(),
            "reason": reason})
        assert issued.status_code == 201, issued.text
        key.with_name(f"{key.name}-cert.pub").write_text(issued.json()["certificate"] + "\n")
        return dict(issued.json())

    def _argv(self, key: Path, account: str) -> list[str]:
        return ["ssh", "-F", "/dev/null", "-i", str(key),
                "-o", f"CertificateFile={key.with_name(key.name + '-cert.pub')}",
                "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=5", "-p", str(self.port), f"{account}@127.0.0.1"]

    def ssh(self, key: Path, account: str, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._argv(key, account), *command], capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)

    def ssh_session(self, key: Path, account: str, *command: str) -> subprocess.Popen[bytes]:
        """A session left open in the background."""
        return subprocess.Popen([*self._argv(key, account), *command], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def principals(self, account: str) -> str:
        path = self.etc / "etc/ssh/tenantry-principals" / account
        return path.read_text() if path.exists() else ""

    def sudoers(self) -> str:
        path = self.etc / "etc/sudoers.d/tenantry"
        return path.read_text() if path.exists() else ""

    def install_sudoers(self) -> None:
        shutil.copyfile(self.etc / "etc/sudoers.d/tenantry", self.sudoers_copy)
        self.sudoers_copy.chmod(0o440)

    def wait_sudoers(self, predicate: Callable[[str], bool], what: str) -> None:
        wait_until(lambda: predicate(self.sudoers()), 60, what)
        self.install_sudoers()


@pytest.fixture
def host(plane: ControlPlaneProcess) -> Iterator[Host]:
    """A second host with the agent managing its sshd and sudo, and that sshd running."""
    suffix = secrets.token_hex(3)
    root = short_tmp("tnh-")
    etc = root / "etc-root"
    name, region = f"bastion-{suffix}", f"secure-{suffix}"
    sudoers_copy = Path(f"/etc/sudoers.d/tnt-test-{suffix}")
    agent = sshd_proc = None
    before = set(Path("/home").iterdir())
    try:
        token = plane.cli_json("host", "enroll-token")["token"]
        sshd_log = root / "sshd.log"
        Path("/var/log/tenantry").mkdir(parents=True, exist_ok=True)  # sudo's log
        agent = subprocess.Popen(
            [*TENANTRY, "agent", "--data-dir", str(root / "agent"), "--server", plane.url,
             "--region", region, "--name", name, "--ingress-port", str(free_port()),
             "--port-range", "{}-{}".format(*port_block()), "--stop-services-on-exit",
             "--host-access", "--etc-root", str(etc), "--sshd-pid-file", str(root / "sshd.pid"),
             "--sshd-log", str(sshd_log)],
            env={**plane.env, "TENANTRY_ENROLL_TOKEN": token}, stdout=subprocess.DEVNULL,
            stderr=(root / "agent.log").open("wb"), start_new_session=True)
        config = etc / "etc" / "ssh" / "sshd_config"
        wait_until(config.exists, 60, "the agent to write the sshd configuration")
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
        yield Host(name, region, root, etc, port, sudoers_copy)
    finally:
        for proc in (sshd_proc, agent):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(60)
                if proc.poll() is None:
                    proc.kill()
        sudoers_copy.unlink(missing_ok=True)
        for home in set(Path("/home").iterdir()) - before:  # the accounts the agent made
            if home.name.startswith("t-"):
                subprocess.run(["userdel", "-r", "-f", home.name], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_personal_logins_sudo_support_grants_and_revocation(
        plane: ControlPlaneProcess, host: Host, bundles: dict[str, Path]) -> None:
    # --- a provider admin: their own account, root sudo, audited under their name ---
    me = host.key("admin")
    with plane.api() as api:
        issued = host.certify(api, me)
    assert issued["principals"] == [f"admin@{host.name}"] and issued["login"] == "t-admin"
    wait_until(lambda: host.principals("t-admin"), 60, "the admin's account on the host")
    host.wait_sudoers(lambda s: "t-admin ALL=(ALL:ALL) NOPASSWD: ALL" in s, "admin's sudo")
    members = subprocess.run(["getent", "group", LOGIN_GROUP], capture_output=True,
                             text=True).stdout
    assert "t-admin" in members
    done = host.ssh(me, "t-admin", "sudo", "-n", "/usr/bin/id", "-un")
    assert done.returncode == 0 and done.stdout.strip() == "root", done.stderr
    # someone else's account does not take my certificate, nor does root
    assert host.ssh(me, "root", "true").returncode == 255
    assert host.ssh(me, "tnt-operator", "true").returncode == 255

    # --- an ISV with a hands-on platform on this host ---
    isv = make_isv(plane, bundles)
    created = plane.cli_json("platform", "create", isv, "--tenant", "t1", "--app",
                             "bodyshop@1.0.0", "--region", host.region, "--service-level",
                             "hands-on", "--wait")
    assert created["host"] == host.name
    platform_user = f"tp-{created['id']}"

    # --- a provider operator: service commands only; the hands-on platform is closed ---
    otto, otto_token = person_token(plane, "provider-operator")
    otto_key, otto_account = host.key("otto"), login_account(otto)
    with api_as(plane, otto_token) as api:
        host.certify(api, otto_key, "INC-43 slow pages")
    host.wait_sudoers(lambda s: f"{otto_account} ALL=(root)" in s, "the operator's sudo")
    assert platform_user not in host.sudoers()
    as_platform = ("sudo", "-n", "-u", platform_user, "/usr/bin/id", "-un")
    refused = host.ssh(otto_key, otto_account, *as_platform)
    assert refused.returncode != 0, refused.stdout
    assert host.ssh(otto_key, otto_account, "sudo", "-n", "/usr/bin/id").returncode != 0

    # --- the ISV's admin: may become their platform's user, never root ---
    ivy, ivy_token = person_token(plane, "isv-admin", isv)
    ivy_key, ivy_account = host.key("ivy"), login_account(ivy)
    with api_as(plane, ivy_token) as ivy_api:
        host.certify(ivy_api, ivy_key, "check the uploads dir")
        host.wait_sudoers(lambda s: f"{ivy_account} ALL=({platform_user})" in s, "ISV sudo")
        done = host.ssh(ivy_key, ivy_account, *as_platform)
        assert done.returncode == 0 and done.stdout.strip() == platform_user, done.stderr
        assert host.ssh(ivy_key, ivy_account, "sudo", "-n", "/usr/bin/id").returncode != 0

        # --- support access: granted by the ISV admin, for hours, then revoked ---
        granted = ivy_api.post("/support-grants", json={
            "platform": created["id"], "hours": 2, "reason": "TICKET-7 invoices look wrong"})
        assert granted.status_code == 201, granted.text
        host.wait_sudoers(lambda s: f"{otto_account} ALL=({platform_user})" in s,
                          "the support grant to reach the host")
        done = host.ssh(otto_key, otto_account, *as_platform)
        assert done.returncode == 0 and done.stdout.strip() == platform_user, done.stderr
        with api_as(plane, otto_token) as otto_api:  # the provider sees it, may not make one
            assert [g["id"] for g in otto_api.get("/support-grants").json()] == [
                granted.json()["id"]]
            assert otto_api.post("/support-grants", json={
                "platform": created["id"], "hours": 1, "reason": "self-service"},
            ).status_code == 403
        revoked = ivy_api.post(f"/support-grants/{granted.json()['id']}/revoke")
        assert revoked.status_code == 200 and revoked.json()["active"] is False
    host.wait_sudoers(lambda s: f"{otto_account} ALL=({platform_user})" not in s,
                      "the revoked grant to leave the host")
    assert host.ssh(otto_key, otto_account, *as_platform).returncode != 0

    # --- revoking a certificate locks its holder out within a minute, open sessions too ---
    session = host.ssh_session(me, "t-admin", "sleep", "600")
    try:
        wait_until(lambda: _sessions_of("t-admin") > 0, 30, "the admin's session to open")
        with plane.api() as api:
            assert api.post(f"/ssh/certs/{issued['serial']}/revoke").status_code == 200
        took = wait_until(lambda: host.ssh(me, "t-admin", "true").returncode != 0, 60,
                          "the revocation to reach the host")
        print(f"revocation took effect on the host after {took:.1f} s")
        took = wait_until(lambda: session.poll() is not None, 60,
                          "the revoked person's open session to end")
        print(f"open session ended {took:.1f} s after that")
    finally:
        if session.poll() is None:
            session.kill()
        session.wait()

    # --- logins and sudo runs are in the audit log, under each person's name ---
    def audited() -> bool:
        rows = plane.cli_json("audit", "list", "--target", f"host:{host.name}",
                              "--limit", "200")
        seen = {(r["actor"], r["action"], r["outcome"]) for r in rows}
        sudo = [r for r in rows if r["action"] == "host.sudo"]
        return ({("admin", "ssh.login", "ok"), (otto, "ssh.login", "ok"),
                 (ivy, "ssh.login", "ok")} <= seen
                and any(r["actor"] == "admin" and "/usr/bin/id" in r["detail"]["command"]
                        for r in sudo)
                and any(r["actor"] == otto and r["detail"].get("runas") == platform_user
                        and "refused" not in r["detail"] for r in sudo)
                and any(r["actor"] == otto and "refused" in r["detail"] for r in sudo)
                and ("admin", "ssh.session.ended", "ok") in seen)

    wait_until(audited, 60, "host logins and sudo runs to reach the audit log")
    grants = plane.cli_json("audit", "list", "--action", "support.grant", "--limit", "20")
    assert any(r["actor"] == ivy for r in grants)
    plane.cli("platform", "destroy", created["id"], "--wait")


def _sessions_of(account: str) -> int:
    done = subprocess.run(["pgrep", "-c", "-u", account], capture_output=True, text=True)
    return int(done.stdout.strip() or 0)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
