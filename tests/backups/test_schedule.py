"""The backup schedule as a pure function: what a platform needs next."""

from __future__ import annotations

import datetime as dt

import pytest

from tenantry.backups.jobs import due

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
D = dt.timedelta(days=1)
CHECKED = {"verify": NOW - H, "restore-test": NOW - H}


@pytest.mark.parametrize("backups, checks, want", [
    ([], {}, "full"),  # never backed up (a platform older than backups)
    ([("full", NOW - 8 * D)], CHECKED, "full"),
    ([("full", NOW - 6 * D)], CHECKED, "diff"),
    ([("full", NOW - 6 * D), ("diff", NOW - 2 * H)], CHECKED, None),
    ([("full", NOW - 6 * D), ("diff", NOW - 5 * H)], CHECKED, "incr"),
    ([("full", NOW - 6 * D), ("diff", NOW - 5 * H), ("incr", NOW - H)], CHECKED, None),
    ([("full", NOW - 3 * H)], CHECKED, None),
    # A new platform's checks wait 6 hours after its first backup, then run.
    ([("full", NOW - 3 * H)], {}, None),
    ([("full", NOW - 7 * H), ("incr", NOW - H)], {}, "verify"),
    ([("full", NOW - 7 * H), ("incr", NOW - H)], {"verify": NOW - H}, "restore-test"),
    ([("full", NOW - 7 * H), ("incr", NOW - H)],
     {"verify": NOW - 2 * D, "restore-test": NOW - H}, "verify"),
    ([("full", NOW - 3 * D), ("incr", NOW - H)],
     {"verify": NOW - H, "restore-test": NOW - 8 * D}, "diff"),  # backups come first
])
def test_what_is_due(backups: list[tuple[str, dt.datetime]],
                     checks: dict[str, dt.datetime], want: str | None) -> None:
    assert due(NOW, backups, checks) == want
