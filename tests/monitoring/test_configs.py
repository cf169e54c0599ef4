"""prometheus.yml, alertmanager.yml, blackbox.yml and the SD document: rendered, then checked
by the real tools (promtool, amtool, blackbox_exporter --config.check); stack argv."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tenantry.core.errors import Unavailable
from tenantry.monitoring import rules, stack
from tenantry.monitoring.catalog import catalog
from tenantry.monitoring.prometheus import (
    AlertmanagerInputs,
    PrometheusInputs,
    SdDocument,
    render_alertmanager,
    render_blackbox,
    render_prometheus,
)
from tests.monitoring.conftest import free_port

PORTS = stack.StackPorts(19090, 19093, 19100, 19115, 19187)


def _tool(*argv: str) -> None:
    out = subprocess.run(list(argv), capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _write_all(root: Path) -> stack.StackLayout:
    layout = stack.StackLayout(root)
    layout.prepare()
    stack.write_if_changed(layout.sd_token_file, "t", mode=0o600)
    stack.write_if_changed(layout.webhook_token_file, "t", mode=0o600)
    stack.write_if_changed(layout.rules_dir / "checks.yml", rules.render(catalog()))
    stack.write_if_changed(layout.prometheus_yml, render_prometheus(PrometheusInputs(
        alertmanager="127.0.0.1:19093", control_plane="https://127.0.0.1:8443/",
        token_file=str(layout.sd_token_file), blackbox="127.0.0.1:19115",
        rule_files=(str(layout.rules_dir / "*.yml"),), external_labels={"region": "r1"})))
    stack.write_if_changed(layout.alertmanager_yml, render_alertmanager(AlertmanagerInputs(
        webhook_url="https://127.0.0.1:8443/api/v1/monitoring/alertmanager",
        token_file=str(layout.webhook_token_file))))
    stack.write_if_changed(layout.blackbox_yml, render_blackbox())
    return layout


def test_the_real_tools_accept_every_file(tmp_path: Path) -> None:
    layout = _write_all(tmp_path)
    _tool("promtool", "check", "config", str(layout.prometheus_yml))
    _tool("amtool", "check-config", str(layout.alertmanager_yml))
    _tool(stack.binary("blackbox_exporter"), "--config.check",
          f"--config.file={layout.blackbox_yml}")


def test_prometheus_config_shape(tmp_path: Path) -> None:
    doc = yaml.safe_load(_write_all(tmp_path).prometheus_yml.read_text())
    assert doc["global"]["scrape_interval"] == "5s"
    assert doc["global"]["evaluation_interval"] == "1s"
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    # what pages someone at once is asked more often, and gives up sooner
    assert (jobs["agent"]["scrape_interval"], jobs["agent"]["scrape_timeout"]) == ("3s", "2s")
    assert jobs["probe_proxy"]["scrape_interval"] == "3s"
    assert "scrape_interval" not in jobs["node"]
    # the clusters' own series feed only checks that hold 30 s or more: asked less often
    assert (jobs["postgres"]["scrape_interval"], jobs["postgres"]["scrape_timeout"]) == (
        "15s", "10s")
    # platforms are probed by their agents (agent/prober.py), not by blackbox
    assert set(jobs) == {"node", "agent", "postgres", "probe_proxy"}
    sd = jobs["node"]["http_sd_configs"][0]
    assert sd["url"] == "https://127.0.0.1:8443/api/v1/monitoring/sd/node"
    assert sd["refresh_interval"] == "5s"  # new hosts watched within one interval
    assert sd["authorization"]["credentials_file"].endswith("secrets/sd-token")
    probe = jobs["probe_proxy"]
    assert probe["params"] == {"module": ["tcp_proxy"]}
    relabel = {r.get("target_label"): r for r in probe["relabel_configs"]}
    assert relabel["__address__"]["replacement"] == "127.0.0.1:19115"
    # only the series the checks read are stored: each probe's others are dropped
    kept = probe["metric_relabel_configs"][0]
    assert (kept["action"], kept["source_labels"]) == ("keep", ["__name__"])
    read = {m for c in catalog().values() for m in re.findall(r"(?<!_)probe_\w+", c.expr)}
    assert set(kept["regex"].split("|")) == read - {"probe_proxy"}


def test_alertmanager_config_shape(tmp_path: Path) -> None:
    doc = yaml.safe_load(_write_all(tmp_path).alertmanager_yml.read_text())
    assert doc["route"]["group_wait"] == "1s"  # the inhibitor's moment; tenantry groups
    hook = doc["receivers"][0]["webhook_configs"][0]
    assert hook["send_resolved"] is True
    assert hook["http_config"]["authorization"]["credentials_file"].endswith("webhook-token")
    host_down = doc["inhibit_rules"][0]
    assert host_down["equal"] == ["host"]
    assert 'check="heartbeat"' in host_down["source_matchers"]


@pytest.mark.parametrize("body, ok", [
    ('[{"targets": ["127.0.0.1:9100"], "labels": {"kind": "host", "host": "h1"}}]', True),
    ('[{"targets": ["https://127.0.0.1:8443/health"], "labels": {"server_name": "p.i.x"}}]',
     True),
    ("[]", True),
    ('[{"targets": "127.0.0.1:9100"}]', False),
    ('[{"targets": [], "labels": {"bad-name": "x"}}]', False),
    ('[{"targets": [], "labels": {"__address__": "x"}}]', False),
    ('[{"targets": [], "labels": {"host": 1}}]', False),
    ('{"targets": []}', False),
])
def test_sd_document(body: str, ok: bool) -> None:
    if ok:
        assert SdDocument.model_validate_json(body).model_dump_json() != ""
    else:
        with pytest.raises(ValidationError):
            SdDocument.model_validate_json(body)


def _argv(specs: list[Any], name: str) -> tuple[str, ...]:
    return next(s.command for s in specs if s.name == name)


def test_programs(tmp_path: Path) -> None:
    layout = stack.StackLayout(tmp_path)
    specs = stack.programs(layout, PORTS, retention="30d")
    assert [s.name for s in specs] == ["mon-prometheus", "mon-alertmanager",
                                       "mon-node-exporter", "mon-blackbox-exporter"]
    prom = _argv(specs, "mon-prometheus")
    assert "--web.enable-lifecycle" in prom and "--web.listen-address=127.0.0.1:19090" in prom
    assert f"--storage.tsdb.path={tmp_path}/data/prometheus" in prom
    assert "--storage.tsdb.retention.time=30d" in prom
    assert "--cluster.listen-address=" in _argv(specs, "mon-alertmanager")
    for spec in specs:  # never a default port, never a non-loopback listener
        assert any(a.startswith("--web.listen-address=127.0.0.1:19") for a in spec.command)

    dsns = ["postgresql://a@/db?host=/run/a", "postgresql://b@/db?host=/run/b"]
    with_pg = stack.programs(layout, PORTS, postgres_dsns=dsns)
    pg = next(s for s in with_pg if s.name == "mon-postgres-exporter")
    assert pg.environment["DATA_SOURCE_NAME"] == ",".join(dsns)
    assert {"--no-collector.bgwriter", "--no-collector.database"} <= set(pg.command)
    assert "postgresql://" not in repr(pg)  # DSNs may hold passwords


def test_write_if_changed(tmp_path: Path) -> None:
    path = tmp_path / "f.yml"
    assert stack.write_if_changed(path, "a")
    assert not stack.write_if_changed(path, "a")
    assert stack.write_if_changed(path, "b") and path.read_text() == "b"
    assert [p.name for p in tmp_path.iterdir()] == ["f.yml"]


def test_reload_and_ready_when_nothing_listens() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert not stack.ready(url)
    with pytest.raises(Unavailable):
        stack.reload(url)
    with pytest.raises(Unavailable):
        stack.wait_ready(url, timeout=0.5)
