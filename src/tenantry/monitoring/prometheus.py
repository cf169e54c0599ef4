"""Configuration files of the monitoring stack, rendered from typed inputs.

- prometheus.yml: 5 s scrapes, 3 s for the proxy's probe and the agents (`FAST_JOBS`: the
  checks a person waits on: a host's heartbeat, and its platforms' probes, which the agent
  makes, agent/prober.py), 15 s for the clusters' own series (`SLOW_JOBS`), rules
  evaluated every second; targets from the control plane's
  HTTP service discovery (one endpoint per job, bearer token read from a file, refreshed
  every 5 s so new hosts are watched within seconds); the proxy's TCP probe through
  blackbox.
- The service-discovery document the control plane serves (`SdGroup`, a typed model).
- alertmanager.yml: short grouping, one webhook receiver into tenantry with its bearer token
  in a file, inhibition of platform and database alerts while their host is silent.
- blackbox.yml: the probe module.

Platforms are not probed by blackbox: a new TLS connection per probe every 3 s was most of
an idle host's CPU (docs/scaling.md); each host's agent probes its own platforms over kept
connections and its /metrics tells the results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, RootModel, field_validator

SD_JOBS = ("node", "agent", "postgres", "probe_proxy")
PROBE_MODULES = {"probe_proxy": "tcp_proxy"}
# (interval, timeout) of the jobs behind the checks that page someone at once: a platform not
# answering (the agent's probes, agent/prober.py, which start just after each scrape), the
# proxy down, a host's agent silent. A stopped agent is told by the scrape's timeout, so it
# is short (the agent answers in milliseconds).
FAST_JOBS = {"probe_proxy": ("3s", "3s"), "agent": ("3s", "2s")}
# The clusters' own series (postgres_exporter, which queries every cluster of its host at each
# scrape): every check they feed holds for 30 s or more or reads a rate over a minute or
# longer, and a cluster down is told by the agent (`tenantry_database_running`, every 3 s).
# At 5 s these scrapes were half the idle clusters' CPU and most of Prometheus's intake.
SLOW_JOBS = {"postgres": ("15s", "10s")}
# The agent changes postgres_exporter's DSN list at most this often (seconds). Each change
# restarts the exporter, which then connects to every cluster of the host again, and a host
# creating platforms starts or restarts a cluster several times a minute (300 platforms made
# four at a time: 585 restarts, each holding the agent's pass for 1.6 s).
DSN_REPLAN = 20
# What a probe's answer brings that the checks read (catalog.py); blackbox's other series
# (each phase's time, sizes) are read by nothing.
PROBE_KEPT = {"probe_proxy": ("probe_success",)}
# blackbox's own (the proxy's probe) and the agent's for its platforms (agent/prober.py): half
# a second inside the 3 s scrape interval. Durations here are whole or decimal seconds ("Ns").
PROBE_TIMEOUT = "2.5s"


def seconds(duration: str) -> float:
    """A duration as this module writes them ("3s", "2.5s")."""
    return float(duration.removesuffix("s"))


_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1000)


class SdGroup(BaseModel):
    """One entry of Prometheus's HTTP SD format: `{"targets": [...], "labels": {...}}`.

    Conventional labels: `kind` (host, platform, database), `host`, `isv`, `platform`
    (`ISV/NAME`).
    """

    model_config = ConfigDict(extra="forbid")

    targets: list[str]
    labels: dict[str, str] = {}

    @field_validator("labels")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _LABEL_RE.fullmatch(name) or name.startswith("__"):
                raise ValueError(f"bad label name {name!r}")
        return v


class SdDocument(RootModel[list[SdGroup]]):
    """The whole response body of one SD endpoint (a JSON array)."""


def sd_url(control_plane: str, job: str) -> str:
    return f"{control_plane.rstrip('/')}/api/v1/monitoring/sd/{job}"


@dataclass(frozen=True)
class PrometheusInputs:
    """What prometheus.yml needs. Paths are absolute; addresses are host:port."""

    alertmanager: str
    control_plane: str
    token_file: str
    blackbox: str
    rule_files: tuple[str, ...]
    interval: str = "5s"
    evaluation_interval: str = "1s"
    # (interval, timeout) of the jobs that do not scrape at `interval`
    job_timing: dict[str, tuple[str, str]] = field(
        default_factory=lambda: FAST_JOBS | SLOW_JOBS)
    external_labels: dict[str, str] = field(default_factory=dict)


def _sd(inputs: PrometheusInputs, job: str) -> list[dict[str, Any]]:
    return [{
        "url": sd_url(inputs.control_plane, job),
        "refresh_interval": inputs.interval,
        "authorization": {"type": "Bearer", "credentials_file": inputs.token_file},
    }]


def prometheus_config(inputs: PrometheusInputs) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = []
    for job in SD_JOBS:
        scrape: dict[str, Any] = {"job_name": job, "http_sd_configs": _sd(inputs, job)}
        if job in inputs.job_timing:
            scrape["scrape_interval"], scrape["scrape_timeout"] = inputs.job_timing[job]
        module = PROBE_MODULES.get(job)
        if module is not None:
            scrape |= {
                "metrics_path": "/probe",
                "params": {"module": [module]},
                "relabel_configs": [
                    {"source_labels": ["__address__"], "target_label": "__param_target"},
                    {"source_labels": ["__param_target"], "target_label": "instance"},
                    {"target_label": "__address__", "replacement": inputs.blackbox},
                ],
                "metric_relabel_configs": [
                    {"source_labels": ["__name__"], "action": "keep",
                     "regex": "|".join(PROBE_KEPT[job])},
                ],
            }
        jobs.append(scrape)
    glob: dict[str, Any] = {"scrape_interval": inputs.interval,
                            "evaluation_interval": inputs.evaluation_interval,
                            "scrape_timeout": inputs.interval}
    if inputs.external_labels:
        glob["external_labels"] = dict(inputs.external_labels)
    return {
        "global": glob,
        "rule_files": list(inputs.rule_files),
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [inputs.alertmanager]}]}]},
        "scrape_configs": jobs,
    }


def render_prometheus(inputs: PrometheusInputs) -> str:
    return _dump(prometheus_config(inputs))


@dataclass(frozen=True)
class AlertmanagerInputs:
    webhook_url: str
    token_file: str
    # tenantry's outbox waits (ingest.GROUP_WAIT) and groups; this one second is for the
    # inhibitor, which learns of new alerts apart from the dispatcher: with no wait at all, a
    # platform's alert posted in the same batch as its host's heartbeat alert was sometimes
    # sent before the heartbeat could hold it back.
    group_wait: str = "1s"
    # A group that still exists (an alert of the same check and platform resolved moments
    # ago) tells a new alert at its next interval, not at once: keep that short too.
    group_interval: str = "1s"
    repeat_interval: str = "4h"


def alertmanager_config(inputs: AlertmanagerInputs) -> dict[str, Any]:
    """Grouping stays short: tenantry groups per platform itself and damps flapping, so
    Alertmanager's job is to deliver every change promptly."""
    return {
        "route": {
            "receiver": "tenantry",
            "group_by": ["isv", "platform", "host", "check"],
            "group_wait": inputs.group_wait,
            "group_interval": inputs.group_interval,
            "repeat_interval": inputs.repeat_interval,
        },
        "receivers": [{
            "name": "tenantry",
            "webhook_configs": [{
                "url": inputs.webhook_url,
                "send_resolved": True,
                "http_config": {"authorization": {"type": "Bearer",
                                                  "credentials_file": inputs.token_file}},
            }],
        }],
        "inhibit_rules": [
            # A silent host explains everything on it: one notification, not twenty.
            {"source_matchers": ['check="heartbeat"', 'level="overloaded"'],
             "target_matchers": ['kind=~"platform|database"'],
             "equal": ["host"]},
            # Overloaded says more than busy about the same series.
            {"source_matchers": ['level="overloaded"'],
             "target_matchers": ['level="busy"'],
             "equal": ["check", "instance", "job", "server", "mountpoint", "platform", "host"]},
        ],
    }


def render_alertmanager(inputs: AlertmanagerInputs) -> str:
    return _dump(alertmanager_config(inputs))


def blackbox_config(*, timeout: str = PROBE_TIMEOUT) -> dict[str, Any]:
    """`tcp_proxy` only asks whether Caddy accepts."""
    return {"modules": {
        "tcp_proxy": {"prober": "tcp", "timeout": timeout,
                      "tcp": {"preferred_ip_protocol": "ip4"}},
    }}


def render_blackbox(*, timeout: str = PROBE_TIMEOUT) -> str:
    return _dump(blackbox_config(timeout=timeout))
