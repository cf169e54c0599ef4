"""The check catalog as data, and threshold overrides per ISV, host or platform.

Each check is one PromQL expression whose value is compared with thresholds. Two levels fire:
*busy* (warning) and *overloaded* (critical). Hysteresis: once busy fires it holds until the
value passes the separate `clear` threshold; overloaded holds until the value passes the busy
threshold (so overloaded steps down to busy, and busy to OK).

Target labels: the service-discovery document (`prometheus.SdGroup`) labels every target with
`kind` (host, platform, database), `host`, and for platforms and their databases `isv` and
`platform` (`ISV/NAME`). Expressions aggregate only with `without(...)` so those labels survive
into the alerts, where Alertmanager inhibition and tenantry's routing need them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from tenantry.core.errors import InvalidInput, invalid_input
from tenantry.monitoring.prometheus import DSN_REPLAN, SLOW_JOBS, seconds


class TargetKind(StrEnum):
    HOST = "host"
    PLATFORM = "platform"
    DATABASE = "database"


class Scope(StrEnum):
    """Where an override applies, least specific first: a platform's beats its host's,
    which beats its ISV's, which beats the catalog default."""

    ISV = "isv"
    HOST = "host"
    PLATFORM = "platform"


SPECIFICITY: tuple[Scope, ...] = (Scope.ISV, Scope.HOST, Scope.PLATFORM)
# Names of ISVs, hosts and platforms (`ISV/NAME`) as they appear in label values; nothing
# that could end a PromQL string or mean something in a regex besides '.'.
TARGET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")


@dataclass(frozen=True)
class Check:
    """One check. `busy` may be None for checks that are simply up or down (overloaded only).

    `hold` is Prometheus's `for`, in seconds: the condition must last that long before the
    alert fires, which filters single-scrape blips at the cost of latency.

    `urgent` checks page someone at once (something stopped answering): Prometheus
    evaluates them every second. The others change slowly or hold for longer, and are
    evaluated as often as their series are scraped (see rules.rule_groups).
    """

    name: str
    kind: TargetKind
    expr: str
    higher_is_worse: bool
    busy: float | None
    overloaded: float
    clear: float
    hold: int
    unit: str
    summary: str
    urgent: bool = False

    def worse(self, a: float, b: float) -> bool:
        """True when value `a` is strictly worse than `b` for this check."""
        return a > b if self.higher_is_worse else a < b


# postgres_exporter 0.11 with several DSNs (one exporter per host, every cluster on it) labels
# each cluster's series `server` ("SOCKETDIR:PORT" or "HOST:PORT"), but its `pg_up` is a
# single unlabelled gauge (1 while any cluster answers), and a stopped cluster's series simply
# vanish. So the agent exports the clusters it expects, `tenantry_database_expected{server,
# isv, platform} 1` (server spelt as the exporter spells it): "up" is "expected and present",
# and each database series gets its platform's labels from that join.
EXPECTED = 'max by(server, isv, platform, host) (tenantry_database_expected{job="agent"})'
RUNNING = 'max by(server, isv, platform, host) (tenantry_database_running{job="agent"})'
# A cluster that starts (again) is added to its exporter's DSN list within DSN_REPLAN s, which
# restarts the exporter, and shows in Prometheus at the exporter's next scrape; one scrape may
# race the restart. Until then "running and absent from the exporter" says nothing: it counts
# once the agent has said running for this long without a break (and had said so this long
# ago, so a cluster that just appeared waits too).
EXPORTER_SETTLE = int(DSN_REPLAN + 2 * seconds(SLOW_JOBS["postgres"][0]) + 10)  # s
SETTLED = (f'max by(server) (min_over_time(tenantry_database_running{{job="agent"}}'
           f'[{EXPORTER_SETTLE}s]) == 1 and (tenantry_database_running{{job="agent"}}'
           f' offset {EXPORTER_SETTLE}s) == 1)')


def _db(expr: str) -> str:
    return f"({expr}) * on(server) group_left(isv, platform) {EXPECTED}"


_FS = 'fstype!~"tmpfs|ramfs|devtmpfs|squashfs|nsfs|autofs|proc|sysfs|fuse.*"'
_PGDB = "datid, datname"

CHECKS: tuple[Check, ...] = (
    # host (node_exporter 1.5; `up` of the agent and node targets)
    Check("cpu", TargetKind.HOST,
          '100 * (1 - avg without(cpu, mode) (rate(node_cpu_seconds_total{mode="idle"}[30s])))',
          True, 80, 95, 70, 60, "%", "CPU busy"),
    Check("memory", TargetKind.HOST,
          "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
          True, 85, 95, 80, 30, "%", "memory used"),
    Check("swap", TargetKind.HOST,
          "100 * (1 - node_memory_SwapFree_bytes / node_memory_SwapTotal_bytes)"
          " and node_memory_SwapTotal_bytes > 0",
          True, 50, 80, 40, 60, "%", "swap used"),
    Check("df", TargetKind.HOST,
          f"100 * (1 - node_filesystem_avail_bytes{{{_FS}}} / node_filesystem_size_bytes{{{_FS}}})",
          True, 85, 95, 80, 30, "%", "filesystem used"),
    Check("interface_errors", TargetKind.HOST,
          'rate(node_network_receive_errs_total{device!="lo"}[30s])'
          ' + rate(node_network_transmit_errs_total{device!="lo"}[30s])',
          True, 1, 10, 0.5, 30, "errors/s", "network interface errors"),
    # Saturation: the busier direction's throughput as % of the link's speed, for links that
    # state one (node_exporter has no speed for most virtual NICs: no value, no alert).
    Check("interface_saturation", TargetKind.HOST,
          '100 * max without(direction) (label_replace(rate(node_network_receive_bytes_total'
          '{device!="lo"}[30s]), "direction", "rx", "", "") or label_replace(rate('
          'node_network_transmit_bytes_total{device!="lo"}[30s]), "direction", "tx", "", ""))'
          ' / (node_network_speed_bytes > 0)',
          True, 70, 90, 60, 60, "%", "network interface saturated"),
    Check("heartbeat", TargetKind.HOST, 'up{job=~"agent|node"}',
          False, None, 1, 1, 5, "", "host silent", urgent=True),
    Check("proxy", TargetKind.HOST, 'probe_success{job="probe_proxy"}',
          False, None, 1, 1, 5, "", "proxy (Caddy) not answering", urgent=True),
    # platform (the agent's probes through its host's ingress, agent/prober.py)
    Check("responding", TargetKind.PLATFORM, 'tenantry_probe_success{job="agent"}',
          False, None, 1, 1, 5, "", "instance not responding", urgent=True),
    Check("response_time", TargetKind.PLATFORM,
          'tenantry_probe_duration_seconds{job="agent"}'
          ' and tenantry_probe_success{job="agent"} == 1',
          True, 1, 2, 0.5, 15, "s", "slow responses"),  # the probe gives up at 2.5 s
    Check("tls_expiry", TargetKind.PLATFORM,
          '(tenantry_probe_cert_expiry_timestamp_seconds{job="agent"} - time()) / 86400',
          False, 14, 3, 21, 0, "days", "TLS certificate expires soon"),
    # database (postgres_exporter 0.11, one per host; see _db)
    # Down: expected, and absent from an exporter that answered (an exporter restarting to
    # take a new cluster's DSN, or not answering, says nothing about the databases).
    # Down, from the agent first: its cluster's program is not running (the exporter drops a
    # stopped cluster's DSN and restarts, which would leave a gap and restart the hold). It
    # comes first: the exporter's last scrape, up to 15 s old, still holds the cluster's
    # series, and `or` keeps the left side's value.
    # Absent from an exporter that answered counts only once the cluster has run long enough
    # to be in it (SETTLED): a cluster back from a fault is not told down a second time.
    Check("db_up", TargetKind.DATABASE,
          f"({RUNNING} == 0)"
          f" or ({EXPECTED} * on(server) group_left()"
          f" max by(server) (pg_static{{job=\"postgres\"}}))"
          f" or ({EXPECTED} * 0 and on(host) (up{{job=\"postgres\"}} == 1) and on(server)"
          f" {SETTLED})",
          False, None, 1, 1, 5, "", "database down", urgent=True),
    Check("connections", TargetKind.DATABASE,
          _db("100 * sum without(datname, state) (pg_stat_activity_count)"
              " / pg_settings_max_connections"),
          True, 75, 90, 65, 30, "%", "connections used"),
    Check("longest_transaction", TargetKind.DATABASE,
          _db("max without(datname, state) (pg_stat_activity_max_tx_duration)"),
          True, 300, 1800, 120, 0, "s", "long transaction"),
    # Only while the database does real work (over 200 block reads a second): an idle
    # cluster's ratio is noise (a freshly started one reads everything from disk once).
    Check("cache_hit", TargetKind.DATABASE,
          _db(f"(100 * sum without({_PGDB}) (rate(pg_stat_database_blks_hit[1m]))"
              f" / (sum without({_PGDB}) (rate(pg_stat_database_blks_hit[1m]))"
              f" + sum without({_PGDB}) (rate(pg_stat_database_blks_read[1m]))))"
              f" and (sum without({_PGDB}) (rate(pg_stat_database_blks_hit[1m]))"
              f" + sum without({_PGDB}) (rate(pg_stat_database_blks_read[1m]))) > 200"),
          False, 95, 90, 97, 120, "%", "buffer cache hit ratio low"),
    # Status "in recovery": how long a cluster that should be a primary has been replaying WAL
    # (a restore, or a crash recovery that accepts connections); 0 while it is a primary.
    Check("db_recovery", TargetKind.DATABASE, _db("pg_recovery_seconds"),
          True, 1, 900, 0.5, 30, "s", "database in recovery"),
    # A checkpoint spreads its writes over checkpoint_completion_target (0.9) of
    # checkpoint_timeout; one that takes the whole interval means the disk cannot keep up.
    # The average of the last 30 minutes' checkpoints, as % of checkpoint_timeout (no value
    # while none ran: an idle cluster skips them; without the `> 0` that was 0/0, NaN).
    Check("checkpoint", TargetKind.DATABASE,
          _db("100 * increase(pg_stat_bgwriter_checkpoint_seconds[30m])"
              " / (increase(pg_stat_bgwriter_checkpoints[30m]) > 0)"
              " / pg_settings_checkpoint_timeout_seconds"),
          True, 95, 120, 85, 0, "% of checkpoint_timeout", "checkpoints slow"),
    # Writes: the share of dirty buffers the checkpointer and background writer wrote, rather
    # than the backends themselves (which then wait on the disk: the cache is too small).
    # Only while there is real write traffic (over 100 buffers a second).
    Check("cache_write", TargetKind.DATABASE,
          _db("(100 * rate(pg_stat_bgwriter_buffers_background[5m])"
              " / (rate(pg_stat_bgwriter_buffers_background[5m])"
              " + rate(pg_stat_bgwriter_buffers_backend[5m])))"
              " and (rate(pg_stat_bgwriter_buffers_background[5m])"
              " + rate(pg_stat_bgwriter_buffers_backend[5m])) > 100"),
          False, 90, 75, 95, 120, "%", "buffer cache write ratio low"),
    # the agent's own series (tenantry.agent.metrics)
    # WAL space: free space on the filesystem of the cluster's pg_wal, counted in
    # max_wal_size (the WAL a checkpoint cycle may write); below 2 a cycle may not fit.
    Check("wal_space", TargetKind.DATABASE,
          'tenantry_database_wal_free_bytes{job="agent"} / on(server) group_left()'
          ' max by(server) (pg_settings_max_wal_size_bytes{job="postgres"})',
          False, 4, 2, 5, 30, "x max_wal_size", "WAL space low"),
    # Memory: the cluster's processes (PSS) against what its size is set up to use
    # (shared_buffers + max_connections x work_mem + maintenance_work_mem + a base).
    Check("db_memory", TargetKind.DATABASE,
          '100 * tenantry_database_memory_bytes{job="agent"}'
          ' / tenantry_database_memory_budget_bytes{job="agent"}',
          True, 85, 100, 75, 60, "%", "database memory high"),
    Check("processes", TargetKind.PLATFORM,
          '100 * sum without(slot) (tenantry_platform_processes{job="agent"})'
          ' / (sum without(slot) (tenantry_platform_processes_expected{job="agent"}) > 0)',
          False, 99, 50, 100, 10, "%", "application processes missing", urgent=True),
    Check("rogue", TargetKind.HOST, 'tenantry_rogue_processes{job="agent"}',
          True, 1, 3, 0.5, 60, "processes", "rogue processes"),
    # Crash loops: unexpected exits (supervisord restarts each; PROCESS_RESTARTED events
    # tell each one) counted by the agent; three in ten minutes is a loop, not a mishap.
    Check("restarts", TargetKind.PLATFORM,
          'increase(tenantry_platform_restarts_total{job="agent"}[10m])',
          True, 3, 10, 1, 0, "restarts/10 min", "processes restarting (crash loop)"),
    Check("host_restarts", TargetKind.HOST,
          'increase(tenantry_host_restarts_total{job="agent"}[10m])',
          True, 3, 10, 1, 0, "restarts/10 min", "host programs restarting (crash loop)"),
    # backups (the agent's series, tenantry.agent.backups.metrics): the schedule backs up
    # every 4 hours, so a day without a backup means the schedule or the store is failing.
    Check("backup_age", TargetKind.PLATFORM,
          '(time() - tenantry_backup_last_timestamp_seconds{job="agent"}) / 3600',
          True, 26, 50, 25, 0, "h", "no recent backup"),
    Check("archive_lag", TargetKind.PLATFORM,
          'tenantry_backup_archive_lag_seconds{job="agent"}',
          True, 120, 600, 60, 30, "s", "WAL archive behind (RPO growing)"),
    Check("backup_check", TargetKind.PLATFORM,
          'min without(check) (tenantry_backup_check_ok{job="agent"})',
          False, None, 1, 1, 0, "", "backup verify or restore test failed"),
)


def catalog(extra: tuple[Check, ...] = ()) -> dict[str, Check]:
    """The checks by name; `extra` lets tests and later domains add their own."""
    checks = {c.name: c for c in (*CHECKS, *extra)}
    for c in checks.values():
        _check_order(c, c.busy, c.overloaded, c.clear, field=f"catalog.{c.name}.")
    return checks


def _check_order(check: Check, busy: float | None, overloaded: float, clear: float,
                 *, field: str) -> None:
    word = "above" if check.higher_is_worse else "below"
    if busy is not None and check.worse(busy, overloaded):
        raise InvalidInput(f"busy {busy:g} is {word} overloaded {overloaded:g} for check "
                           f"{check.name!r}", field=f"{field}busy")
    if check.worse(clear, busy if busy is not None else overloaded):
        raise InvalidInput(f"clear {clear:g} is {word} the threshold it clears for check "
                           f"{check.name!r}", field=f"{field}clear")


class ThresholdOverride(BaseModel):
    """`tenantry threshold set CHECK --busy X --overloaded Y [--isv|--host|--platform]`.

    `clear` defaults to keeping the catalog's gap between busy and clear.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    check: str
    scope: Scope
    target: str
    busy: float | None = None
    overloaded: float
    clear: float | None = None

    @field_validator("busy", "overloaded", "clear")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not TARGET_RE.fullmatch(v):
            raise ValueError("must be a plain name (letters, digits, . _ : / @ -)")
        return v


@dataclass(frozen=True)
class Thresholds:
    busy: float | None
    overloaded: float
    clear: float


def parse_override(data: object, checks: dict[str, Check]) -> ThresholdOverride:
    """Validate raw input (API body, CLI flags) into an override, or InvalidInput naming the
    field. Numbers given as strings must parse; booleans are refused."""
    try:
        if isinstance(data, dict):
            for key in ("busy", "overloaded", "clear"):
                if isinstance(data.get(key), bool):
                    raise InvalidInput(f"{key} must be a number", field=key)
        ov = ThresholdOverride.model_validate(data)
    except ValidationError as e:
        raise invalid_input(e) from None
    resolve(ov, checks)
    return ov


def resolve(ov: ThresholdOverride, checks: dict[str, Check]) -> Thresholds:
    """The thresholds an override means, checked against its check's direction."""
    check = checks.get(ov.check)
    if check is None:
        raise InvalidInput(f"unknown check {ov.check!r}", field="check")
    if check.busy is None and ov.busy is not None:
        raise InvalidInput(f"check {check.name!r} has no busy level", field="busy")
    busy = ov.busy
    if check.busy is not None and busy is None:
        raise InvalidInput(f"check {check.name!r} needs a busy threshold", field="busy")
    if ov.clear is not None:
        clear = ov.clear
    elif busy is not None and check.busy is not None:
        clear = busy - (check.busy - check.clear)
    else:
        clear = ov.overloaded - (check.overloaded - check.clear)
    _check_order(check, busy, ov.overloaded, clear, field="")
    return Thresholds(busy, ov.overloaded, clear)


def default_thresholds(check: Check) -> Thresholds:
    return Thresholds(check.busy, check.overloaded, check.clear)
