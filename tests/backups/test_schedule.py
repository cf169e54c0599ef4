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


def _a_year_of_schedule(end: dt.datetime) -> list[tuple[str, str, dt.datetime]]:
    """What the default schedule leaves over a year: a full every Sunday, a differential
    every other day at 01:00, an incremental every 4 hours (labels as pgBackRest's)."""
    out: list[tuple[str, str, dt.datetime]] = []
    t = end - dt.timedelta(days=400)
    full = ""
    while t <= end:
        stamp = t.strftime("%Y%m%d-%H%M%S")
        if t.weekday() == 6 and t.hour == 1:
            full = f"{stamp}F"
            out.append((full, "full", t))
        elif full and t.hour == 1:
            out.append((f"{full}_{stamp}D", "diff", t))
        elif full and t.hour % 4 == 1:
            out.append((f"{full}_{stamp}I", "incr", t))
        t += H
    return out


def test_retention_keeps_days_weeks_and_months_and_lets_the_rest_go() -> None:
    from tenantry.backups.jobs import expired

    backups = _a_year_of_schedule(NOW)
    gone = set(expired(NOW, backups))
    fulls = [b for b in backups if b[1] == "full"]
    kept_fulls = [f for f in fulls if f[0] not in gone]
    assert gone and all(label.endswith("F") for label in gone)
    assert fulls[-1] in kept_fulls  # the newest full always stays
    assert len(kept_fulls) <= 4 + 12 + 2
    surviving = [b for b in backups if not any(b[0].startswith(g) for g in gone)]

    def covered(start: dt.datetime, stop: dt.datetime) -> bool:
        return any(start <= end < stop for _, _, end in surviving)

    day0 = NOW.replace(hour=0)
    for back in range(7):  # each of the last 7 days keeps a restore point
        assert covered(day0 - back * D, day0 - (back - 1) * D), back
    for back in range(1, 12):  # ... and each of the 11 months before this one
        year, month = divmod(NOW.year * 12 + NOW.month - 1 - back, 12)
        month_start = dt.datetime(year, month + 1, 1, tzinfo=dt.UTC)
        next_month = (month_start + dt.timedelta(days=32)).replace(day=1)
        assert covered(month_start, next_month), back
    assert not covered(NOW - 400 * D, NOW - 380 * D)  # older than a year: gone


def test_retention_never_lets_the_only_full_go() -> None:
    from tenantry.backups.jobs import expired

    old = [("20250101-010000F", "full", NOW - 300 * D)]
    assert expired(NOW, old) == []
    assert expired(NOW, []) == []
