"""A cgroup (v2) per agent data dir, where the host has one: every process the agent's
service manager starts is in it, and stays in it whatever it does (a daemon that double-forks,
calls setsid, clears its environment and renames itself is still there). `leftovers` looks in
it, besides the command lines and environments, for what a data dir left running.

Only membership is used (no controller is needed), so the unified hierarchy of a hybrid host
(/sys/fs/cgroup/unified) does as well as a pure cgroup v2 one. Where there is none, or it is
not writable, nothing changes: the other signs still find the processes.

The group's path is kept in `GROUP_FILE` under the agent's data dir, since a group's name
(a hash of the data dir's path) cannot be turned back into its data dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger("tenantry.agent")

GROUP_FILE = Path("services") / "cgroup"


def hierarchy(mounts: Path = Path("/proc/mounts")) -> Path | None:
    """Where the cgroup v2 hierarchy is mounted, if it is and we may make groups in it."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            root = Path(fields[1])
            if os.access(root, os.W_OK):
                return root
    return None


def group_for(agent_dir: Path, root: Path | None = None) -> Path | None:
    """The group of an agent's data dir (made when missing); None where there is none."""
    root = root if root is not None else hierarchy()
    if root is None:
        return None
    name = "tenantry-" + hashlib.sha256(str(agent_dir.resolve()).encode()).hexdigest()[:16]
    group = root / name
    try:
        group.mkdir(exist_ok=True)
        (agent_dir / GROUP_FILE).parent.mkdir(parents=True, exist_ok=True)
        (agent_dir / GROUP_FILE).write_text(str(group))
    except OSError as exc:
        log.warning("no cgroup for %s: %s", agent_dir, exc)
        return None
    return group


def join(group: Path) -> None:
    """Move the calling process into `group` (for a child between fork and exec: all it
    starts is in the group from the first moment)."""
    with open(group / "cgroup.procs", "w") as f:
        f.write(str(os.getpid()))


def recorded(scope: Path) -> list[Path]:
    """The groups of the agent data dirs at or directly under `scope` (a control plane's
    data dir holds its agent's in `agent/`)."""
    found = []
    for agent_dir in (scope, scope / "agent"):
        with contextlib.suppress(OSError):
            group = Path((agent_dir / GROUP_FILE).read_text().strip())
            if group.is_dir():
                found.append(group)
    return found


def members(group: Path) -> set[int]:
    try:
        return {int(pid) for pid in (group / "cgroup.procs").read_text().split()}
    except (OSError, ValueError):
        return set()


def remove(group: Path) -> None:
    """Remove an empty group (a clean stop's last step); one with processes stays."""
    with contextlib.suppress(OSError):
        group.rmdir()
