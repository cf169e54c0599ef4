"""Prometheus rule files from the check catalog and threshold overrides.

Two groups: the urgent checks' (what pages someone at once: a host silent, a platform or
its database not answering) evaluated every second, the others' every 5 s, as often as the
series they read are scraped. Evaluating every check every second was most of Prometheus's
CPU on a host of many idle platforms (its rules then read each series three to five times
between two scrapes). Each group holds, in order:

1. a recording rule per check, `tenantry:check_value{check=...}`, so that every alert selects
   one uniformly named series and overrides can be applied by label matchers;
2. for every check, level and override scope, an alert selecting the series in that scope
   and not in any more specific override's scope (platform beats host beats ISV beats the
   default), so exactly one threshold applies to each series.

Hysteresis without `keep_firing_for` (that holds for a time, not to a value): an alert's
condition is "worse than the threshold, OR worse than the clear threshold AND already
firing", the second half reading Prometheus's own `ALERTS` series. Rules of a group run in
order, so the alerts see the values recorded in the same evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from tenantry.core.errors import InvalidInput
from tenantry.monitoring.catalog import (
    SPECIFICITY,
    TARGET_RE,
    Check,
    Scope,
    ThresholdOverride,
    Thresholds,
    default_thresholds,
    resolve,
)

VALUE = "tenantry:check_value"
GROUP = "tenantry-checks"
URGENT_GROUP = "tenantry-checks-urgent"
LEVELS = ("busy", "overloaded")
# Labels an alert carries that its value series does not: ignored when matching ALERTS.
# `scope` (default, isv:X, host:H, platform:P) says which threshold applied; it also keeps
# the rules of one alert name distinct, which promtool's lint requires.
_ALERT_ONLY = ("alertname", "alertstate", "level", "scope")


def alert_name(check: str, level: str) -> str:
    return f"{check}_{level}"


def _regex(values: Iterable[str]) -> str:
    # Target names are plain (see TARGET_RE); only '.' means something to RE2, and the
    # backslash is doubled once more for the PromQL string literal.
    return "|".join(sorted(v.replace(".", "\\\\.") for v in values))


@dataclass(frozen=True)
class _ScopedRule:
    matchers: tuple[str, ...]
    thresholds: Thresholds
    scope: str


def _scoped(check: Check, overrides: Sequence[ThresholdOverride],
            checks: dict[str, Check]) -> list[_ScopedRule]:
    mine = [o for o in overrides if o.check == check.name]
    by_scope: dict[Scope, dict[str, ThresholdOverride]] = {s: {} for s in SPECIFICITY}
    for o in mine:
        if not TARGET_RE.fullmatch(o.target):
            raise InvalidInput(f"bad target name {o.target!r}", field="target")
        by_scope[o.scope][o.target] = o  # a later override of the same target replaces it
    out: list[_ScopedRule] = []
    for i, scope in enumerate((None, *SPECIFICITY)):
        stronger = SPECIFICITY[i:]  # the scopes more specific than this one
        excluded = tuple(f'{s.value}!~"{_regex(by_scope[s])}"' for s in stronger if by_scope[s])
        if scope is None:
            out.append(_ScopedRule(excluded, default_thresholds(check), "default"))
            continue
        for target, o in sorted(by_scope[scope].items()):
            own = (f'{scope.value}="{target}"',)
            out.append(_ScopedRule(own + excluded, resolve(o, checks), f"{scope.value}:{target}"))
    return out


def _condition(check: Check, level: str, th: Thresholds) -> tuple[float, float] | None:
    """(fire threshold, clear threshold) of a level, or None when the check lacks it."""
    if level == "busy":
        return None if th.busy is None else (th.busy, th.clear)
    return th.overloaded, th.busy if th.busy is not None else th.clear


def _alert(check: Check, level: str, rule: _ScopedRule, fire: float, clear: float,
           hold_seconds: int) -> dict[str, Any]:
    op = ">" if check.higher_is_worse else "<"
    sel = ", ".join((f'check="{check.name}"', *rule.matchers))
    series = f"{VALUE}{{{sel}}}"
    name = alert_name(check.name, level)
    held = (f'({series} {op} {clear:g}) and ignoring({", ".join(_ALERT_ONLY)}) '
            f'ALERTS{{alertname="{name}", alertstate="firing"}}')
    return {
        "alert": name,
        "expr": f"({series} {op} {fire:g}) or ({held})",
        "for": f"{hold_seconds}s",
        "labels": {"check": check.name, "level": level, "kind": check.kind.value,
                   "scope": rule.scope},
        "annotations": {
            "summary": f"{check.summary} ({level})",
            "value": "{{ $value }}",
            "threshold": f"{fire:g}",
            "clear": f"{clear:g}",
            "unit": check.unit,
        },
    }


def rule_groups(checks: dict[str, Check], overrides: Sequence[ThresholdOverride] = (),
                *, interval: str = "5s", urgent_interval: str = "1s") -> dict[str, Any]:
    """The rule file as a document (render() dumps it): the urgent checks' group, evaluated
    every `urgent_interval`, and the others', every `interval`; a group with no check is
    left out."""
    for o in overrides:
        resolve(o, checks)  # unknown checks and bad orders refuse the whole file
    groups = []
    for name, every, urgent in ((URGENT_GROUP, urgent_interval, True),
                                (GROUP, interval, False)):
        records: list[dict[str, Any]] = []
        alerts: list[dict[str, Any]] = []
        for check in checks.values():
            if check.urgent != urgent:
                continue
            records.append({"record": VALUE, "expr": check.expr,
                            "labels": {"check": check.name, "kind": check.kind.value}})
            for rule in _scoped(check, overrides, checks):
                for level in LEVELS:
                    cond = _condition(check, level, rule.thresholds)
                    if cond is not None:
                        alerts.append(_alert(check, level, rule, *cond, check.hold))
        if records:
            groups.append({"name": name, "interval": every, "rules": records + alerts})
    return {"groups": groups}


def render(checks: dict[str, Check], overrides: Sequence[ThresholdOverride] = (),
           *, interval: str = "5s", urgent_interval: str = "1s") -> str:
    """The rule file's YAML text: deterministic, so an unchanged file needs no reload."""
    doc = rule_groups(checks, overrides, interval=interval, urgent_interval=urgent_interval)
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1000)
