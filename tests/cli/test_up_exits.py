"""How `up` keeps and words the exits of its own processes until the store takes them (the
store's side: tests/platforms/test_service.py; live: tests/cli/test_up_watchdog.py)."""

from __future__ import annotations

from pathlib import Path

from tenantry.cli.up_exits import MAX_KEPT, ExitTeller, how_it_ended
from tenantry.core.config import load_settings


def test_how_it_ended_reads_as_supervisords() -> None:
    assert how_it_ended(-9) == "terminated by SIGKILL"
    assert how_it_ended(-6) == "terminated by SIGABRT"
    assert how_it_ended(3) == "exit status 3"
    assert how_it_ended(-200) == "terminated by signal 200"


def test_an_unclean_end_is_told_once_and_exits_are_kept_while_the_store_is_away(
        tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data",
                             database_url="postgresql://nobody@127.0.0.1:1/none")
    teller = ExitTeller(settings, "local")
    marker = tmp_path / "data" / "run" / "up.running"
    teller.unclean_end(marker)  # a first start: nothing to tell
    assert teller.kept == [] and marker.exists()
    teller.unclean_end(marker)  # the marker a clean stop removes is still there
    assert [(e.program, e.how.split(" (")[0]) for e in teller.kept] == [
        ("tenantry-up", "ended without a clean stop")]
    assert not teller.flush()  # no store: kept for the next attempt
    assert len(teller.kept) == 1
    for i in range(MAX_KEPT + 5):
        teller.tell("api", f"exit status {i}")
    kept = teller.kept
    assert len(kept) == MAX_KEPT and kept[-1].how == f"exit status {MAX_KEPT + 4}"
