"""The control plane's half of the monitoring stack: Prometheus, Alertmanager and the
blackbox prober, run by `tenantry up` beside the API (hosts run their own exporters, see
`tenantry.agent.exporters`).

Everything lives under DATA_DIR/monitoring: the configs, the programs' data, their logs, the
bearer tokens (0600), `ports.json` (chosen once, free, kept across restarts) and `stack.json`
(where the worker and the API find Prometheus and Alertmanager).
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from tenantry.agent.services import ProgramSpec
from tenantry.core.db import utcnow
from tenantry.monitoring import catalog, prometheus, rules, stack
from tenantry.monitoring.models import StackCredential

RULES_FILE = "tenantry.yml"
TOKENS = ("prometheus", "alertmanager")  # SD reader, webhook caller


@dataclass(frozen=True)
class StackUrls:
    prometheus: str
    alertmanager: str

    @classmethod
    def load(cls, data_dir: Path) -> StackUrls | None:
        try:
            doc = json.loads((data_dir / "monitoring" / "stack.json").read_text())
            return cls(prometheus=doc["prometheus"], alertmanager=doc["alertmanager"])
        except (OSError, ValueError, KeyError):
            return None


def layout(data_dir: Path) -> stack.StackLayout:
    return stack.StackLayout(data_dir / "monitoring")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ports(data_dir: Path) -> stack.StackPorts:
    """Free loopback ports, chosen once and kept (Prometheus's URL stays put across
    restarts); a kept port another program took since is replaced."""
    path = data_dir / "monitoring" / "ports.json"
    try:
        kept = {k: int(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        kept = {}
    chosen: dict[str, int] = {}
    for name in stack.StackPorts.__dataclass_fields__:
        port = kept.get(name)
        if port is None or not _is_free(port):
            port = _free_port()
        chosen[name] = port
    path.parent.mkdir(parents=True, exist_ok=True)
    stack.write_if_changed(path, json.dumps(chosen, indent=2) + "\n")
    return stack.StackPorts(**chosen)


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_tokens(session: Session) -> dict[str, str]:
    """New bearer tokens for the stack's programs (their hashes stored); called at every
    start of `up`, so a token copied from an earlier run no longer works."""
    made: dict[str, str] = {}
    for name in TOKENS:
        token = "tnm_" + secrets.token_urlsafe(32)
        row = session.get(StackCredential, name)
        if row is None:
            session.add(StackCredential(name=name, token_hash=hash_token(token)))
        else:
            row.token_hash, row.updated_at = hash_token(token), utcnow()
        made[name] = token
    session.commit()
    return made


def write_configs(data_dir: Path, *, api_url: str, tokens: dict[str, str],
                  overrides: list[catalog.ThresholdOverride],
                  ports_: stack.StackPorts) -> None:
    lay = layout(data_dir)
    lay.prepare()
    stack.write_if_changed(lay.sd_token_file, tokens["prometheus"] + "\n", mode=0o600)
    stack.write_if_changed(lay.webhook_token_file, tokens["alertmanager"] + "\n", mode=0o600)
    write_rules(data_dir, overrides)
    stack.write_if_changed(lay.prometheus_yml, prometheus.render_prometheus(
        prometheus.PrometheusInputs(
            alertmanager=f"127.0.0.1:{ports_.alertmanager}", control_plane=api_url,
            token_file=str(lay.sd_token_file),
            blackbox=f"127.0.0.1:{ports_.blackbox_exporter}",
            rule_files=(str(lay.rules_dir / RULES_FILE),))))
    stack.write_if_changed(lay.alertmanager_yml, prometheus.render_alertmanager(
        prometheus.AlertmanagerInputs(webhook_url=f"{api_url}/api/v1/monitoring/alertmanager",
                                      token_file=str(lay.webhook_token_file))))
    stack.write_if_changed(lay.blackbox_yml, prometheus.render_blackbox())
    urls = StackUrls(prometheus=f"http://127.0.0.1:{ports_.prometheus}",
                     alertmanager=f"http://127.0.0.1:{ports_.alertmanager}")
    stack.write_if_changed(data_dir / "monitoring" / "stack.json",
                           json.dumps(asdict(urls), indent=2) + "\n")


def write_rules(data_dir: Path, overrides: list[catalog.ThresholdOverride]) -> bool:
    """The rule file from the catalog and the overrides; True when it changed."""
    lay = layout(data_dir)
    lay.rules_dir.mkdir(parents=True, exist_ok=True)
    return stack.write_if_changed(lay.rules_dir / RULES_FILE, _rules_text(tuple(overrides)))


@functools.lru_cache(maxsize=4)
def _rules_text(overrides: tuple[catalog.ThresholdOverride, ...]) -> str:
    """The rule file's text: the worker keeps it in step every few seconds, and rendering the
    whole catalog to YAML each time was a sixth of an idle worker's CPU."""
    return rules.render(catalog.catalog(), list(overrides))


def central_programs(data_dir: Path, ports_: stack.StackPorts) -> list[ProgramSpec]:
    """Prometheus, Alertmanager and blackbox: the programs `up` supervises."""
    keep = ("mon-prometheus", "mon-alertmanager", "mon-blackbox-exporter")
    # 35 days of samples: the portal's graphs go back a month (alerts are kept for good in
    # tenantry's own store).
    return [p for p in stack.programs(layout(data_dir), ports_, retention="35d")
            if p.name in keep]
