"""The backup schedule as a pure function: what a platform needs next."""

from __future__ import annotations

import datetime as dt

import pytest

from tenantry.backups.jobs import due
from tenantry.backups.schemas import parse_interval, show_interval

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


def test_a_platforms_own_intervals_replace_the_defaults() -> None:
    base = [("full", NOW - 6 * D), ("diff", NOW - 5 * H), ("incr", NOW - 2 * H)]
    assert due(NOW, base, CHECKED) is None  # the defaults: nothing yet
    assert due(NOW, base, CHECKED, {"incr": H}) == "incr"  # hourly incrementals
    assert due(NOW, base, CHECKED, {"diff": 4 * H}) == "diff"
    assert due(NOW, base, CHECKED, {"full": 5 * D}) == "full"
    assert due(NOW, base, {"verify": NOW - 3 * H, "restore-test": NOW - H},
               {"verify": 2 * H}) == "verify"


@pytest.mark.parametrize("text, field, seconds", [
    ("30m", "incr", 1800), ("4h", "incr", 14400), ("1d", "full", 86400),
    ("2w", "full", 14 * 86400), (" 12H ", "diff", 43200)])
def test_intervals_read(text: str, field: str, seconds: int) -> None:
    assert parse_interval(text, field) == seconds
    assert show_interval(seconds) == text.strip().lower()


@pytest.mark.parametrize("text, field, why", [
    ("5m", "incr", "outside 15m to 1w"), ("12h", "full", "outside 1d to"),
    ("4 h", "incr", "not an interval"), ("", "incr", "not an interval"),
    ("-1h", "incr", "not an interval"), ("1y", "full", "not an interval"),
    ("9999999d", "full", "not an interval")])
def test_bad_intervals_are_refused_with_the_field_and_the_reason(text: str, field: str,
                                                                 why: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_interval(text, field)
    assert str(caught.value).startswith(f"{field}: ") and why in str(caught.value)


def test_the_api_schema_names_the_field() -> None:
    from pydantic import ValidationError

    from tenantry.backups.schemas import ScheduleUpdate

    assert ScheduleUpdate.model_validate({"incr": "1h"}).incr == "1h"
    with pytest.raises(ValidationError) as caught:
        ScheduleUpdate.model_validate({"restore_test": "10m"})
    assert caught.value.errors()[0]["loc"] == ("restore_test",)
    with pytest.raises(ValidationError):
        ScheduleUpdate.model_validate({"hourly": "1h"})
