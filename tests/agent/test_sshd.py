"""sshd and sudoers renderers: what they promise, checked by `sshd -t` and `visudo -c`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tenantry.access.ssh.policy import host_accounts
from tenantry.agent import hostlog, sshd
from tenantry.core.errors import InvalidInput


def _config(tmp: Path) -> str:
    return sshd.render_sshd_config(ca_public_key_file=tmp / "ca.pub",
                                   principals_dir=tmp / "principals", krl_file=tmp / "krl",
                                   port=2222, host_keys=[tmp / "host_key"])


def test_sshd_config_trusts_only_the_ca(tmp_path: Path) -> None:
    lines = _config(tmp_path).splitlines()
    for wanted in ("PermitRootLogin no", "PasswordAuthentication no",
                   "KbdInteractiveAuthentication no", "AuthorizedKeysFile none",
                   f"TrustedUserCAKeys {tmp_path}/ca.pub",
                   f"AuthorizedPrincipalsFile {tmp_path}/principals/%u",
                   f"RevokedKeys {tmp_path}/krl", "AuthenticationMethods publickey",
                   "AllowUsers tnt-admin tnt-operator", "Port 2222", "LogLevel VERBOSE"):
        assert wanted in lines


def test_sshd_accepts_the_config(tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(tmp_path / "host_key")], check=True)
    (tmp_path / "config").write_text(_config(tmp_path))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    done = subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(tmp_path / "config")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("bad", ["a b", "x#y", 'q"'])
def test_renderers_refuse_injection(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidInput):
        sshd.render_principals({"tnt-admin": [bad]})
    with pytest.raises(InvalidInput):
        sshd.render_sshd_config(ca_public_key_file=tmp_path / bad, principals_dir=tmp_path,
                                krl_file=tmp_path / "krl")


def test_principal_files_per_account() -> None:
    files = sshd.render_principals(host_accounts(host="h1", hands_on_isvs=["acme"]))
    assert files == {
        "tnt-admin": "tenantry-provider-admin@h1\n",
        "tnt-operator": "tenantry-isv-acme-operator@h1\ntenantry-provider-operator@h1\n",
    }


def test_sudoers_is_valid_and_per_role() -> None:
    text = sshd.render_sudoers()
    sshd.check_sudoers(text)
    assert "tnt-admin ALL=(ALL:ALL) NOPASSWD: ALL" in text
    assert "tnt-operator ALL=(root) NOPASSWD:NOEXEC: TENANTRY_OPERATOR" in text
    assert "/usr/bin/supervisorctl restart *" in text
    assert "loglinelen=0" in text


def test_sudoers_check_refuses_broken_rules() -> None:
    with pytest.raises(InvalidInput):
        sshd.check_sudoers("tnt-admin ALL=(ALL) NOPASSWD ALL ALL\n")
    with pytest.raises(InvalidInput):
        sshd.render_sudoers(operator_commands=["rm -rf /"])


@pytest.mark.parametrize(("line", "event"), [
    ("Accepted publickey for tnt-admin from 10.0.0.5 port 50122 ssh2: ED25519-CERT "
     "SHA256:abc ID alice/42 (serial 42) CA ED25519 SHA256:def",
     {"action": "ssh.login", "actor": "alice", "account": "tnt-admin", "serial": 42,
      "from": "10.0.0.5"}),
    ("Mar  3 10:00:01 2025 : tnt-operator : TTY=pts/0 ; PWD=/home/tnt-operator ; "
     "USER=root ; COMMAND=/usr/bin/supervisorctl restart web",
     {"action": "host.sudo", "actor": None, "account": "tnt-operator", "runas": "root",
      "command": "/usr/bin/supervisorctl restart web"}),
    ("Mar  3 10:00:01 2025 : tnt-operator : command not allowed ; TTY=pts/0 ; PWD=/ ; "
     "USER=root ; COMMAND=/bin/bash",
     {"action": "host.sudo", "actor": None, "account": "tnt-operator", "runas": "root",
      "command": "/bin/bash", "refused": "command not allowed"}),
    ("Server listening on 127.0.0.1 port 22.", None),
])
def test_host_log_lines_become_events(line: str, event: dict[str, object] | None) -> None:
    assert hostlog.parse_line(line) == event
