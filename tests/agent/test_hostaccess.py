"""HostAccess.converge with a fake control plane: files per person, and a person whose
account name is unusable or cannot be made is left out instead of stopping the agent."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest

from tenantry.access.ssh.ca import SshCertificateAuthority
from tenantry.agent.client import ControlPlaneClient
from tenantry.agent.hostaccess import HostAccess


class FakePlane:
    def __init__(self, people: list[dict[str, Any]]) -> None:
        self.ca = SshCertificateAuthority.generate()
        self.people = people
        self.events: list[dict[str, Any]] = []

    def ssh_config(self) -> dict[str, Any]:
        return {"ca_public_key": self.ca.public_key_line(), "login_group": self.group,
                "people": self.people, "revoked_serials": []}

    def ssh_krl(self) -> bytes:
        return self.ca.krl([])

    def ssh_events(self, events: list[dict[str, Any]]) -> None:
        self.events.extend(events)

    group = f"tnt-g{secrets.token_hex(3)}"


def person(account: str, root: str | None) -> dict[str, Any]:
    name = account.removeprefix("t-")
    return {"username": name, "account": account, "principals": [f"{name}@h1"],
            "root": root, "platforms": [], "valid_before": "2099-01-01T00:00:00Z"}


@pytest.mark.skipif(subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip()
                    != "0", reason="makes Unix accounts: needs root")
def test_accounts_files_and_a_refused_account(tmp_path: Path) -> None:
    good = f"t-ok{secrets.token_hex(3)}"
    plane = FakePlane([person(good, "service"), person("t-Not!Valid", "all"),
                       person("t-x:y", "all")])
    access = HostAccess(client=cast(ControlPlaneClient, plane), state_dir=tmp_path / "state",
                        etc_root=tmp_path / "etc", sudo_log=tmp_path / "sudo.log",
                        manage_accounts=True)
    (tmp_path / "state").mkdir()
    try:
        access.converge(generation=1)
        members = subprocess.run(["getent", "group", plane.group], capture_output=True,
                                 text=True).stdout
        assert good in members
        principals = tmp_path / "etc/etc/ssh/tenantry-principals"
        assert (principals / good).read_text() == f"{good.removeprefix('t-')}@h1\n"
        assert not (principals / "t-Not!Valid").exists()
        assert not (principals / "t-x:y").exists()
        sudoers = (tmp_path / "etc/etc/sudoers.d/tenantry").read_text()
        assert f"{good} ALL=(root) NOPASSWD:NOEXEC: TENANTRY_OPERATOR" in sudoers
        assert "Not!Valid" not in sudoers and "t-x:y" not in sudoers
        assert f"AllowGroups {plane.group}" in (tmp_path / "etc/etc/ssh/sshd_config").read_text()

        # their certificate ended: the account stays, but its principals file is emptied
        plane.people = []
        access.converge(generation=2)
        assert (principals / good).read_text() == ""
        assert good not in (tmp_path / "etc/etc/sudoers.d/tenantry").read_text()
    finally:
        subprocess.run(["userdel", "-r", "-f", good], capture_output=True)
        subprocess.run(["groupdel", plane.group], capture_output=True)
