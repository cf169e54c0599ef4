"""A cluster's memory and WAL space, as the agent reads them from the host."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tenantry.agent import pgcluster
from tenantry.agent.dbusage import (
    BASE_BYTES,
    MemoryCache,
    free_bytes,
    memory_budget,
    setting_bytes,
    tree_pss,
)

MiB = 2**20


def test_settings_in_bytes() -> None:
    assert setting_bytes("16MB") == 16 * MiB
    assert setting_bytes("64kB") == 64 * 1024
    assert setting_bytes("4GB") == 4 * 2**30
    for bad in ("16", "16 MB", "1.5GB", "MB", "-1MB"):
        with pytest.raises(ValueError):
            setting_bytes(bad)


def test_the_budget_of_each_size_grows_with_it() -> None:
    assert memory_budget("s") == (16 + 20 * 2 + 16) * MiB + BASE_BYTES
    budgets = [memory_budget(size) for size in ("s", "m", "l")]
    assert budgets == sorted(budgets) and len(set(budgets)) == 3
    assert set(pgcluster.SIZES) == {"s", "m", "l"}, "a new size needs its budget checked"


def _fake_proc(root: Path, tree: dict[int, list[int]], pss_kib: dict[int, int]) -> Path:
    for pid, children in tree.items():
        task = root / str(pid) / "task" / str(pid)
        task.mkdir(parents=True)
        (task / "children").write_text(" ".join(map(str, children)) + " " if children else "")
    for pid, kib in pss_kib.items():
        (root / str(pid)).mkdir(parents=True, exist_ok=True)
        (root / str(pid) / "smaps_rollup").write_text(
            f"00400000-7fff [rollup]\nRss:  {kib * 3} kB\nPss:  {kib} kB\n")
    return root


def test_a_postmaster_and_its_children_add_up(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, {100: [101, 102, 103]}, {100: 20000, 101: 3000, 102: 1000})
    # 103 exited between the listing and the read: it counts nothing
    assert tree_pss(100, proc) == (20000 + 3000 + 1000) * 1024
    assert tree_pss(999, proc) is None, "a postmaster gone"


def test_the_real_tree_of_a_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; print(1, flush=True); "
                              "time.sleep(30)"], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline(), "the child runs Python"
        alone = tree_pss(child.pid)
        assert alone is not None and alone > MiB
        mine = tree_pss(os.getpid())
        assert mine is not None and mine > alone, "the child counts in its parent's tree"
    finally:
        child.kill()
        child.wait()


def test_memory_is_read_again_only_after_its_ttl() -> None:
    now = [0.0]
    reads: list[int] = []

    def read(pid: int) -> int:
        reads.append(pid)
        return 1000 * len(reads)

    cache = MemoryCache(ttl=30, read=read, clock=lambda: now[0])
    assert cache.of(7) == 1000
    now[0] = 29.9
    assert cache.of(7) == 1000 and reads == [7]
    now[0] = 30.0
    assert cache.of(7) == 2000 and reads == [7, 7]
    cache.keep_only({8})
    assert cache.of(7) == 3000, "a forgotten postmaster is read afresh"


def test_free_space(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    assert free_bytes(tmp_path) == st.f_bavail * st.f_frsize
    assert free_bytes(tmp_path / "missing") is None
