"""A data dir deleted by hand leaves its platforms' Unix users; the next agent to start on the
host removes them (the host's system ids run out at about 850), and nobody else's."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tenantry.agent import unixusers

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="Unix users need root")

GROUP = "tg-orphantest"


def exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        try:
            grp.getgrnam(name)
        except KeyError:
            return False
    return True


@pytest.fixture
def accounts(tmp_path: Path) -> Iterator[dict[str, str]]:
    platforms = tmp_path / "data" / "agent" / "platforms"
    made = {"gone": "tp-orphgone", "live": "tp-orphlive", "busy": "tp-orphbusy",
            "legacy": "tp-orphlegacy"}
    (platforms / "orphlive").mkdir(parents=True)
    unixusers.ensure_group(GROUP)
    for kind, name in made.items():
        home = None if kind == "legacy" else platforms / name.removeprefix("tp-")
        unixusers.ensure_user(name, home=home)
        unixusers.add_to_group(name, GROUP)
    sleeper = subprocess.Popen(["sleep", "60"], user=made["busy"])
    try:
        yield made
    finally:
        sleeper.kill()
        sleeper.wait()
        for name in made.values():
            unixusers.remove_user(name)
        unixusers.remove_group_if_empty(GROUP)


def test_users_of_a_deleted_data_dir_go_and_nobody_else(accounts: dict[str, str]) -> None:
    removed = unixusers.remove_orphans()
    assert accounts["gone"] in removed
    assert not exists(accounts["gone"])
    # its platform dir exists; a process runs as it; its home was never a platform dir
    for kind in ("live", "busy", "legacy"):
        assert exists(accounts[kind]), kind
    assert exists(GROUP)  # it still has members


def test_the_group_goes_with_its_last_orphan(tmp_path: Path) -> None:
    name = "tp-orphlast"
    unixusers.ensure_group(GROUP)
    unixusers.ensure_user(name, home=tmp_path / "agent" / "platforms" / "orphlast")
    unixusers.add_to_group(name, GROUP)
    try:
        assert unixusers.remove_orphans() == [name, GROUP]
        assert not exists(name) and not exists(GROUP)
    finally:
        unixusers.remove_user(name)
        unixusers.remove_group_if_empty(GROUP)
