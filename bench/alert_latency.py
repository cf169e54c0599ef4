"""Alert latency (issue 7's target: p95 <= 15 s, p99 <= 30 s from a fault to the message).

A real `tenantry up` with its monitoring as it ships (Prometheus scraping every 5 s, the agents
every 3 s: their heartbeat, and their probes of the platforms, made just after each scrape;
rules evaluated every second, Alertmanager's group_wait 1 s, tenantry's outbox), a real SMTP
server (aiosmtpd) and a real HTTP SMS gateway (JSON `{to, body}`) on loopback in this process,
one ISV contact with email and phone, and a NOC contact. Three faults, each N times:

- hang: a platform's app processes stopped (SIGSTOP; SIGCONT repairs) -> `responding`;
- db: the platform's PostgreSQL stopped so that it stays down: an unknown setting appended to
  its `postgresql.auto.conf`, then SIGQUIT to the postmaster (supervisord and the agent restart
  it, and it refuses to start every time); removing the line repairs, and the agent's next
  restart succeeds -> `db_up`;
- agent: the host's agent stopped (SIGSTOP of `up`'s agent child; SIGCONT) -> `heartbeat`,
  which goes to the NOC.

Each trial is timed from the fault (the signal) to the message accepted by the SMTP server
and by the SMS gateway, and from the repair to the RESOLVED messages; only messages to the
relevant recipient count (the ISV contact for hang and db, the NOC for agent), and each trial
must bring exactly one email and one SMS for the fault and one of each for the recovery.
Platform faults run on K platforms at once, each at a random offset (a random phase of the
5 s cycle); agent faults one at a time. Between two trials of a target the bench clears the
target's flap record (`monitor_flaps`): a second fault within 10 minutes is otherwise told
once as FLAPPING and then not at all, which is tenantry's damping at work, not its latency.

The baseline (on unless --no-baseline): a second Prometheus and Alertmanager with their
default timings (scrape and evaluation every 1 min, scrape timeout 10 s, group_wait 30 s,
group_interval 5 min) on the same targets (tenantry's service discovery, token file, blackbox
prober and rules), sending to a webhook in this process: fault -> webhook is a lower bound of
its notification time. Its trials take minutes each (a resolution waits for the next
group_interval), so only the first trials of each fault wait for it (--baseline-trials,
--baseline-agent-trials); the others run while the baseline's resolutions are pending where
that cannot disturb them.

    .venv/bin/python bench/alert_latency.py [--trials 20] [--platforms 5] [--no-baseline]
    .venv/bin/python bench/alert_latency.py --short   # 1 trial each, no baseline, no report

Exits 1 when a trial missed a message or got a duplicate; a missed latency target is a
measured figure and only reported.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import email
import email.policy
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import create_engine, delete
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ISV,
    ControlPlaneProcess,
    append_report,
    create_platform,
    free_port,
    machine_facts,
    md_table,
    other_tenantry_ups,
    pct,
    setup_isv,
    short_tmp,
    wait_https,
    wait_job,
)
from tests.monitoring.servers import Mailbox, smtp_server  # noqa: E402
from tests.monitoring.test_monitoring_live import app_pids  # noqa: E402

from tenantry.core.pgserver import ControlPlaneDatabase  # noqa: E402
from tenantry.monitoring import catalog, local  # noqa: E402
from tenantry.monitoring import prometheus as prom  # noqa: E402
from tenantry.monitoring.models import Flap  # noqa: E402
from tenantry.monitoring.stack import binary, wait_ready  # noqa: E402

ISV_EMAIL, ISV_PHONE = "ops@bms.example", "+41790000001"
NOC_EMAIL, NOC_PHONE = "noc@provider.example", "+41790000009"
HOST = "local"  # the name `up`'s own agent enrolls as
BAD_SETTING = "tenantry_bench_fault = on\n"  # unknown to PostgreSQL: it refuses to start
FAULT_CAP = 240.0  # a fault stays on at most this long, waiting for every message
REPAIR_CAP = 240.0  # ... and a repair, waiting for tenantry's recovery messages
BASELINE_REPAIR_CAP = 480.0  # the baseline's resolution waits for its next group_interval
SETTLE = 6.0  # after the last expected message: anything more would be a duplicate
STAGGER = 10.0  # a round's faults start at random offsets within this (two 5 s cycles)
BASELINE_STAGGER = 60.0  # ... and within the baseline's scrape and evaluation interval
QUIET_CAP = 240.0  # before a trial: the target's earlier alerts closed
TARGET_P95, TARGET_P99 = 15.0, 30.0
FIRING = ("OVERLOADED", "BUSY")


class Stopped(Exception):
    """The run is being torn down (an error elsewhere, Ctrl-C, SIGTERM)."""


# ---------------------------------------------------------------- what is measured


@dataclass(frozen=True)
class Kind:
    name: str
    check: str
    what: str  # the summary tenantry's messages carry
    title: str
    noc: bool  # told to the NOC (host alerts) rather than the ISV's contact

    @property
    def email(self) -> str:
        return NOC_EMAIL if self.noc else ISV_EMAIL

    @property
    def phone(self) -> str:
        return NOC_PHONE if self.noc else ISV_PHONE


KINDS = {k.name: k for k in (
    Kind("hang", "responding", "instance not responding", "app hung (SIGSTOP)", False),
    Kind("db", "db_up", "database down", "database stopped, kept down", False),
    Kind("agent", "heartbeat", "host silent", "host agent stopped (SIGSTOP)", True),
)}


@dataclass(frozen=True)
class Target:
    name: str  # ISV/NAME, or the host's name
    platform_id: str | None = None

    def told_as(self, kind: Kind) -> str:
        """How tenantry's messages name the alert's target."""
        return f"{self.name} database" if kind.name == "db" else self.name

    def matches(self, kind: Kind, labels: dict[str, str]) -> bool:
        """An alert's labels (Prometheus, Alertmanager) of this kind on this target."""
        if labels.get("check") != kind.check:
            return False
        if kind.name == "agent":
            return labels.get("host") == self.name and labels.get("job") == "agent"
        return labels.get("platform") == self.name


# ---------------------------------------------------------------- messages as received


@dataclass(frozen=True)
class Told:
    """One alert state in a message: `OVERLOADED bms/p1: instance not responding`."""

    head: str  # OVERLOADED, BUSY, RESOLVED, FLAPPING, STABLE
    what: str
    target: str


@dataclass(frozen=True)
class Arrival:
    at: float  # time.time() when the server accepted it
    channel: str  # email | sms
    recipient: str
    told: tuple[Told, ...]
    subject: str = ""  # as received (the email's subject, the SMS's text), for failures


_SMS_GROUP = re.compile(r"^\d+ alerts: (?:host:)?[^:]*: (.*)$", re.S)
_SMS_PART = re.compile(r"^([A-Z]+) (.+?): (.+)$", re.S)
_MAIL_PART = re.compile(r"^([A-Z]+): (.+?) on (.+?)(?: \(value [^)]*\))?\.$")


def parse_sms(body: str) -> tuple[Told, ...]:
    """One alert (`HEAD TARGET: WHAT`) or a group (`N alerts: GROUP: part; part`)."""
    grouped = _SMS_GROUP.match(body)
    parts = grouped.group(1).split("; ") if grouped else [body]
    return tuple(Told(m[1], m[3].strip(), m[2]) for p in parts if (m := _SMS_PART.match(p)))


def parse_email(content: bytes) -> tuple[Told, ...]:
    """Each alert's paragraph starts `HEAD: WHAT on TARGET (value ...).`"""
    msg = email.message_from_bytes(content, policy=email.policy.default)
    part = msg.get_body(preferencelist=("plain",)) if msg.is_multipart() else msg
    body = part.get_content() if part is not None else ""  # type: ignore[union-attr]
    found = []
    for paragraph in re.split(r"\n\s*\n", body.replace("\r\n", "\n")):  # CRLF over SMTP
        lines = paragraph.strip().splitlines()
        if lines and (m := _MAIL_PART.match(lines[0])):
            found.append(Told(m[1], m[2], m[3]))
    return tuple(found)


class Inbox:
    """Every message the SMTP server and the SMS gateway accepted, with its time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Arrival] = []

    def add(self, arrival: Arrival) -> None:
        with self._lock:
            self._items.append(arrival)

    def all(self) -> list[Arrival]:
        with self._lock:
            return list(self._items)

    def about(self, kind: Kind, target: Target, since: float,
              until: float = float("inf")) -> list[tuple[Arrival, Told]]:
        """Messages to the kind's recipient about this target's alert, within the window."""
        out = []
        for a in self.all():
            if a.recipient not in (kind.email, kind.phone) or not since <= a.at <= until:
                continue
            for t in a.told:
                if t.what == kind.what and t.target == target.told_as(kind):
                    out.append((a, t))
        return out

    def first(self, kind: Kind, target: Target, channel: str, heads: Sequence[str],
              since: float) -> float | None:
        times = [a.at for a, t in self.about(kind, target, since)
                 if a.channel == channel and t.head in heads]
        return min(times) if times else None


@dataclass
class TimedMailbox(Mailbox):
    """tests.monitoring.servers' mailbox, noting when it accepted each message."""

    inbox: Inbox = field(default_factory=Inbox)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        answer = await super().handle_DATA(server, session, envelope)
        at = time.time()
        if answer.startswith("250"):
            raw = envelope.original_content or b""
            told = parse_email(raw)
            subject = str(email.message_from_bytes(raw, policy=email.policy.default)
                          .get("Subject", ""))
            for rcpt in envelope.rcpt_tos:
                self.inbox.add(Arrival(at, "email", rcpt, told, subject))
        return answer


class Receiver:
    """One HTTP server on loopback: the SMS gateway (`POST /sms`, JSON `{to, body}`, answers
    201 like a gateway that queued it) and the baseline Alertmanager's webhook
    (`POST /webhook`)."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.webhooks: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                at = time.time()
                status = 404
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    doc = json.loads(body)
                    if self.path == "/sms":
                        receiver.inbox.add(Arrival(at, "sms", str(doc["to"]),
                                                   parse_sms(str(doc["body"])),
                                                   str(doc["body"])))
                        status = 201
                    elif self.path == "/webhook":
                        with receiver._lock:
                            receiver.webhooks.append((at, doc))
                        status = 200
                answer = b'{"sid": "SM1", "status": "queued"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def baseline_alerts(self) -> list[tuple[float, dict[str, Any]]]:
        """(arrival, alert) for every alert in every webhook call so far."""
        with self._lock:
            calls = list(self.webhooks)
        return [(at, alert) for at, doc in calls for alert in doc.get("alerts", [])]


# ---------------------------------------------------------------- the baseline stack


class Baseline:
    """Prometheus and Alertmanager with their default timings, on tenantry's targets."""

    SCRAPE, TIMEOUT, GROUP_WAIT, GROUP_INTERVAL = "1m", "10s", "30s", "5m"

    def __init__(self, root: Path, receiver: Receiver) -> None:
        self.root = root
        self.receiver = receiver
        self.prometheus_port = free_port()
        self.alertmanager_port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def start(self, cp: ControlPlaneProcess) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        mon = cp.data_dir / "monitoring"
        # tenantry's rule file, evaluated at the default interval (its group says 5 s).
        rules = yaml.safe_load((mon / "rules" / local.RULES_FILE).read_text())
        for group in rules["groups"]:
            group["interval"] = self.SCRAPE
        (self.root / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False, width=1000))
        blackbox = json.loads((mon / "ports.json").read_text())["blackbox_exporter"]
        config = prom.prometheus_config(prom.PrometheusInputs(
            alertmanager=f"127.0.0.1:{self.alertmanager_port}", control_plane=cp.url,
            token_file=str(local.layout(cp.data_dir).sd_token_file),
            blackbox=f"127.0.0.1:{blackbox}", rule_files=(str(self.root / "rules.yml"),),
            interval=self.SCRAPE, evaluation_interval=self.SCRAPE, job_timing={}))
        config["global"]["scrape_timeout"] = self.TIMEOUT  # Prometheus's default
        (self.root / "prometheus.yml").write_text(
            yaml.safe_dump(config, sort_keys=False, width=1000))
        (self.root / "webhook-token").write_text("unused\n")
        (self.root / "alertmanager.yml").write_text(prom.render_alertmanager(
            prom.AlertmanagerInputs(webhook_url=f"{self.receiver.url}/webhook",
                                    token_file=str(self.root / "webhook-token"),
                                    group_wait=self.GROUP_WAIT,
                                    group_interval=self.GROUP_INTERVAL, repeat_interval="4h")))
        self._launch("alertmanager", [
            binary("alertmanager"), f"--config.file={self.root / 'alertmanager.yml'}",
            f"--storage.path={self.root / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
            "--cluster.listen-address="])
        self._launch("prometheus", [
            binary("prometheus"), f"--config.file={self.root / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.root / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{self.prometheus_port}"])
        wait_ready(f"http://127.0.0.1:{self.alertmanager_port}", timeout=60)
        wait_ready(self.prometheus, timeout=60)

    def _launch(self, name: str, argv: list[str]) -> None:
        with (self.root / f"{name}.log").open("ab") as log:
            self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL,
                                               start_new_session=True))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def first(self, kind: Kind, target: Target, status: str, since: float) -> float | None:
        times = [at for at, a in self.receiver.baseline_alerts()
                 if at >= since and a.get("status") == status
                 and target.matches(kind, a.get("labels", {}))]
        return min(times) if times else None

    def quiet(self, kind: Kind, target: Target) -> bool:
        """No alert of this series active in the baseline Prometheus, and none it told
        firing without telling it resolved since (its group in Alertmanager is gone)."""
        last: dict[str, str] = {}
        for _, a in sorted(self.receiver.baseline_alerts(), key=lambda x: x[0]):
            if target.matches(kind, a.get("labels", {})):
                last[a.get("fingerprint", "")] = a.get("status", "")
        if "firing" in last.values():
            return False
        return not any(target.matches(kind, a) for a in prometheus_alerts(self.prometheus))

    def value(self, check: str) -> dict[str, float]:
        return check_values(self.prometheus, check)


def prometheus_alerts(url: str) -> list[dict[str, str]]:
    """Labels of the active (pending or firing) alerts, with `activeAt` among them."""
    try:
        r = httpx.get(f"{url}/api/v1/alerts", timeout=5)
        alerts = r.json()["data"]["alerts"]
    except (httpx.HTTPError, ValueError, KeyError):
        return []
    return [{**a["labels"], "activeAt": a.get("activeAt", ""), "state": a.get("state", "")}
            for a in alerts]


def check_values(url: str, check: str) -> dict[str, float]:
    """tenantry:check_value of one check, by platform (or host/job)."""
    try:
        r = httpx.get(f"{url}/api/v1/query", timeout=5,
                      params={"query": f'tenantry:check_value{{check="{check}"}}'})
        result = r.json()["data"]["result"]
    except (httpx.HTTPError, ValueError, KeyError):
        return {}
    return {(m["metric"].get("platform") or
             f"{m['metric'].get('host')}/{m['metric'].get('job')}"): float(m["value"][1])
            for m in result}


DB_SIGNALS = (  # what db_up is made of (monitoring/catalog.py), each on its own
    ("the agent: running", catalog.RUNNING),
    ("the exporter: answered", f'{catalog.EXPECTED} * 0 + on(host) group_left() '
                               'max by(host) (up{job="postgres"})'),
    ("the exporter: has the cluster", f'{catalog.EXPECTED} * on(server) group_left() '
                                      'max by(server) (pg_static{job="postgres"})'),
)


def db_signals(url: str, platform: str, start: int, end: int) -> list[str]:
    """How each part of db_up changed over a failed db trial, as the rules saw it (1 s
    steps): `01:07:13 the agent: running 0 -> 1`, `-` for no series."""
    lines = []
    for name, expr in DB_SIGNALS:
        try:
            r = httpx.get(f"{url}/api/v1/query_range", timeout=10, params={
                "query": expr, "start": start, "end": end, "step": "1s"})
            series = [s for s in r.json()["data"]["result"]
                      if s["metric"].get("platform") == platform]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            lines.append(f"{name}: not asked ({type(exc).__name__})")
            continue
        values = {float(t): v for s in series for t, v in s.get("values", [])}
        last: str | None = None
        for t in range(start, end + 1):
            now = values.get(float(t), "-")
            if now != last:
                lines.append(f"{iso(t)[11:19]} {name}: "
                             + (now if last is None else f"{last} -> {now}"))
                last = now
    return lines


class PendingWatch:
    """tenantry's Prometheus asked every second for its active alerts: when each went
    pending (`activeAt`), for the breakdown."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[dict[str, str], float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        known: set[tuple[str, ...]] = set()
        while not self._stop.wait(1.0):
            for a in prometheus_alerts(self.url):
                key = tuple(sorted(f"{k}={v}" for k, v in a.items() if k != "state"))
                if key in known or not a.get("activeAt"):
                    continue
                known.add(key)
                with self._lock:
                    self.seen.append((a, iso_ts(a["activeAt"])))

    def active_at(self, kind: Kind, target: Target, since: float) -> float | None:
        with self._lock:
            times = [at for labels, at in self.seen
                     if at >= since - 1 and target.matches(kind, labels)]
        return min(times) if times else None


def iso_ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------- faults


class Fault:
    """One fault on one target; repair() is idempotent and undoes whatever apply() did."""

    def apply(self) -> None:
        raise NotImplementedError

    def repair(self) -> None:
        raise NotImplementedError

    def back(self) -> bool:
        """The faulted thing works again (for the database: accepting connections)."""
        return True


class HangApp(Fault):
    def __init__(self, platform_id: str) -> None:
        self.platform_id = platform_id
        self.pids: list[int] = []

    def apply(self) -> None:
        self.pids = app_pids(self.platform_id)
        if not self.pids:
            raise RuntimeError(f"no app process of platform {self.platform_id}")
        for pid in self.pids:
            os.kill(pid, signal.SIGSTOP)

    def repair(self) -> None:
        pids, self.pids = self.pids, []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


class StopDatabase(Fault):
    """Datadir DATA_DIR/agent/platforms/ID/pgdata (HostPaths.platform(id) / "pgdata")."""

    def __init__(self, data_dir: Path, platform_id: str) -> None:
        self.pgdata = data_dir / "agent" / "platforms" / platform_id / "pgdata"
        self.conf = self.pgdata / "postgresql.auto.conf"
        self.applied = False

    def postmaster(self) -> list[str]:
        try:
            return (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return []

    def apply(self) -> None:
        lines = self.postmaster()
        if not lines:
            raise RuntimeError(f"{self.pgdata}: PostgreSQL is not running")
        self.applied = True
        with self.conf.open("a") as f:  # appending keeps the file's owner and mode
            f.write(BAD_SETTING)
        os.kill(int(lines[0]), signal.SIGQUIT)  # immediate shutdown

    def repair(self) -> None:
        if not self.applied:
            return
        text = self.conf.read_text()
        self.conf.write_text(text.replace(BAD_SETTING, ""))  # same inode: owner kept
        self.applied = False

    def back(self) -> bool:
        lines = self.postmaster()
        if len(lines) < 8 or lines[7].strip() != "ready":
            return False
        try:
            os.kill(int(lines[0]), 0)
        except (OSError, ValueError):
            return False
        return True


class StopAgent(Fault):
    """`up`'s agent child, stopped, not killed (up would start a new one)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.pid: int | None = None

    def find(self) -> int:
        found = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                words = Path(f"/proc/{entry}/cmdline").read_bytes().decode().split("\0")
            except OSError:
                continue
            if "tenantry.cli.run" in words and "agent" in words and \
                    str(self.data_dir / "agent") in words:
                found.append(int(entry))
        if len(found) != 1:
            raise RuntimeError(f"the local agent: found processes {found}")
        return found[0]

    def apply(self) -> None:
        self.pid = self.find()
        os.kill(self.pid, signal.SIGSTOP)

    def repair(self) -> None:
        pid, self.pid = self.pid, None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


# ---------------------------------------------------------------- trials


@dataclass
class Trial:
    kind: Kind
    target: Target
    baseline: bool
    number: int
    t_fault: float | None = None
    t_repair: float | None = None
    t_end: float | None = None
    # seconds from the fault / the repair
    email: float | None = None
    sms: float | None = None
    rec_email: float | None = None
    rec_sms: float | None = None
    bl_fired: float | None = None
    bl_resolved: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    breakdown: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)  # what a failed trial did receive

    @property
    def label(self) -> str:
        return f"{self.kind.name} #{self.number} on {self.target.name}"

    @property
    def ok(self) -> bool:
        return not self.errors


class Run:
    """Everything one run shares: the plane, the receivers, the baseline, applied faults."""

    def __init__(self, cp: ControlPlaneProcess, inbox: Inbox, baseline: Baseline | None,
                 watch: PendingWatch) -> None:
        self.cp = cp
        self.inbox = inbox
        self.baseline = baseline
        self.watch = watch
        self.trials: list[Trial] = []
        self.stopping = False
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._engine: Engine | None = None

    # -- faults are undone even when the run fails
    def apply(self, fault: Fault) -> None:
        with self._lock:
            if self.stopping:
                raise Stopped()
            self._faults.append(fault)
        fault.apply()

    def repair(self, fault: Fault) -> None:
        fault.repair()
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def undo_all(self) -> None:
        with self._lock:
            self.stopping = True
            faults, self._faults = list(self._faults), []
        for fault in faults:
            with contextlib.suppress(Exception):
                fault.repair()

    def fault_for(self, trial: Trial) -> Fault:
        if trial.kind.name == "hang":
            assert trial.target.platform_id
            return HangApp(trial.target.platform_id)
        if trial.kind.name == "db":
            assert trial.target.platform_id
            return StopDatabase(self.cp.data_dir, trial.target.platform_id)
        return StopAgent(self.cp.data_dir)

    def wait(self, done: Callable[[], object], cap: float, since: float) -> bool:
        while time.time() - since < cap:
            if self.stopping:
                raise Stopped()
            if done():
                return True
            time.sleep(0.2)
        return bool(done())

    # -- tenantry's own view, through its API
    def open_alerts(self, kind: Kind, target: Target) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"open": "true"}
        if kind.noc:
            params |= {"host": target.name, "check": kind.check}
        else:
            params["platform"] = target.name  # all its checks: a db fault trips responding too
        with self.cp.api() as api:
            r = api.get("/alerts", params=params)
        r.raise_for_status()
        return list(r.json())

    def alert_of(self, trial: Trial) -> dict[str, Any] | None:
        assert trial.t_fault is not None
        params: dict[str, Any] = {"check": trial.kind.check, "since": iso(trial.t_fault - 60)}
        params["host" if trial.kind.noc else "platform"] = trial.target.name
        with self.cp.api() as api:
            found = [a for a in api.get("/alerts", params=params).json()
                     if iso_ts(a["started_at"]) >= trial.t_fault - 1]
            if not found:
                return None
            first = min(found, key=lambda a: a["started_at"])
            return dict(api.get(f"/alerts/{first['id']}").json())

    def reset_flaps(self, kind: Kind, target: Target) -> None:
        """Forget the target's recent changes (see the module's docstring)."""
        if self._engine is None:
            self._engine = create_engine(ControlPlaneDatabase(self.cp.data_dir).url,
                                         pool_size=1)
        if kind.noc:
            patterns = [f"{kind.check}|{target.name}|%"]
        else:
            patterns = [f"%|{target.name}|%", f"%|{target.name} database|%"]
        with self._engine.begin() as conn:
            for p in patterns:
                conn.execute(delete(Flap).where(Flap.series.like(p)))

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def run_trial(run: Run, trial: Trial, offset: float, ours_done: threading.Event) -> None:
    kind, target, inbox = trial.kind, trial.target, run.inbox
    fault = run.fault_for(trial)
    try:
        start = time.time()
        if not run.wait(lambda: not run.open_alerts(kind, target), QUIET_CAP, start):
            trial.errors.append(f"earlier alerts still open after {QUIET_CAP:.0f} s")
        if trial.baseline and run.baseline is not None:
            bl = run.baseline
            if not run.wait(lambda: bl.quiet(kind, target), BASELINE_REPAIR_CAP, time.time()):
                trial.errors.append("the baseline's earlier alert still open")
        run.reset_flaps(kind, target)
        time.sleep(offset)
        run.apply(fault)
        t0 = trial.t_fault = time.time()

        def ours_fired() -> bool:
            return all(inbox.first(kind, target, ch, FIRING, t0) for ch in ("email", "sms"))

        def baseline_fired() -> bool:
            return not trial.baseline or run.baseline is None or \
                run.baseline.first(kind, target, "firing", t0) is not None

        run.wait(lambda: ours_fired() and baseline_fired(), FAULT_CAP, t0)
        if ours_fired():
            time.sleep(SETTLE)  # a duplicate would come now
        time.sleep(random.uniform(0, 5))  # repair at a random phase too
        run.repair(fault)
        t1 = trial.t_repair = time.time()
        back: list[float] = []

        def ours_resolved() -> bool:
            if not back and fault.back():
                back.append(time.time())
            return all(inbox.first(kind, target, ch, ("RESOLVED",), t1)
                       for ch in ("email", "sms"))

        run.wait(ours_resolved, REPAIR_CAP, t1)
        time.sleep(SETTLE)
        trial.t_end = time.time()
        measure(run, trial, back)
        ours_done.set()
        if trial.baseline and run.baseline is not None:
            bl = run.baseline
            if bl.first(kind, target, "firing", t0):
                run.wait(lambda: bl.first(kind, target, "resolved", t1), BASELINE_REPAIR_CAP,
                         t1)
            fired, resolved = bl.first(kind, target, "firing", t0), \
                bl.first(kind, target, "resolved", t1)
            trial.bl_fired = fired - t0 if fired else None
            trial.bl_resolved = resolved - t1 if resolved else None
    except Stopped:
        trial.errors.append("stopped")
    except Exception as exc:  # noqa: BLE001 - the trial fails, the run goes on
        trial.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(Exception):
            run.repair(fault)
        ours_done.set()
    print(f"  {trial.label}: {describe(trial)}", flush=True)


def measure(run: Run, trial: Trial, back: list[float]) -> None:
    """Latencies, exactly-once counts and tenantry's own timestamps for one trial."""
    kind, target, inbox = trial.kind, trial.target, run.inbox
    assert trial.t_fault and trial.t_repair and trial.t_end
    t0, t1 = trial.t_fault, trial.t_repair
    for name, channel, heads, since in (("email", "email", FIRING, t0), ("sms", "sms", FIRING, t0),
                                        ("rec_email", "email", ("RESOLVED",), t1),
                                        ("rec_sms", "sms", ("RESOLVED",), t1)):
        at = inbox.first(kind, target, channel, heads, since)
        setattr(trial, name, at - since if at else None)
    counts: dict[str, int] = {}
    for a, t in inbox.about(kind, target, t0, trial.t_end):
        state = ("firing" if t.head in FIRING else "resolved" if t.head == "RESOLVED"
                 else t.head.lower())
        if state == "resolved" and a.at < t1:
            state = "early-resolved"  # told resolved before the repair
        counts[f"{state} {a.channel}"] = counts.get(f"{state} {a.channel}", 0) + 1
    trial.counts = counts
    for key in ("firing email", "firing sms", "resolved email", "resolved sms"):
        if counts.get(key, 0) != 1:
            trial.errors.append(f"{counts.get(key, 0)} × {key}")
    for key, n in counts.items():
        if key.split()[0] not in ("firing", "resolved"):
            trial.errors.append(f"{n} × {key}")
    if trial.errors:
        trial.evidence = [f"{iso(a.at)[11:19]} {a.channel}: {a.subject[:160]}"
                          for a in inbox.all() if a.recipient in (kind.email, kind.phone)
                          and t0 - 5 <= a.at <= trial.t_end]
        if kind.name == "db":
            trial.evidence += db_signals(run.watch.url, target.name, int(t0) - 5,
                                         int(trial.t_end) + 1)
    b = trial.breakdown
    if back and kind.name == "db":
        b["repair → database ready"] = back[0] - t1
    active = run.watch.active_at(kind, target, t0)
    if active is not None:
        b["fault → pending"] = active - t0
    try:
        alert = run.alert_of(trial)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        print(f"  {trial.label}: no breakdown ({type(exc).__name__}: {exc})", flush=True)
        return
    if alert is None:
        return
    if trial.errors:
        trial.evidence += [f"alert {alert['id']}: " + ", ".join(
            f"{n['state']} {n['channel']} to {n['recipient']} {n['status']}"
            + (f" at {n['sent_at'][11:19]}" if n["sent_at"] else "")
            + (f" ({n['last_error']})" if n["last_error"] else "")
            for n in alert["notifications"])]
    fired = iso_ts(alert["started_at"])
    b["fault → firing"] = fired - t0
    if active is not None:
        b["pending → firing"] = fired - active
    changes = {c["state"]: iso_ts(c["at"]) for c in reversed(alert["changes"])}
    sent = {(n["channel"], n["state"]): iso_ts(n["sent_at"]) for n in alert["notifications"]
            if n["sent_at"] and n["recipient"] in (kind.email, kind.phone)}
    if "firing" in changes:
        b["firing → webhook"] = changes["firing"] - fired
        if ("email", "firing") in sent:
            b["webhook → sent (email)"] = sent["email", "firing"] - changes["firing"]
            if trial.email is not None:
                b["sent → accepted (email)"] = t0 + trial.email - sent["email", "firing"]
    if alert.get("ended_at"):
        ended = iso_ts(alert["ended_at"])
        b["repair → resolved"] = ended - t1
        if "resolved" in changes:
            b["resolved → webhook"] = changes["resolved"] - ended
            if ("email", "resolved") in sent:
                b["webhook → sent (recovery email)"] = (sent["email", "resolved"]
                                                        - changes["resolved"])


def describe(trial: Trial) -> str:
    def s(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"
    text = (f"email {s(trial.email)} s, SMS {s(trial.sms)} s; recovery email "
            f"{s(trial.rec_email)} s, SMS {s(trial.rec_sms)} s")
    if trial.baseline:
        text += f"; baseline {s(trial.bl_fired)} s, resolved {s(trial.bl_resolved)} s"
    return text + ("" if trial.ok else f"  FAILED: {'; '.join(trial.errors)}"
                   + "".join(f"\n      {line}" for line in trial.evidence))


Round = list[Trial]


def run_round(run: Run, trials: Round, fill_ins: deque[Round]) -> None:
    """Start the round's trials at random offsets; once tenantry's side of every trial is
    done, run fill-in rounds (tenantry only) while the baseline's resolutions are pending."""
    # With the baseline, its own cycle (1 min) is the one to hit at random phases: faults
    # within seconds of each other would all wait for the same scrape and evaluation.
    stagger = (BASELINE_STAGGER if any(t.baseline for t in trials) else
               STAGGER if len(trials) > 1 else 5.0)
    events, threads = [], []
    for trial in trials:
        run.trials.append(trial)
        done = threading.Event()
        thread = threading.Thread(target=run_trial, daemon=True,
                                  args=(run, trial, random.uniform(0, stagger), done))
        events.append(done)
        threads.append(thread)
        thread.start()
    for done in events:
        while not done.wait(1.0):
            if run.stopping:
                raise Stopped()
    while any(t.is_alive() for t in threads):
        if fill_ins:
            run_round(run, fill_ins.popleft(), deque())
        else:
            time.sleep(1.0)
        if run.stopping:
            raise Stopped()


def width(kind: Kind, targets: Sequence[Target]) -> int:
    """Trials of a kind at once. Agent faults: one (one host). Database faults leave one
    cluster running: with every cluster of the host down the agent removes its
    postgres_exporter, and `db_up` holds nothing while the exporter is not up (a restarting
    exporter says nothing about the databases), so that case raises no alert at all."""
    if kind.noc:
        return 1
    return max(1, len(targets) - 1) if kind.name == "db" else len(targets)


def plan(kind: Kind, trials: int, targets: Sequence[Target], baseline: int) -> list[Round]:
    """Trial i on target i mod K, in rounds of width(); the first `baseline` wait for it."""
    rounds: list[Round] = []
    for i in range(trials):
        if i % width(kind, targets) == 0:
            rounds.append([])
        rounds[-1].append(Trial(kind, targets[i % len(targets)], i < baseline, i + 1))
    return rounds


def baseline_trials(args: argparse.Namespace, kind: Kind, targets: Sequence[Target]) -> int:
    """Default: one round of the kind (agent: --baseline-agent-trials)."""
    if not args.baseline:
        return 0
    if kind.noc:
        return min(args.trials, args.baseline_agent_trials)
    return min(args.trials, args.baseline_trials or width(kind, targets))


def schedule(run: Run, args: argparse.Namespace, platforms: Sequence[Target]) -> None:
    """Baseline rounds first (hang, db, agent), so no earlier fault has left a group in its
    Alertmanager. While a db round's baseline resolutions are pending, hang rounds run (a hung
    app does not touch `db_up`); while an agent trial's are, hang and db rounds run. Nothing
    overlaps a hang round's baseline (a db fault also trips `responding`) or an agent fault
    (a silent host holds back every platform alert)."""
    host = [Target(HOST)]
    rounds = {}
    for name, targets in (("hang", platforms), ("db", platforms), ("agent", host)):
        kind = KINDS[name]
        count = args.trials if name in args.faults else 0
        rounds[name] = plan(kind, count, targets, baseline_trials(args, kind, targets))
    measured = {k: [r for r in rs if any(t.baseline for t in r)] for k, rs in rounds.items()}
    rest = {k: deque(r for r in rs if not any(t.baseline for t in r))
            for k, rs in rounds.items()}
    for r in measured["hang"]:
        print(f"hang round with the baseline ({len(r)} trials)", flush=True)
        run_round(run, r, deque())
    for r in measured["db"]:
        print(f"db round with the baseline ({len(r)} trials)", flush=True)
        run_round(run, r, rest["hang"])
    fill = deque([*rest["hang"], *rest["db"]])
    for r in measured["agent"]:
        print("agent trial with the baseline", flush=True)
        run_round(run, r, fill)
    for r in [*fill, *rest["agent"]]:
        print(f"{r[0].kind.name} round ({len(r)} trials)", flush=True)
        run_round(run, r, deque())


# ---------------------------------------------------------------- setup


def setup(cp: ControlPlaneProcess, root: Path, count: int) -> list[Target]:
    t0 = time.time()
    setup_isv(cp, root)
    cp.cli("contact", "add", "ops", "--email", ISV_EMAIL, "--phone", ISV_PHONE, "--isv", ISV)
    cp.cli("contact", "add", "noc", "--email", NOC_EMAIL, "--phone", NOC_PHONE)
    made = [create_platform(cp, f"p{i + 1}") for i in range(count)]
    for m in made:
        j = wait_job(cp, m["job_id"], timeout=600)
        if j["state"] != "succeeded":
            raise RuntimeError(f"creating {m['name']}: {j.get('error') or j['state']}")
        wait_https(cp, m["host"])
    print(f"ISV, contacts and {count} platforms in {time.time() - t0:.0f} s", flush=True)
    return [Target(f"{ISV}/{m['name']}", m["id"]) for m in made]


def working_tree() -> str:
    """Others work in this tree: say what of src/ differs from the commit measured."""
    done = subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "status",
                           "--short", "--", "src"], capture_output=True, text=True)
    changed = [line[3:] for line in done.stdout.splitlines() if line.strip()]
    return ("clean" if not changed else
            f"{len(changed)} uncommitted change(s) in src/ were measured too: "
            + ", ".join(changed[:8]) + (", …" if len(changed) > 8 else ""))


def wait_watched(url: str, platforms: Sequence[Target], timeout: float, what: str) -> None:
    """Every platform answering and its database up, as this Prometheus sees them."""
    names = {p.name for p in platforms}
    deadline = time.time() + timeout
    while time.time() < deadline:
        responding, db = check_values(url, "responding"), check_values(url, "db_up")
        beat = check_values(url, "heartbeat")
        if all(responding.get(n) == 1 and db.get(n) == 1 for n in names) and \
                beat.get(f"{HOST}/agent") == 1:
            return
        time.sleep(2)
    raise RuntimeError(f"{what} does not see every platform up within {timeout:.0f} s")


# ---------------------------------------------------------------- report


def stats(values: Sequence[float]) -> dict[str, float]:
    return {"n": len(values), "p50": statistics.median(values), "p95": pct(values, 95),
            "p99": pct(values, 99), "max": max(values)}


def row(kind: Kind, what: str, values: list[float | None], note: str = "") -> list[str]:
    got = [v for v in values if v is not None]
    missing = len(values) - len(got)
    if not got:
        return [kind.name, what, "0", "-", "-", "-", "-", f"{missing} missing {note}".strip()]
    s = stats(got)
    return [kind.name, what, str(len(got)), *(f"{s[k]:.1f}" for k in ("p50", "p95", "p99",
                                                                         "max")),
            f"{missing} missing {note}".strip() if missing else note]


def target_line(kind: Kind, trials: list[Trial]) -> str:
    parts = []
    for name, attr in (("email", "email"), ("SMS", "sms"), ("recovery email", "rec_email"),
                       ("recovery SMS", "rec_sms")):
        got = [getattr(t, attr) for t in trials if getattr(t, attr) is not None]
        if not got:
            parts.append(f"{name}: no data")
            continue
        p95, p99 = pct(got, 95), pct(got, 99)
        verdict = []
        for label, value, limit in (("p95", p95, TARGET_P95), ("p99", p99, TARGET_P99)):
            verdict.append(f"{label} {value:.1f} s " + ("met" if value <= limit else
                                                          f"MISSED by {value - limit:.1f} s"))
        parts.append(f"{name} " + ", ".join(verdict))
    return f"- {kind.name}: " + "; ".join(parts)


def strays(run: Run) -> tuple[list[str], int]:
    """Messages to a kind's recipient about its check that belong to no trial (a false
    alarm, or one left over from an earlier trial); and how many were the app's "not
    responding" during a database fault of its platform (its /health needs the database)."""
    windows = []
    for t in run.trials:
        if t.t_fault:
            end = t.t_end or time.time()
            windows.append((t.kind, t.target.told_as(t.kind), t.t_fault, end, False))
            if t.kind.name == "db":
                hang = KINDS["hang"]
                windows.append((hang, t.target.told_as(hang), t.t_fault, end, True))
    if not windows:
        return [], 0
    first = min(w[2] for w in windows)
    out, side = [], 0
    for a in run.inbox.all():
        if a.at < first:
            continue  # before the first trial: reported as the set-up's messages
        for told in a.told:
            for kind in KINDS.values():
                if told.what != kind.what or a.recipient not in (kind.email, kind.phone):
                    continue
                hits = [w for w in windows if w[0] is kind and w[1] == told.target
                        and w[2] <= a.at <= w[3]]
                if hits and all(w[4] for w in hits):
                    side += 1
                elif not hits:
                    out.append(f"{iso(a.at)[11:19]} {a.channel} to {a.recipient}: "
                               f"{told.head} {told.target}: {told.what}")
    return out, side


def report(run: Run, args: argparse.Namespace, started: float,
           platforms: Sequence[Target], setup_msgs: list[str]) -> tuple[str, bool]:
    trials = run.trials
    by_kind = {k: [t for t in trials if t.kind.name == k] for k in KINDS}
    rows = []
    for name, kind in KINDS.items():
        ts = by_kind[name]
        if not ts:
            continue
        rows += [row(kind, "fault → email", [t.email for t in ts]),
                 row(kind, "fault → SMS", [t.sms for t in ts]),
                 row(kind, "repair → recovery email", [t.rec_email for t in ts]),
                 row(kind, "repair → recovery SMS", [t.rec_sms for t in ts])]
        bl = [t for t in ts if t.baseline]
        if bl:
            rows += [row(kind, "baseline: fault → webhook", [t.bl_fired for t in bl],
                         f"(cap {FAULT_CAP:.0f} s)"),
                     row(kind, "baseline: repair → resolved webhook",
                         [t.bl_resolved for t in bl], f"(cap {BASELINE_REPAIR_CAP:.0f} s)")]
    failed = [t for t in trials if not t.ok]
    minutes = (time.time() - started) / 60
    bl_note = (f"The baseline (Prometheus and Alertmanager defaults: scrape and evaluation "
               f"every {Baseline.SCRAPE}, scrape timeout {Baseline.TIMEOUT}, group_wait "
               f"{Baseline.GROUP_WAIT}, group_interval {Baseline.GROUP_INTERVAL}; tenantry's "
               f"targets, token file, blackbox prober and rules, the rule group evaluated every "
               f"{Baseline.SCRAPE}) was waited for in the first {args.baseline_trials} hang and "
               f"db trials and the first {args.baseline_agent_trials} agent trials only: each "
               f"takes minutes (its resolution waits for the next group_interval), and "
               f"{args.trials} of each would have taken hours. Its webhook arrival is a lower "
               f"bound of its notification time." if args.baseline else
               "No baseline in this run (--no-baseline or --short).")
    body = [
        f"{len(trials)} trials ({args.trials} per fault) on {len(platforms)} platforms of one "
        f"host, {minutes:.0f} min. tenantry as shipped: Prometheus scrapes every 5 s, the "
        f"agents every 3 s (their heartbeat, and their probes of the platforms over kept "
        f"connections, made just after each scrape; probe timeout 2.5 s, agent scrape "
        f"timeout 2 s), rules evaluated every 1 s, hold (`for`) 5 s, Alertmanager group_wait "
        f"1 s, tenantry's outbox (GROUP_WAIT 1 s, worker tick 1 s). A real SMTP server (aiosmtpd) "
        f"and a real HTTP SMS gateway on loopback; times are from the fault's signal to the "
        f"server accepting the message, and from the repair to the RESOLVED message. Only "
        f"messages to the relevant recipient count (the ISV's contact for hang and db, the "
        f"NOC for agent). Hang faults ran on all platforms at once, db faults on all but one, "
        f"each at a random offset within {STAGGER:.0f} s ({BASELINE_STAGGER:.0f} s in rounds "
        f"with the baseline, its own cycle); agent faults one at a time. "
        f"Before each trial the "
        f"target's flap record is cleared (otherwise a second fault within 10 min is told as "
        f"FLAPPING once and then not at all: the damping, not the latency).",
        "", bl_note, "",
        "Faults: hang = SIGSTOP of the platform's app processes (SIGCONT repairs); db = an "
        "unknown setting appended to the cluster's postgresql.auto.conf and SIGQUIT to its "
        "postmaster, so that supervisord's and the agent's restarts fail (removing the line "
        "repairs; the agent's next restart succeeds); agent = SIGSTOP of `up`'s agent child. "
        "One cluster is left running in every db round: with every cluster of the host down "
        "the agent removes its postgres_exporter, and `db_up` (as of this tree) holds no value "
        "while the exporter is not up, so no database alert fires at all (a trial run of this "
        "bench with both databases of 2 platforms down got no message within 240 s).",
        "", "Latency in seconds (nearest-rank percentiles):", "",
        md_table(["fault", "measured", "n", "p50", "p95", "p99", "max", "note"], rows), "",
        f"Targets (tenantry, p95 ≤ {TARGET_P95:.0f} s, p99 ≤ {TARGET_P99:.0f} s):", "",
        *[target_line(KINDS[k], by_kind[k]) for k in KINDS if by_kind[k]],
    ]
    keys = ["fault → pending", "pending → firing", "fault → firing", "firing → webhook",
            "webhook → sent (email)", "repair → database ready",
            "repair → resolved", "resolved → webhook", "webhook → sent (recovery email)"]
    brows = []
    for name in KINDS:
        ts = by_kind[name]
        cells = [name]
        for key in keys:
            got = [t.breakdown[key] for t in ts if key in t.breakdown]
            cells.append(f"{statistics.median(got):.1f} / {pct(got, 95):.1f}" if got else "-")
        if ts:
            brows.append(cells)
    body += ["", "Where the time goes (tenantry's own timestamps: Prometheus's activeAt, the "
             "alert's start and end as Prometheus sent them, the webhook's arrival in the "
             "alert history, the notification's sent_at, which the SMTP server's acceptance "
             "follows within milliseconds; median / p95 in seconds):", "",
             md_table(["fault", *keys], brows)]
    body += ["", f"Trials failed (a missing or duplicate message): {len(failed)} of "
             f"{len(trials)}."]
    if failed:
        body += ["", md_table(["trial", "messages", "what went wrong", "received; tenantry's "
                               "notifications"],
                              [[t.label, ", ".join(f"{k}: {v}" for k, v in
                                                   sorted(t.counts.items())) or "-",
                                "; ".join(t.errors),
                                "<br>".join(e.replace("|", "/") for e in t.evidence)]
                               for t in failed])]
    stray, side = strays(run)
    body += ["", f"Messages about these checks outside every trial: {len(stray)}"
             + (" (" + "; ".join(stray[:12]) + ("; …" if len(stray) > 12 else "") + ")."
                if stray else "."),
             f"The app's \"not responding\" told during a database fault of its platform (its "
             f"/health needs the database; not counted above): {side} messages in "
             f"{len(by_kind['db'])} db trials."]
    if setup_msgs:
        body += [f"While the platforms were created (before the first trial) the recipients "
                 f"got {len(setup_msgs)} messages: " + "; ".join(setup_msgs[:12]) + "."]
    text = "\n".join(body)
    return text, not failed


def summary_json(run: Run) -> dict[str, Any]:
    return {"trials": [{
        "kind": t.kind.name, "target": t.target.name, "number": t.number,
        "baseline": t.baseline, "ok": t.ok, "errors": t.errors, "counts": t.counts,
        "email": t.email, "sms": t.sms, "rec_email": t.rec_email, "rec_sms": t.rec_sms,
        "bl_fired": t.bl_fired, "bl_resolved": t.bl_resolved, "breakdown": t.breakdown,
        "evidence": t.evidence,
    } for t in run.trials]}


# ---------------------------------------------------------------- main


@contextlib.contextmanager
def terminated_as_exit() -> Iterator[None]:
    """SIGTERM (a CI timeout) unwinds like Ctrl-C, so every fault is undone and every
    process stopped."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=None, help="per fault (default 20)")
    parser.add_argument("--platforms", type=int, default=None, help="default 5 (--short: 2)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false", default=None)
    parser.add_argument("--baseline", dest="baseline", action="store_true",
                        help="with --short too")
    parser.add_argument("--baseline-trials", type=int, default=None,
                        help="hang and db trials the baseline is waited for (default: one "
                             "round: one per platform, db one fewer)")
    parser.add_argument("--baseline-agent-trials", type=int, default=2,
                        help="agent trials the baseline is waited for (serial, ~7 min each)")
    parser.add_argument("--faults", type=lambda v: set(v.split(",")), default=set(KINDS),
                        help="some of hang,db,agent (default all)")
    parser.add_argument("--short", action="store_true",
                        help="1 trial per fault, 2 platforms, no baseline, no report")
    parser.add_argument("--report", action="store_true", help="append the report with --short")
    parser.add_argument("--json", type=Path, help="write every trial's figures here")
    args = parser.parse_args()
    args.trials = args.trials or (1 if args.short else 20)
    args.platforms = args.platforms or (2 if args.short else 5)
    args.baseline = (not args.short) if args.baseline is None else args.baseline
    write_report = args.report or not args.short

    facts = machine_facts()
    others = other_tenantry_ups()
    facts["other tenantry up processes at start"] = str(len(others)) if others else "none"
    facts["working tree"] = working_tree()
    started = time.time()
    root = short_tmp("tnt-alert-")
    inbox = Inbox()
    receiver = Receiver(inbox)
    cp: ControlPlaneProcess | None = None
    baseline: Baseline | None = None
    run: Run | None = None
    watch: PendingWatch | None = None
    setup_msgs: list[str] = []
    platforms: list[Target] = []
    with terminated_as_exit(), smtp_server(mailbox=TimedMailbox(inbox=inbox)) as smtp:
        try:
            receiver.start()
            cp = ControlPlaneProcess(data_dir=root / "data", listen_port=free_port(),
                                     ingress_port=free_port(), extra_env={
                                         "TENANTRY_SMTP_URL": f"smtp://127.0.0.1:{smtp.port}",
                                         "TENANTRY_SMTP_FROM": "tenantry@provider.example",
                                         "TENANTRY_SMS_URL": f"{receiver.url}/sms",
                                         # the agent fault is a SIGSTOP that must last until
                                         # the alert is told: `up` must not end it
                                         "TENANTRY_FROZEN_AFTER": "0"})
            cp.start(timeout=180)
            print(f"tenantry up at {cp.url}, data dir {cp.data_dir}", flush=True)
            platforms = setup(cp, root, args.platforms)
            urls = local.StackUrls.load(cp.data_dir)
            assert urls is not None, "no monitoring/stack.json: is monitoring on?"
            wait_watched(urls.prometheus, platforms, 180, "tenantry's Prometheus")
            print(f"tenantry's Prometheus sees them after {time.time() - started:.0f} s",
                  flush=True)
            if args.baseline:
                baseline = Baseline(root / "baseline", receiver)
                baseline.start(cp)
                wait_watched(baseline.prometheus, platforms, 300, "the baseline's Prometheus")
            watch = PendingWatch(urls.prometheus)
            watch.start()
            run = Run(cp, inbox, baseline, watch)
            setup_msgs = [f"{a.channel} to {a.recipient}: " + ", ".join(
                f"{t.head} {t.target}: {t.what}" for t in a.told) for a in inbox.all()]
            print(f"{len(platforms)} platforms watched after {time.time() - started:.0f} s; "
                  f"{len(setup_msgs)} messages so far", flush=True)
            schedule(run, args, platforms)
        finally:
            if run is not None:
                run.undo_all()
                run.close()
            if watch is not None:
                watch.stop()
            if baseline is not None:
                baseline.stop()
            if cp is not None:
                cp.stop()
                if run is not None and any(not t.ok for t in run.trials):
                    keep = Path(tempfile.mkdtemp(prefix="alert-latency-logs-"))
                    shutil.copytree(cp.data_dir / "logs", keep, dirs_exist_ok=True)
                    for log in (cp.log, *(cp.data_dir / "monitoring" / "log").glob("*.log")):
                        with contextlib.suppress(OSError):
                            shutil.copy(log, keep)
                    print(f"logs of the failed run kept in {keep}", flush=True)
                cp.cleanup()
            receiver.stop()
            shutil.rmtree(root, ignore_errors=True)
    assert run is not None
    if args.json:
        args.json.write_text(json.dumps(summary_json(run), indent=2))
    facts["platforms"] = str(len(platforms))
    body, ok = report(run, args, started, platforms, setup_msgs)
    print("\n" + body)
    if write_report:
        append_report("Alert latency (bench/alert_latency.py)", facts, body)
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
