"""The agent's disk reserve (tenantry.agent.disk) on a real, small filesystem (a tmpfs of
its own): held while there is room, released the moment free space falls below it, held
again once there is room again."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tenantry.agent.disk import RESERVE_FILE, DiskGuard, default_reserve
from tests.conftest import TENANTRY

MiB = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path, size: int) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


def test_the_reserve_is_released_when_the_disk_fills_and_held_again_after(
        small_disk: Path) -> None:
    guard = DiskGuard(small_disk, reserve=8 * MiB)
    first = guard.check()
    assert not first.low and first.reserve_bytes >= 8 * MiB
    assert (small_disk / RESERVE_FILE).exists()
    assert first.total_bytes == 64 * MiB

    # Something else fills the disk to 4 MiB free: the reserve goes at once.
    ballast = small_disk / "ballast"
    fill(ballast, first.free_bytes - 4 * MiB)
    low = guard.check()
    assert low.low and low.reserve_bytes == 0
    assert not (small_disk / RESERVE_FILE).exists()
    assert 11 * MiB <= low.free_bytes <= 13 * MiB  # the 4 MiB and the reserve's 8
    assert low.detail and "released" in low.detail
    assert guard.check().low  # not held again while there is less than 3 times its room

    ballast.unlink()
    again = guard.check()
    assert not again.low and again.reserve_bytes >= 8 * MiB and again.detail is None


def test_no_room_for_the_reserve_at_the_start_is_low(small_disk: Path) -> None:
    fill(small_disk / "ballast", 50 * MiB)
    report = DiskGuard(small_disk, reserve=8 * MiB).check()
    assert report.low and report.reserve_bytes == 0
    assert not (small_disk / RESERVE_FILE).exists()


def test_the_default_reserve_is_one_percent_within_bounds() -> None:
    assert default_reserve(1 << 30) == 64 * MiB
    assert default_reserve(50 << 30) == 512 * MiB
    assert default_reserve(10 << 40) == 1024 * MiB


@pytest.mark.parametrize("value", ["-1", "1048577", "lots"])
def test_a_bad_disk_reserve_is_refused_naming_the_option(value: str, tmp_path: Path) -> None:
    done = subprocess.run([*TENANTRY, "agent", "--data-dir", str(tmp_path / "agent"),
                           "--disk-reserve", value], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "disk" in done.stderr and "reserve" in done.stderr, done.stderr
    assert not (tmp_path / "agent").exists()  # nothing made
