"""A real sshd, configured by the agent's renderer, trusts certificates from tenantry's CA.

Right principal logs in; a plain key, a wrong principal, an expired or revoked certificate
and root are refused. Also: sshd's own log lines become audit events (agent.hostlog).
"""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tenantry.access.ssh.ca import SshCertificateAuthority
from tenantry.agent import hostlog, sshd

pytestmark = pytest.mark.slow

NOW = dt.datetime.now(dt.UTC)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    root: Path
    port: int
    account: str
    ca: SshCertificateAuthority
    principals_dir: Path
    krl: Path
    log: Path

    def key(self, name: str) -> Path:
        path = self.root / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                       check=True)
        return path

    def certify(self, key: Path, principals: list[str], serial: int, *,
                ca: SshCertificateAuthority | None = None,
                valid_before: dt.datetime | None = None) -> Path:
        cert = (ca or self.ca).sign(
            public_key=key.with_suffix(".pub").read_text(), serial=serial,
            key_id=f"alice/{serial}", principals=principals,
            valid_after=NOW - dt.timedelta(minutes=2),
            valid_before=valid_before or NOW + dt.timedelta(minutes=15),
            extensions=["permit-pty"])
        path = key.parent / f"{key.name}-cert.pub"
        path.write_text(cert + "\n")
        return path

    def login(self, key: Path, cert: Path | None, user: str | None = None) -> int:
        argv = ["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-p", str(self.port)]
        argv += ["-o", f"CertificateFile={cert}"] if cert else []
        done = subprocess.run([*argv, f"{user or self.account}@127.0.0.1", "true"],
                              capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
        return done.returncode


@pytest.fixture
def server() -> Iterator[Server]:
    account = f"tnt-t-{secrets.token_hex(3)}"
    root = Path(tempfile.mkdtemp(prefix=f"{account}-", dir="/tmp"))
    root.chmod(0o755)
    subprocess.run(["groupadd", account], check=True)
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", "-g", account, account], check=True)
    proc: subprocess.Popen[bytes] | None = None
    try:
        # sshd refuses accounts with a locked password ("!") even for keys; "*" is no password
        subprocess.run(["usermod", "-p", "*", account], check=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        ca = SshCertificateAuthority.generate()
        (root / "ca.pub").write_text(ca.public_key_line() + "\n")
        principals_dir = root / "principals"
        principals_dir.mkdir()
        files = sshd.render_principals({account: ["tenantry-provider-admin@h1"],
                                        "root": ["tenantry-provider-admin@h1"]})
        for name, body in files.items():
            (principals_dir / name).write_text(body)
        krl = root / "revoked.krl"
        krl.write_bytes(ca.krl([]))
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(root / "host_key")], check=True)
        port = _free_port()
        config = root / "sshd_config"
        config.write_text(sshd.render_sshd_config(
            ca_public_key_file=root / "ca.pub", principals_dir=principals_dir, krl_file=krl,
            port=port, listen_addresses=["127.0.0.1"], host_keys=[root / "host_key"],
            pid_file=root / "sshd.pid", use_pam=False, strict_modes=False,
            login_group=account))
        subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(config)], check=True)
        log = root / "sshd.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                                    stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"sshd did not start: {log.read_text()}") from None
                time.sleep(0.1)
        yield Server(root, port, account, ca, principals_dir, krl, log)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        subprocess.run(["userdel", "-r", "-f", account], capture_output=True, check=False)
        subprocess.run(["groupdel", account], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_only_valid_certificates_log_in(server: Server) -> None:
    key = server.key("id_ed25519")
    good = server.certify(key, ["tenantry-provider-admin@h1"], serial=10)
    assert server.login(key, good) == 0

    plain = server.key("plain")  # (ssh would load id_ed25519-cert.pub by itself)
    assert server.login(plain, None) == 255, "a plain key must not log in"

    wrong = server.key("wrong")
    assert server.login(wrong, server.certify(wrong, ["tenantry-provider-admin@h2"], 11)) == 255

    other_ca = SshCertificateAuthority.generate()
    stranger = server.key("stranger")
    assert server.login(stranger, server.certify(stranger, ["tenantry-provider-admin@h1"], 12,
                                                 ca=other_ca)) == 255

    old = server.key("old")
    expired = server.certify(old, ["tenantry-provider-admin@h1"], 13,
                             valid_before=NOW - dt.timedelta(seconds=5))
    assert server.login(old, expired) == 255

    assert server.login(key, good, user="root") == 255, "root may never log in"

    # revocation: sshd rereads the KRL on every authentication
    server.krl.write_bytes(server.ca.krl([10]))
    assert server.login(key, good) == 255
    fresh = server.key("fresh")
    assert server.login(fresh, server.certify(fresh, ["tenantry-provider-admin@h1"], 14)) == 0

    events = list(hostlog.parse_lines(server.log.read_text().splitlines()))
    logins = [e for e in events if e["action"] == "ssh.login"]
    assert [(e["actor"], e["serial"], e["account"]) for e in logins] == [
        ("alice", 10, server.account), ("alice", 14, server.account)]
    assert any(e["action"] == "ssh.login.failed" for e in events)

