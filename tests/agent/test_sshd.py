"""sshd and sudoers renderers: what they promise, checked by `sshd -t` and `visudo -c`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

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
                   "AllowGroups tnt-login", "Port 2222", "LogLevel VERBOSE"):
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
    files = sshd.render_principals({"t-ann": ["ann@h1"], "t-bob": ["bob@h1", "bob@h1"]})
    assert files == {"t-ann": "ann@h1\n", "t-bob": "bob@h1\n"}


def test_sudoers_is_valid_and_per_person() -> None:
    text = sshd.render_sudoers([
        sshd.SudoRule("t-ann", "all", ("tp-p1",)),
        sshd.SudoRule("t-otto", "service", ("tp-p1", "tp-p2")),
        sshd.SudoRule("t-ivy", None, ("tp-p2",)),
        sshd.SudoRule("t-nobody", None, ())])
    sshd.check_sudoers(text)
    assert "t-ann ALL=(ALL:ALL) NOPASSWD: ALL" in text
    assert "t-otto ALL=(root) NOPASSWD:NOEXEC: TENANTRY_OPERATOR" in text
    assert "t-otto ALL=(tp-p1, tp-p2) NOPASSWD: ALL" in text
    assert "t-ivy ALL=(tp-p2) NOPASSWD: ALL" in text
    assert "t-ivy ALL=(root)" not in text and "t-nobody" not in text
    assert "/usr/bin/supervisorctl restart *" in text
    assert "loglinelen=0" in text


def test_sudoers_check_refuses_broken_rules() -> None:
    with pytest.raises(InvalidInput):
        sshd.check_sudoers("tnt-admin ALL=(ALL) NOPASSWD ALL ALL\n")
    with pytest.raises(InvalidInput):
        sshd.render_sudoers([], operator_commands=["rm -rf /"])


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
    ("Nov 30 00:02:38 2026 : t-otto : a password is required ; PWD=/home/t-otto ; "
     "USER=tp-p1 ; COMMAND=/usr/bin/id -un",
     {"action": "host.sudo", "actor": None, "account": "t-otto", "runas": "tp-p1",
      "command": "/usr/bin/id -un", "refused": "a password is required"}),
    ("Nov 30 00:02:38 2026 : t-otto : PWD=/home/t-otto ; USER=tp-p1 ; COMMAND=/usr/bin/id",
     {"action": "host.sudo", "actor": None, "account": "t-otto", "runas": "tp-p1",
      "command": "/usr/bin/id"}),
    ("Server listening on 127.0.0.1 port 22.", None),
])
def test_host_log_lines_become_events(line: str, event: dict[str, object] | None) -> None:
    assert hostlog.parse_line(line) == event
