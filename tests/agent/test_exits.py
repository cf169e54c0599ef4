"""What the agent reads of supervisord's log: unexpected exits only, each once."""

from __future__ import annotations

from pathlib import Path

from tenantry.agent.exits import ExitLog

LINES = """\
2026-12-01 14:24:42,381 INFO spawned: 'p1-a-web-0' with pid 1628
2026-12-01 14:25:01,002 INFO exited: p1-a-web-0 (terminated by SIGKILL; not expected)
2026-12-01 14:25:02,010 INFO stopped: p1-db (terminated by SIGINT)
2026-12-01 14:25:03,500 INFO exited: ingress (exit status 1; not expected)
2026-12-01 14:25:04,000 INFO exited: p1-release (exit status 0; expected)
"""


def test_unexpected_exits_are_read_once_and_survive_a_restart(tmp_path: Path) -> None:
    log, state = tmp_path / "supervisord.log", tmp_path / "exits.json"
    log.write_text("2026-12-01 14:00:00,000 INFO exited: old (exit status 1; not expected)\n")
    exits = ExitLog(log, state)  # what was there before the agent first looked is history
    with log.open("a") as f:
        f.write(LINES)
    exits.read()
    found = exits.take()
    assert [(x.program, x.how) for x in found] == [
        ("p1-a-web-0", "terminated by SIGKILL"), ("ingress", "exit status 1")]
    assert round(found[1].at - found[0].at, 3) == 2.498
    exits.read()
    assert exits.take() == []  # read once
    exits.put_back(found)  # a report that failed sends them again
    assert exits.take() == found
    with log.open("a") as f:
        f.write("2026-12-01 14:26:00,000 INFO exited: p1-db (exit status 2; not expected)\n"
                "2026-12-01 14:26:01,000 INFO exited: p1-a-web-0 (exit st")  # half written
    again = ExitLog(log, state)  # the agent restarted: it goes on where it stopped
    again.read()
    assert [x.program for x in again.take()] == ["p1-db"]
