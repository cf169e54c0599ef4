"""Check catalog and threshold overrides: table-driven validation."""

from __future__ import annotations

from typing import Any

import pytest

from tenantry.core.errors import InvalidInput
from tenantry.monitoring.catalog import CHECKS, Check, TargetKind, catalog, parse_override, resolve

CHECKS_BY_NAME = catalog()

REQUIRED = {
    TargetKind.HOST: {"cpu", "memory", "swap", "df", "interface_errors", "heartbeat", "proxy"},
    TargetKind.PLATFORM: {"responding", "response_time", "tls_expiry"},
    TargetKind.DATABASE: {"db_up", "connections", "longest_transaction", "cache_hit"},
}


@pytest.mark.parametrize("kind", list(REQUIRED))
def test_catalog_covers(kind: TargetKind) -> None:
    names = {c.name for c in CHECKS if c.kind == kind}
    assert REQUIRED[kind] <= names


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.name)
def test_defaults_are_ordered_and_hysteretic(check: Check) -> None:
    if check.busy is not None:
        assert not check.worse(check.busy, check.overloaded)
        assert not check.worse(check.clear, check.busy)
    assert check.hold >= 0


@pytest.mark.parametrize("data, field", [
    ({"check": "nope", "scope": "host", "target": "h1", "busy": 1, "overloaded": 2}, "check"),
    ({"check": "cpu", "scope": "host", "target": "h1", "busy": "lots", "overloaded": 90},
     "busy"),
    ({"check": "cpu", "scope": "host", "target": "h1", "busy": 80, "overloaded": "x"},
     "overloaded"),
    ({"check": "cpu", "scope": "host", "target": "h1", "busy": True, "overloaded": 90}, "busy"),
    ({"check": "cpu", "scope": "host", "target": "h1", "busy": "nan", "overloaded": 90}, "busy"),
    ({"check": "cpu", "scope": "host", "target": "h1", "busy": 95, "overloaded": 90}, "busy"),
    ({"check": "cpu", "scope": "host", "target": "h1", "busy": 80, "overloaded": 90,
      "clear": 85}, "clear"),
    ({"check": "cache_hit", "scope": "platform", "target": "acme/p1", "busy": 80,
      "overloaded": 90}, "busy"),
    ({"check": "cache_hit", "scope": "platform", "target": "acme/p1", "busy": 95,
      "overloaded": 90, "clear": 94}, "clear"),
    ({"check": "heartbeat", "scope": "host", "target": "h1", "busy": 1, "overloaded": 1},
     "busy"),
    ({"check": "cpu", "scope": "host", "target": "h1", "overloaded": 90}, "busy"),
    ({"check": "cpu", "scope": "region", "target": "h1", "busy": 80, "overloaded": 90}, "scope"),
    ({"check": "cpu", "scope": "host", "target": 'h"1', "busy": 80, "overloaded": 90},
     "target"),
    ({"check": "cpu", "scope": "host", "target": "h1|h2", "busy": 80, "overloaded": 90},
     "target"),
    ({"check": "cpu", "scope": "host", "target": "h1", "busy": 80, "overloaded": 90,
      "extra": 1}, "extra"),
])
def test_bad_overrides_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_override(data, CHECKS_BY_NAME)
    assert e.value.field == field


@pytest.mark.parametrize("data, want", [
    # clear keeps the catalog's gap (cpu: busy 80, clear 70) unless given
    ({"check": "cpu", "scope": "isv", "target": "acme", "busy": "60", "overloaded": 90},
     (60, 90, 50)),
    ({"check": "cpu", "scope": "host", "target": "h1", "busy": 60, "overloaded": 90,
      "clear": 30}, (60, 90, 30)),
    # lower is worse: cache hit (busy 95, overloaded 90, clear 97)
    ({"check": "cache_hit", "scope": "platform", "target": "acme/p1", "busy": 90,
      "overloaded": 80}, (90, 80, 92)),
    ({"check": "heartbeat", "scope": "host", "target": "h1", "overloaded": 1}, (None, 1, 1)),
])
def test_good_overrides(data: dict[str, Any], want: tuple[float | None, float, float]) -> None:
    th = resolve(parse_override(data, CHECKS_BY_NAME), CHECKS_BY_NAME)
    assert (th.busy, th.overloaded, th.clear) == want


def test_a_bad_catalog_entry_is_refused() -> None:
    bad = Check("x", TargetKind.HOST, "up", True, 90, 80, 70, 0, "", "x")
    with pytest.raises(InvalidInput) as e:
        catalog(extra=(bad,))
    assert e.value.field == "catalog.x.busy"
