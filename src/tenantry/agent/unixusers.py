"""Per-platform Unix users: each platform's processes and data belong to their own user.

Without root, every function degrades to a no-op and processes run as the agent's user
(laptops, CI), so the same convergence code works in both places.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

from tenantry.core.errors import InvalidInput, Unavailable

_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")

# Held while a group is joined and what it guards is given to it, and while an emptied group
# is removed: otherwise one platform's removal could delete its ISV's group just after a new
# platform of that ISV joined it (the group looked empty a moment before), locking the new
# platform out of its backup repository.
GROUPS = threading.Lock()


def running_as_root() -> bool:
    return os.geteuid() == 0


def _check(name: str) -> None:
    if not _USER_RE.fullmatch(name):
        raise InvalidInput(f"bad Unix user name {name!r}", field="user")


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise Unavailable(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")


def ensure_user(name: str, home: Path | None = None) -> None:
    _check(name)
    if not running_as_root() or _exists(name):
        return
    argv = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    if home is not None:
        argv += ["--home-dir", str(home)]
    try:
        _run([*argv, "--user-group", name])
    except Unavailable:
        if not _exists(name):  # another agent may have won the race
            raise


def remove_user(name: str) -> list[str]:
    """Delete the user; returns the groups it was a supplementary member of, so that a
    caller can remove those it owns once they are empty (see remove_group_if_empty)."""
    _check(name)
    if not running_as_root() or not _exists(name):
        return []
    member_of = [g.gr_name for g in grp.getgrall() if name in g.gr_mem]
    _run(["userdel", name])
    return member_of


def remove_group_if_empty(name: str) -> bool:
    """Delete a group no user is a member of any more (a host has under 900 system ids, and
    a group per ISV that outlives its last platform would use them up); True if removed."""
    _check(name)
    if not running_as_root():
        return False
    try:
        group = grp.getgrnam(name)
    except KeyError:
        return False
    if group.gr_mem or any(u.pw_gid == group.gr_gid for u in pwd.getpwall()):
        return False
    _run(["groupdel", name])
    return True


def pids_of(uid: int) -> list[int]:
    """The processes whose real or effective user is `uid` (from status: /proc/PID's owner
    is root for a process that is not dumpable)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            uids = next(line.split()[1:3] for line in (entry / "status").read_text()
                        .splitlines() if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue  # it ended meanwhile
        if str(uid) in uids:
            found.append(int(entry.name))
    return found


def remove_orphans(prefix: str = "tp-", group_prefix: str = "tg-") -> list[str]:
    """Remove the platform users whose platform directory is gone with its whole data dir
    (a data dir deleted by hand leaves them, and no agent of it is left to remove them; the
    host's system ids run out at about 850). Only a user made by an agent (`prefix` + the
    platform's id, home `<data dir>/agent/platforms/<id>`) whose home no longer exists and
    that runs no process; then the ISV groups (`group_prefix`) that lost their last member.
    Users with any other home (made before homes were set) are never touched. Returns the
    names removed."""
    if not running_as_root():
        return []
    removed: list[str] = []
    for user in pwd.getpwall():
        name, home = user.pw_name, Path(user.pw_dir)
        if (not name.startswith(prefix) or home.name != name[len(prefix):]
                or home.parent.name != "platforms" or home.parent.parent.name != "agent"
                or home.exists() or pids_of(user.pw_uid)):
            continue
        try:
            groups = remove_user(name)
        except Unavailable:
            continue  # in use after all (a process started since): next time
        removed.append(name)
        for group in groups:
            if group.startswith(group_prefix) and remove_group_if_empty(group):
                removed.append(group)
    return removed


def chown_tree(path: Path, user: str | None) -> None:
    if user is None or not running_as_root():
        return
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise InvalidInput(f"no Unix user {user!r}", field="user") from None
    os.chown(path, pw.pw_uid, pw.pw_gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, pw.pw_uid, pw.pw_gid, follow_symlinks=False)
        for entry in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, entry), pw.pw_uid, pw.pw_gid, follow_symlinks=False)


def run_as(user: str | None, argv: Sequence[str]) -> list[str]:
    if user is not None and running_as_root():
        return ["runuser", "-u", user, "--", *argv]
    return list(argv)


def ensure_group(name: str) -> None:
    _check(name)
    if not running_as_root():
        return
    try:
        grp.getgrnam(name)
        return
    except KeyError:
        pass
    try:
        _run(["groupadd", "--system", name])
    except Unavailable:
        try:
            grp.getgrnam(name)  # another agent may have won the race
        except KeyError:
            raise


def add_to_group(user: str, group: str) -> None:
    """Make `user` a member of `group` (processes started afterwards have it)."""
    _check(user)
    _check(group)
    if not running_as_root() or user in grp.getgrnam(group).gr_mem:
        return
    _run(["usermod", "--append", "--groups", group, user])


def share_tree(path: Path, user: str | None, group: str) -> None:
    """`path` owned by `user`, readable by `group`: directories 2750 (what is made in them
    keeps the group), files 0640."""
    if user is None or not running_as_root():
        return
    uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    for dirpath, _, filenames in os.walk(path):
        os.chown(dirpath, uid, gid, follow_symlinks=False)
        os.chmod(dirpath, 0o2750)  # noqa: S103 - the group reads, by design
        for name in filenames:
            file = os.path.join(dirpath, name)
            os.chown(file, uid, gid, follow_symlinks=False)
            os.chmod(file, 0o640)
