"""The host's operator access, kept as tenantry says: sshd, principals, KRL, sudo, logs.

Opt-in (`tenantry agent --host-access`): on a real host it owns `/etc/ssh/sshd_config`,
`/etc/ssh/tenantry-*` and `/etc/sudoers.d/tenantry`, so a laptop running `tenantry up`
never has its own sshd rewritten. `etc_root` moves all of it elsewhere (tests use a temp
dir and their own sshd). The KRL is fetched at least every KRL_PERIOD seconds and at once
when the control plane bumps the host (a revocation does), well inside the 60 s promise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tenantry.agent import hostlog, sshd, unixusers
from tenantry.agent.client import ControlPlaneClient
from tenantry.agent.converge import unix_user
from tenantry.core.crypto import write_private

log = logging.getLogger("tenantry.agent.hostaccess")
KRL_PERIOD = 20.0


@dataclass
class HostAccess:
    client: ControlPlaneClient
    state_dir: Path
    etc_root: Path = Path("/")
    sshd_pid_file: Path = Path("/run/sshd.pid")
    sshd_log: Path | None = None
    sudo_log: Path = sshd.SUDO_LOG
    ssh_port: int = 22
    manage_accounts: bool = field(default_factory=lambda: os.geteuid() == 0)
    _checked_at: float = field(default=0.0, init=False)
    _generation: int = field(default=-1, init=False)

    @property
    def ssh_dir(self) -> Path:
        return self.etc_root / "etc" / "ssh"

    def converge(self, generation: int) -> None:
        """Write what changed; reload sshd when its main config did."""
        now = time.monotonic()
        if generation == self._generation and now - self._checked_at < KRL_PERIOD:
            return
        config = self.client.ssh_config()
        krl = self.client.ssh_krl()
        group: str = config["login_group"]
        people = [p for p in config["people"] if _usable(p)]
        if self.manage_accounts:
            people = self._with_accounts(people, group)
        principals_dir = self.ssh_dir / "tenantry-principals"
        principals_dir.mkdir(parents=True, exist_ok=True)
        _write(self.ssh_dir / "tenantry-ca.pub", config["ca_public_key"].strip() + "\n")
        _write_bytes(self.ssh_dir / "tenantry-revoked.krl", krl)
        files = sshd.render_principals({p["account"]: p["principals"] for p in people})
        for stale in principals_dir.iterdir():
            if stale.is_file() and not stale.name.startswith(".") and stale.name not in files:
                _write(stale, "")  # their certificates ended: the account opens no more
        for account, body in files.items():
            _write(principals_dir / account, body)
        main = sshd.render_sshd_config(
            ca_public_key_file=self.ssh_dir / "tenantry-ca.pub", principals_dir=principals_dir,
            krl_file=self.ssh_dir / "tenantry-revoked.krl", port=self.ssh_port,
            login_group=group)
        if _write(self.ssh_dir / "sshd_config", main):
            self._reload_sshd()
        rules = [sshd.SudoRule(account=p["account"], root=p["root"], run_as=tuple(
            user for user in map(unix_user, p["platforms"]) if user is not None))
            for p in people]
        sudoers = sshd.render_sudoers(rules, log_file=self.sudo_log)
        sshd.check_sudoers(sudoers)
        sudoers_file = self.etc_root / "etc" / "sudoers.d" / "tenantry"
        sudoers_file.parent.mkdir(parents=True, exist_ok=True)
        if _write(sudoers_file, sudoers):
            sudoers_file.chmod(0o440)
        if self.manage_accounts:
            self._end_sessions(config.get("cut_off", []))
        self._generation, self._checked_at = generation, now
        self.ship_logs()

    def _end_sessions(self, accounts: list[str]) -> None:
        """Kill every process of a revoked or disabled person's account: their open SSH
        sessions end too, not only new logins."""
        ended = []
        for account in accounts:
            if not _ACCOUNT.fullmatch(account):
                continue
            try:
                uid = pwd.getpwnam(account).pw_uid
            except KeyError:
                continue
            killed = _kill_uid(uid)
            if killed:
                log.warning("ended %d processes of %s: access revoked", killed, account)
                ended.append({"action": "ssh.session.ended", "actor": None,
                              "account": account, "processes": killed})
        if ended:
            self.client.ssh_events(ended)

    def _with_accounts(self, people: list[dict[str, Any]],
                       group: str) -> list[dict[str, Any]]:
        """Make each person's account; one that cannot be made is left out, not fatal."""
        try:
            _ensure_group(group)
        except subprocess.CalledProcessError as exc:
            log.warning("cannot create group %s: %s", group,
                        (exc.stderr or b"").decode(errors="replace").strip())
            return []
        ready = []
        for person in people:
            try:
                _ensure_login_account(person["account"], group)
                ready.append(person)
            except subprocess.CalledProcessError as exc:
                log.warning("cannot create account %s: %s", person["account"],
                            (exc.stderr or b"").decode(errors="replace").strip())
        return ready

    def _reload_sshd(self) -> None:
        try:
            os.kill(int(self.sshd_pid_file.read_text().split()[0]), signal.SIGHUP)
            log.info("sshd reloaded")
        except (OSError, ValueError):
            log.info("sshd is not running here; its config is ready for its next start")

    def ship_logs(self) -> None:
        """Send new login and sudo lines to the control plane's audit log."""
        offsets_file = self.state_dir / "hostlog-offsets.json"
        offsets: dict[str, int] = (json.loads(offsets_file.read_text())
                                   if offsets_file.exists() else {})
        events: list[dict[str, Any]] = []
        for path in (self.sshd_log, self.sudo_log):
            if path is None or not path.exists():
                continue
            start = offsets.get(str(path), 0)
            size = path.stat().st_size
            if size < start:
                start = 0  # rotated
            with path.open("rb") as fh:
                fh.seek(start)
                chunk = fh.read()
            complete = chunk.rfind(b"\n") + 1
            lines = chunk[:complete].decode(errors="replace").splitlines()
            events.extend(hostlog.parse_lines(lines))
            offsets[str(path)] = start + complete
        for i in range(0, len(events), 500):
            self.client.ssh_events(events[i:i + 500])
        write_private(offsets_file, json.dumps(offsets).encode())


def _write(path: Path, text: str) -> bool:
    return _write_bytes(path, text.encode())


def _write_bytes(path: Path, data: bytes) -> bool:
    """Atomic, and only when different: sshd must never see half a file."""
    if path.exists() and path.read_bytes() == data:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)
    return True


_ACCOUNT = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def _usable(person: dict[str, Any]) -> bool:
    """An account name sudoers and useradd both take; anything else is logged and left out."""
    if _ACCOUNT.fullmatch(str(person.get("account", ""))):
        return True
    log.warning("left out a person with an unusable account name %r", person.get("account"))
    return False


def _kill_uid(uid: int) -> int:
    """SIGKILL each process whose real or effective user is `uid`; how many there were."""
    if uid == 0:
        return 0
    killed = 0
    for pid in unixusers.pids_of(uid):
        with contextlib.suppress(OSError):  # it ended by itself meanwhile
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


def _ensure_group(group: str) -> None:
    if subprocess.run(["getent", "group", group], capture_output=True).returncode != 0:
        subprocess.run(["groupadd", "--system", group], check=True, capture_output=True)


def _ensure_login_account(account: str, group: str) -> None:
    """The person's own account: a home, a shell, no password, in the login group."""
    if subprocess.run(["id", account], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--groups", group,
                        account], check=True, capture_output=True)
        # "*": no password can ever work, yet the account is not locked for keys.
        subprocess.run(["usermod", "-p", "*", account], check=True, capture_output=True)
    else:
        subprocess.run(["usermod", "--append", "--groups", group, account], check=True,
                       capture_output=True)
