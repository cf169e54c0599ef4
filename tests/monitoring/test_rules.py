"""Rule rendering: structure, promtool's checks, and the rules' behaviour under
`promtool test rules` (hysteresis, most specific override wins)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenantry.core.errors import InvalidInput
from tenantry.monitoring import rules
from tenantry.monitoring.catalog import Check, Scope, TargetKind, ThresholdOverride, catalog

LOAD = Check("test_load", TargetKind.HOST, 'tenantry_test_load{job="agent"}', True,
             busy=50, overloaded=80, clear=20, hold=0, unit="%", summary="test load")
CHECKS = catalog(extra=(LOAD,))
OVERRIDES = [
    ThresholdOverride(check="test_load", scope=Scope.ISV, target="acme", busy=40,
                      overloaded=80),
    ThresholdOverride(check="test_load", scope=Scope.HOST, target="h1", busy=60, overloaded=80),
    ThresholdOverride(check="test_load", scope=Scope.PLATFORM, target="acme/p1.x", busy=30,
                      overloaded=80),
    ThresholdOverride(check="cpu", scope=Scope.HOST, target="db-1.example", busy=60,
                      overloaded=70),
]


def _alerts(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for group in doc["groups"] for r in group["rules"] if "alert" in r]


def test_one_alert_per_check_and_level() -> None:
    doc = rules.rule_groups(catalog())
    names = [r["alert"] for r in _alerts(doc)]
    want = [rules.alert_name(c.name, lvl) for urgent in (True, False)
            for c in catalog().values() if c.urgent == urgent
            for lvl in rules.LEVELS if lvl == "overloaded" or c.busy is not None]
    assert names == want
    for group in doc["groups"]:
        records = [r for r in group["rules"] if "record" in r]
        # values recorded before the alerts of the same evaluation read them
        assert group["rules"][: len(records)] == records
    for r in _alerts(doc):
        assert set(r["labels"]) == {"check", "level", "kind", "scope"}
        assert "ALERTS{" in r["expr"]


def test_only_the_checks_that_page_at_once_are_evaluated_every_second() -> None:
    """Every check every second was most of Prometheus's CPU with many idle platforms: a
    slow check's series change every scrape (5 s), and its hold is longer than that."""
    doc = rules.rule_groups(catalog())
    by_group = {g["name"]: (g["interval"], {r["labels"]["check"] for r in g["rules"]})
                for g in doc["groups"]}
    assert by_group[rules.URGENT_GROUP] == (
        "1s", {"heartbeat", "proxy", "responding", "db_up", "processes"})
    interval, slow = by_group[rules.GROUP]
    assert interval == "5s"
    assert slow == {c.name for c in catalog().values()} - by_group[rules.URGENT_GROUP][1]
    assert all(c.urgent or c.hold == 0 or c.hold >= 15 for c in catalog().values())


def test_overrides_make_scoped_rules() -> None:
    doc = rules.rule_groups(CHECKS, OVERRIDES)
    busy = {r["labels"]["scope"]: r["expr"] for r in _alerts(doc)
            if r["alert"] == "test_load_busy"}
    assert set(busy) == {"default", "isv:acme", "host:h1", "platform:acme/p1.x"}
    assert 'isv!~"acme"' in busy["default"] and 'platform!~"acme/p1\\\\.x"' in busy["host:h1"]
    assert "isv!~" not in busy["host:h1"]  # less specific overrides do not exclude
    # fire at 60; clear keeps the catalog gap of 30 (busy 50, clear 20)
    assert "> 60)" in busy["host:h1"] and "> 30)" in busy["host:h1"]


def test_render_is_deterministic() -> None:
    assert rules.render(CHECKS, OVERRIDES) == rules.render(CHECKS, list(OVERRIDES))


def test_render_refuses_a_bad_override() -> None:
    bad = ThresholdOverride(check="nope", scope=Scope.HOST, target="h1", busy=1, overloaded=2)
    with pytest.raises(InvalidInput) as e:
        rules.render(CHECKS, [bad])
    assert e.value.field == "check"


@pytest.mark.parametrize("overrides", [[], OVERRIDES], ids=["defaults", "overrides"])
def test_promtool_accepts(tmp_path: Path, overrides: list[ThresholdOverride]) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(rules.render(CHECKS, overrides))
    out = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _labels(**extra: str) -> dict[str, str]:
    return {"job": "agent", "check": "test_load", "kind": "host", **extra}


UNIT_TESTS: list[dict[str, Any]] = [
    {   # hysteresis: 60 fires; 40 (below busy, above clear) holds; 10 (below clear) clears;
        # 40 again without firing first does not fire.
        "interval": "5s",
        "input_series": [{"series": 'tenantry_test_load{job="agent", host="h9"}',
                          "values": "10 60 60 40 40 40 10 10 40 40"}],
        "alert_rule_test": [
            {"eval_time": "0s", "alertname": "test_load_busy", "exp_alerts": []},
            {"eval_time": "5s", "alertname": "test_load_busy",
             "exp_alerts": [{"exp_labels": _labels(host="h9", level="busy", scope="default")}]},
            {"eval_time": "25s", "alertname": "test_load_busy",
             "exp_alerts": [{"exp_labels": _labels(host="h9", level="busy", scope="default")}]},
            {"eval_time": "30s", "alertname": "test_load_busy", "exp_alerts": []},
            {"eval_time": "45s", "alertname": "test_load_busy", "exp_alerts": []},
        ],
    },
    {   # overloaded steps down to busy: it holds until the value is below busy.
        "interval": "5s",
        "input_series": [{"series": 'tenantry_test_load{job="agent", host="h9"}',
                          "values": "90 70 70 45"}],
        "alert_rule_test": [
            {"eval_time": "10s", "alertname": "test_load_overloaded",
             "exp_alerts": [{"exp_labels": _labels(host="h9", level="overloaded",
                                                   scope="default")}]},
            {"eval_time": "15s", "alertname": "test_load_overloaded", "exp_alerts": []},
            {"eval_time": "15s", "alertname": "test_load_busy",
             "exp_alerts": [{"exp_labels": _labels(host="h9", level="busy", scope="default")}]},
        ],
    },
    {   # most specific override wins: platform 30 > host h1 60 > ISV acme 40 > default 50
        "interval": "5s",
        "input_series": [
            {"series": 'tenantry_test_load{job="agent", host="h1", isv="acme", '
                       'platform="acme/p1.x"}', "values": "45"},
            {"series": 'tenantry_test_load{job="agent", host="h1", isv="acme", '
                       'platform="acme/p2"}', "values": "45"},
            {"series": 'tenantry_test_load{job="agent", host="h2", isv="acme", '
                       'platform="acme/p1yx"}', "values": "45"},
            {"series": 'tenantry_test_load{job="agent", host="h2", isv="other", '
                       'platform="other/p4"}', "values": "45"},
        ],
        "alert_rule_test": [
            {"eval_time": "0s", "alertname": "test_load_busy", "exp_alerts": [
                {"exp_labels": _labels(host="h1", isv="acme", platform="acme/p1.x",
                                       level="busy", scope="platform:acme/p1.x")},
                {"exp_labels": _labels(host="h2", isv="acme", platform="acme/p1yx",
                                       level="busy", scope="isv:acme")},
            ]},
        ],
    },
]


def _db_down(host: str, server: str, platform: str) -> dict[str, Any]:
    """db_up's alert for cluster `/run/SERVER` of platform acme/PLATFORM."""
    return {"exp_labels": {"host": host, "server": f"/run/{server}", "isv": "acme",
                           "platform": f"acme/{platform}", "check": "db_up",
                           "kind": "database", "level": "overloaded", "scope": "default"}}


_A = 'host="h1", server="/run/a:5432"'
_B = 'host="h1", server="/run/b:5433"'
UNIT_TESTS.append({
    # postgres_exporter 0.11 with two DSNs: a stopped cluster's series vanish (its pg_up is
    # one unlabelled gauge); the agent's expected clusters say which one is down, and lend
    # their platform labels to every database series.
    "interval": "5s",
    "input_series": [
        {"series": f'tenantry_database_expected{{job="agent", {_A}, isv="acme", '
                   'platform="acme/p1"}', "values": "1x30"},
        {"series": f'tenantry_database_expected{{job="agent", {_B}, isv="acme", '
                   'platform="acme/p2"}', "values": "1x30"},
        {"series": f'tenantry_database_running{{job="agent", {_A}, isv="acme", '
                   'platform="acme/p1"}', "values": "1x30"},
        {"series": f'tenantry_database_running{{job="agent", {_B}, isv="acme", '
                   'platform="acme/p2"}', "values": "1x30"},
        {"series": f'pg_static{{job="postgres", {_A}, version="15"}}', "values": "1x30"},
        {"series": f'pg_static{{job="postgres", {_B}, version="15"}}', "values": "1 stale"},
        {"series": 'up{job="postgres", host="h1"}', "values": "1x30"},
        # cluster e runs again from 25 s (back from a fault): not yet in its exporter, which
        # is not told as down until it has run for EXPORTER_SETTLE (60 s)
        {"series": 'tenantry_database_expected{job="agent", host="h1", server="/run/e:5436", '
                   'isv="acme", platform="acme/p5"}', "values": "1x30"},
        {"series": 'tenantry_database_running{job="agent", host="h1", server="/run/e:5436", '
                   'isv="acme", platform="acme/p5"}', "values": "0x4 1x25"},
        # cluster f stopped at 25 s; the exporter's last scrape still has it: the agent's word
        # wins
        {"series": 'tenantry_database_expected{job="agent", host="h1", server="/run/f:5437", '
                   'isv="acme", platform="acme/p6"}', "values": "1x30"},
        {"series": 'tenantry_database_running{job="agent", host="h1", server="/run/f:5437", '
                   'isv="acme", platform="acme/p6"}', "values": "1x4 0x25"},
        {"series": 'pg_static{job="postgres", host="h1", server="/run/f:5437", version="15"}',
         "values": "1x30"},
        # host h2's exporter does not answer (restarting for a new DSN, say): its expected
        # cluster is not called down
        {"series": 'tenantry_database_expected{job="agent", host="h2", server="/run/c:5434", '
                   'isv="acme", platform="acme/p3"}', "values": "1x30"},
        {"series": 'up{job="postgres", host="h2"}', "values": "0x30"},
        {"series": 'tenantry_database_running{job="agent", host="h2", server="/run/c:5434", '
                   'isv="acme", platform="acme/p3"}', "values": "1x30"},
        # ... but one its agent says is not running is down, whatever the exporter does
        {"series": 'tenantry_database_expected{job="agent", host="h2", server="/run/d:5435", '
                   'isv="acme", platform="acme/p4"}', "values": "1x30"},
        {"series": 'tenantry_database_running{job="agent", host="h2", server="/run/d:5435", '
                   'isv="acme", platform="acme/p4"}', "values": "0x30"},
        {"series": f'pg_settings_max_connections{{job="postgres", {_A}}}', "values": "100x30"},
        {"series": f'pg_stat_activity_count{{job="postgres", {_A}, datname="app", '
                   'state="active"}', "values": "70x30"},
        {"series": f'pg_stat_activity_count{{job="postgres", {_A}, datname="app", '
                   'state="idle"}', "values": "10x30"},
    ],
    "alert_rule_test": [
        {"eval_time": "70s", "alertname": "db_up_overloaded",
         "exp_alerts": [_db_down("h1", "b:5433", "p2"), _db_down("h1", "f:5437", "p6"),
                        _db_down("h2", "d:5435", "p4")]},
        {"eval_time": "100s", "alertname": "db_up_overloaded",
         "exp_alerts": [_db_down("h1", "b:5433", "p2"), _db_down("h1", "e:5436", "p5"),
                        _db_down("h1", "f:5437", "p6"), _db_down("h2", "d:5435", "p4")]},
        {"eval_time": "40s", "alertname": "connections_busy", "exp_alerts": [
            {"exp_labels": {"job": "postgres", "host": "h1", "server": "/run/a:5432",
                            "isv": "acme", "platform": "acme/p1", "check": "connections",
                            "kind": "database", "level": "busy", "scope": "default"}}]},
    ],
})


def _db_alert(job: str, server: str, platform: str, check: str, level: str) -> dict[str, Any]:
    return {"exp_labels": {"job": job, "host": "h1", "server": server, "isv": "acme",
                           "platform": platform, "check": check, "kind": "database",
                           "level": level, "scope": "default"}}


_AGENT_A = f'job="agent", {_A}, isv="acme", platform="acme/p1"'
_AGENT_B = f'job="agent", {_B}, isv="acme", platform="acme/p2"'
UNIT_TESTS.append({
    # The database checks beside up and connections, each joined to its platform: cluster a
    # is a primary whose checkpoints take the whole checkpoint_timeout, whose backends write
    # a fifth of the buffers and whose pg_wal has 3 x max_wal_size free; cluster b has
    # replayed WAL for 45 s and uses 90 % of its memory budget, with little write traffic.
    "interval": "1m",
    "input_series": [
        {"series": f"tenantry_database_expected{{{_AGENT_A}}}", "values": "1x10"},
        {"series": f"tenantry_database_expected{{{_AGENT_B}}}", "values": "1x10"},
        {"series": f'pg_recovery_seconds{{job="postgres", {_A}}}', "values": "0x10"},
        {"series": f'pg_recovery_seconds{{job="postgres", {_B}}}', "values": "45x10"},
        {"series": f'pg_settings_checkpoint_timeout_seconds{{job="postgres", {_A}}}',
         "values": "900x10"},
        {"series": f'pg_stat_bgwriter_checkpoints{{job="postgres", {_A}}}', "values": "0+1x10"},
        {"series": f'pg_stat_bgwriter_checkpoint_seconds{{job="postgres", {_A}}}',
         "values": "0+900x10"},
        {"series": f'pg_stat_bgwriter_buffers_background{{job="postgres", {_A}}}',
         "values": "0+6000x10"},  # 100 a second
        {"series": f'pg_stat_bgwriter_buffers_backend{{job="postgres", {_A}}}',
         "values": "0+1500x10"},  # 25 a second
        {"series": f'pg_stat_bgwriter_buffers_background{{job="postgres", {_B}}}',
         "values": "0+600x10"},
        {"series": f'pg_stat_bgwriter_buffers_backend{{job="postgres", {_B}}}',
         "values": "0+600x10"},  # half, but 20 a second in all: too little to judge
        {"series": f'pg_settings_max_wal_size_bytes{{job="postgres", {_A}}}',
         "values": "268435456x10"},
        {"series": f"tenantry_database_wal_free_bytes{{{_AGENT_A}}}", "values": "805306368x10"},
        {"series": f"tenantry_database_memory_bytes{{{_AGENT_A}}}", "values": "52428800x10"},
        {"series": f"tenantry_database_memory_bytes{{{_AGENT_B}}}", "values": "94371840x10"},
        {"series": f"tenantry_database_memory_budget_bytes{{{_AGENT_A}}}",
         "values": "104857600x10"},
        {"series": f"tenantry_database_memory_budget_bytes{{{_AGENT_B}}}",
         "values": "104857600x10"},
    ],
    "alert_rule_test": [
        {"eval_time": "8m", "alertname": "db_recovery_busy", "exp_alerts": [
            _db_alert("postgres", "/run/b:5433", "acme/p2", "db_recovery", "busy")]},
        {"eval_time": "8m", "alertname": "db_recovery_overloaded", "exp_alerts": []},
        {"eval_time": "8m", "alertname": "checkpoint_busy", "exp_alerts": [
            _db_alert("postgres", "/run/a:5432", "acme/p1", "checkpoint", "busy")]},
        {"eval_time": "8m", "alertname": "checkpoint_overloaded", "exp_alerts": []},
        {"eval_time": "8m", "alertname": "cache_write_busy", "exp_alerts": [
            _db_alert("postgres", "/run/a:5432", "acme/p1", "cache_write", "busy")]},
        {"eval_time": "8m", "alertname": "cache_write_overloaded", "exp_alerts": []},
        {"eval_time": "8m", "alertname": "wal_space_busy", "exp_alerts": [
            _db_alert("agent", "/run/a:5432", "acme/p1", "wal_space", "busy")]},
        {"eval_time": "8m", "alertname": "wal_space_overloaded", "exp_alerts": []},
        {"eval_time": "8m", "alertname": "db_memory_busy", "exp_alerts": [
            _db_alert("agent", "/run/b:5433", "acme/p2", "db_memory", "busy")]},
        {"eval_time": "8m", "alertname": "db_memory_overloaded", "exp_alerts": []},
    ],
})

UNIT_TESTS.append({
    # An idle cluster ran no checkpoint in the window: its checkpoint check has no value,
    # not 0/0 (NaN, which CI once read back as the check's value).
    "interval": "1m",
    "input_series": [
        {"series": f"tenantry_database_expected{{{_AGENT_A}}}", "values": "1x10"},
        {"series": f'pg_settings_checkpoint_timeout_seconds{{job="postgres", {_A}}}',
         "values": "900x10"},
        {"series": f'pg_stat_bgwriter_checkpoints{{job="postgres", {_A}}}', "values": "3x10"},
        {"series": f'pg_stat_bgwriter_checkpoint_seconds{{job="postgres", {_A}}}',
         "values": "12x10"},
    ],
    "promql_expr_test": [
        {"expr": f'{rules.VALUE}{{check="checkpoint"}}', "eval_time": "8m",
         "exp_samples": []},
    ],
})

UNIT_TESTS.append({
    # a 1 Gbit/s link (125,000,000 bytes/s) sending 100 MB/s: 80 %; a virtual NIC with no
    # stated speed has no value at all
    "interval": "15s",
    "input_series": [
        {"series": 'node_network_transmit_bytes_total{job="node", host="h1", device="eth0"}',
         "values": "0+1500000000x20"},
        {"series": 'node_network_receive_bytes_total{job="node", host="h1", device="eth0"}',
         "values": "0+15000000x20"},
        {"series": 'node_network_speed_bytes{job="node", host="h1", device="eth0"}',
         "values": "125000000x20"},
        {"series": 'node_network_transmit_bytes_total{job="node", host="h1", device="veth1"}',
         "values": "0+1500000000x20"},
    ],
    "alert_rule_test": [
        {"eval_time": "3m", "alertname": "interface_saturation_busy", "exp_alerts": [
            {"exp_labels": {"job": "node", "host": "h1", "device": "eth0",
                            "check": "interface_saturation", "kind": "host", "level": "busy",
                            "scope": "default"}}]},
        {"eval_time": "3m", "alertname": "interface_saturation_overloaded", "exp_alerts": []},
    ],
})


def test_rules_behave_under_promtool(tmp_path: Path) -> None:
    doc = rules.rule_groups(CHECKS, OVERRIDES)
    for r in (r for group in doc["groups"] for r in group["rules"]):
        r.pop("annotations", None)  # labels are what these cases are about
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (tmp_path / "test.yml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yml"], "evaluation_interval": "5s", "tests": UNIT_TESTS,
    }, sort_keys=False))
    out = subprocess.run(["promtool", "test", "rules", "test.yml"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
