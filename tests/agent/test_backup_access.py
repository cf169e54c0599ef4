"""A posix backup repository the platform's user can no longer enter (its ISV group was
removed and made again meanwhile, say, so that the ISV's directory belongs to a group id
without a name and the user is not in the new group) is set right when pgBackRest is refused,
and the stanza is made: a platform's first backup never fails on what the agent can mend.
CI once saw a demo platform fail so ("unable to get info for path/file ... archive.info:
[13] Permission denied")."""

from __future__ import annotations

import grp
import logging
import pwd
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tenantry.agent import backups, converge, pgcluster, unixusers
from tenantry.agent.supervisord import SupervisordManager
from tenantry.core.errors import Unavailable
from tenantry.platforms.contract import DesiredPlatform

pytestmark = pytest.mark.skipif(not unixusers.running_as_root(),
                                reason="the repository's ISV group needs root")

PID = "p5e1f0acce5"
ISV = "access-test"


def platform(port: int, repo: Path) -> DesiredPlatform:
    return DesiredPlatform.model_validate({
        "id": PID, "isv": ISV, "name": "t1", "size": "s", "gen": 1, "running": True,
        "absent": False, "tenants": ["t1"],
        "database": {"port": port, "role": "app", "dbname": "app", "password": "pw"},
        "releases": [], "migrations": [], "slots": {}, "route": None,
        "backup": {"repo": {"type": "posix", "path": str(repo)}, "cipher_pass": "c" * 40,
                   "archive_timeout": 60, "spool_max_mb": 64}})


@pytest.mark.slow
def test_a_repository_its_user_cannot_enter_is_set_right_and_the_stanza_made(
    supervisor: SupervisordManager, short_tmp: Path, free_port: Callable[[], int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    paths = converge.HostPaths(short_tmp / "agent")
    paths.prepare()
    p = platform(free_port(), short_tmp / "backups" / ISV / PID)
    runner = backups.BackupRunner()
    fx = converge.Effects(paths, supervisor, lambda digest, target: None, backups=runner)
    group = backups.isv_group(ISV)
    spec = converge.cluster_spec(paths, p)
    try:
        fx.make_home(p)
        fx.init_cluster(p)
        supervisor.put(converge.db_program(paths, p))
        pgcluster.wait_ready(spec, timeout=60)
        fx.configure_backups(p)
        assert runner.config_current(paths.platform(PID), p, spec)

        # What the demo platform met: the ISV's group gone and made again by another.
        subprocess.run(["groupdel", group], check=True, capture_output=True)
        unixusers.ensure_group(group)
        prefix = short_tmp / "backups" / ISV
        assert f"tp-{PID}" not in grp.getgrnam(group).gr_mem
        with pytest.raises(Unavailable, match="Permission denied"):  # the harm is real
            runner.run(paths.platform(PID), p, spec, ["stanza-create"], timeout=60)

        with caplog.at_level(logging.WARNING, logger=backups.log.name):
            runner.create_stanza(paths.platform(PID), p, spec)
        assert not runner.needs_stanza(paths.platform(PID), p, spec)
        assert runner.report(paths.platform(PID), p, spec, database_up=True).stanza == "ready"
        told = caplog.text
        assert "refused access to its repository" in told
        assert f"{prefix} drwx--x--- root:" in told  # what the user met, and was in:
        assert f"tp-{PID} is in tp-{PID}. Setting" in told
        assert "c" * 40 not in told  # the cipher passphrase is never told
    finally:
        runner.close()
        supervisor.remove(f"{PID}-db")
        pgcluster.remove_cluster(spec)
        # PostgreSQL's last WAL went to pgBackRest's detached archiver: the user goes once it
        # has ended (a later user given the same id would seem to run it).
        uid, deadline = pwd.getpwnam(f"tp-{PID}").pw_uid, time.monotonic() + 20
        while unixusers.pids_of(uid) and time.monotonic() < deadline:
            time.sleep(0.1)
        for g in unixusers.remove_user(f"tp-{PID}"):
            unixusers.remove_group_if_empty(g)
        unixusers.remove_group_if_empty(group)
