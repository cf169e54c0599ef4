"""Platforms run as their own Unix users: none can read another's files or use its database."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest

from tenantry.agent.converge import HostPaths
from tenantry.agent.pgcluster import pg_bin
from tests.conftest import ControlPlaneProcess

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="per-platform users need root")]


def as_user(user: str, *argv: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True,
                          timeout=30, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **(env or {})})


def program_env(platform_id: str) -> dict[str, str]:
    """The environment the agent gave the platform's web process (read from /proc as root)."""
    uid = pwd.getpwnam(f"tp-{platform_id}").pw_uid
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            raw = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0")
                   if "=" in item)
        if "PORT" in env and "DATABASE_URL" in env:
            return env
    raise AssertionError(f"no running web process of {platform_id}")


def test_platforms_cannot_reach_each_other(plane: ControlPlaneProcess, isv: str) -> None:
    a = plane.cli_json("platform", "create", isv, "--tenant", "t1", "--app", "bodyshop@1.0.0",
                       "--wait")
    b = plane.cli_json("platform", "create", isv, "--tenant", "t2", "--app", "bodyshop@1.0.0",
                       "--wait")
    user_a, user_b = f"tp-{a['id']}", f"tp-{b['id']}"
    home_b = plane.data_dir / "agent" / "platforms" / b["id"]
    env_a, env_b = program_env(a["id"]), program_env(b["id"])
    assert env_a["DATABASE_URL"] != env_b["DATABASE_URL"]

    # B's own user reads its own files; A's user gets nothing.
    assert as_user(user_b, "ls", str(home_b / "pgdata")).returncode == 0
    refused = as_user(user_a, "ls", str(home_b / "pgdata"))
    assert refused.returncode != 0 and "Permission denied" in refused.stderr
    assert as_user(user_a, "cat", str(home_b / "pgdata" / "PG_VERSION")).returncode != 0

    psql = pg_bin("psql")
    b_db_port = env_b["DATABASE_URL"].rsplit(":", 1)[1].split("/")[0]
    # A's credentials against B's database server: refused.
    a_creds = env_a["DATABASE_URL"].rsplit("@", 1)[0]
    wrong = as_user(user_a, psql, f"{a_creds}@127.0.0.1:{b_db_port}/app", "-c", "select 1")
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
    # B's credentials work for B (so the refusal above is about who, not about reachability).
    right = as_user(user_b, psql, env_b["DATABASE_URL"], "-tAc", "select current_user")
    assert right.returncode == 0 and right.stdout.strip() == "app"
    # Nor can A use B's Unix socket as B's superuser.
    socket_dir = HostPaths(plane.data_dir / "agent").socket_dir(b["id"])
    assert as_user(user_b, "ls", str(socket_dir)).returncode == 0
    sock = as_user(user_a, psql, "-h", str(socket_dir), "-p", b_db_port, "-U", "postgres",
                   "-c", "select 1")
    assert sock.returncode != 0
