"""The logs programs write themselves, and their rotation.

A program opens its own log (tenantry.agent.supervisord.render_program) instead of handing
every line to supervisord through a pipe, so supervisord no longer rotates it: the agent
does, once a minute (`ROTATE_EVERY`). A log grown past `MAX_BYTES` is copied to `.1` (the
older copies move up one, `BACKUPS` are kept) and cut to nothing in place. Its writers
append (O_APPEND), so they go on at the new end; what they write between the copy and the
cut is lost, as with logrotate's copytruncate.

A platform's logs directory belongs to the platform's Unix user, and the agent is root:
nothing here follows a link, and a log that is not a regular file with one link is left
alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("tenantry.agent")

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3
ROTATE_EVERY = 60.0  # s


def _open_own(path: Path, flags: int) -> tuple[int, os.stat_result] | None:
    """An fd on `path`, and its stat, when it is a regular file with one link (no link
    followed), else None (missing, or not a log: a link, a directory, a hard link to
    another file)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        return None
    return fd, st


def hand_over(path: Path, user: str) -> None:
    """Give an existing log to `user`, who writes it from now on (a log supervisord wrote,
    as root, before programs wrote their own). A missing one the program makes itself."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return  # the program's start will say so
    opened = _open_own(path, os.O_WRONLY | os.O_APPEND)
    if opened is None:
        return
    fd, st = opened
    try:
        if st.st_uid != entry.pw_uid:
            os.fchown(fd, entry.pw_uid, entry.pw_gid)
            os.fchmod(fd, 0o640)
    finally:
        os.close(fd)


def rotate_if_large(path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> bool:
    """Rotate `path` when it holds `max_bytes` or more; True when it did."""
    try:
        if os.lstat(path).st_size < max_bytes:
            return False
    except OSError:
        return False
    opened = _open_own(path, os.O_RDWR)
    if opened is None:
        return False
    fd, st = opened
    try:
        if st.st_size < max_bytes:
            return False
        for i in range(backups - 1, 0, -1):  # .2 → .3, .1 → .2 (rename follows no link)
            with contextlib.suppress(FileNotFoundError):
                os.rename(f"{path}.{i}", f"{path}.{i + 1}")
        copy = f"{path}.1"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(copy)  # when only one is kept
        try:  # a new file, never one that is there (a link put in its place meanwhile)
            out = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            log.warning("logs: cannot rotate %s: %s", path, exc)
            return False
        try:
            with contextlib.suppress(PermissionError):  # not root: ours already
                os.fchown(out, st.st_uid, st.st_gid)
            done = 0
            while done < st.st_size:
                sent = os.sendfile(out, fd, done, st.st_size - done)
                if sent == 0:
                    break  # cut meanwhile: nothing more to keep
                done += sent
        finally:
            os.close(out)
        os.ftruncate(fd, 0)
        return True
    finally:
        os.close(fd)


def rotate(paths: Iterable[Path], max_bytes: int = MAX_BYTES, backups: int = BACKUPS,
           ) -> list[Path]:
    """Rotate each of `paths` that grew past `max_bytes`; the ones rotated."""
    done = []
    for path in paths:
        try:
            if rotate_if_large(path, max_bytes, backups):
                done.append(path)
        except OSError as exc:
            log.warning("logs: cannot rotate %s: %s", path, exc)
    return done
