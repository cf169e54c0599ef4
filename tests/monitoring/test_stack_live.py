"""The real stack end to end: HTTP SD → Prometheus rules → Alertmanager → webhook.

A small HTTP server in the test plays the control plane: it serves the SD documents (listing
a real node_exporter and its own /metrics, whose value the test sets), and receives the
webhook. The test checks the bearer tokens both ways, hysteresis (below busy but above clear
keeps the alert firing), resolution below the clear threshold, a rule change picked up by
a reload without restart, and the agent's prober (agent/prober.py) asking an HTTPS site by
address under its name (SNI and Host, its certificate pinned), its results served on the
fake agent's /metrics, which alerts when the site stops. It prints the fault-to-webhook
latencies.
"""

from __future__ import annotations

import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tenantry.agent.metrics import render
from tenantry.agent.prober import Prober, ProbeTarget
from tenantry.core.errors import Unavailable
from tenantry.monitoring import rules, stack
from tenantry.monitoring.catalog import Check, Scope, TargetKind, ThresholdOverride, catalog
from tenantry.monitoring.prometheus import (
    AlertmanagerInputs,
    PrometheusInputs,
    SdDocument,
    SdGroup,
    render_alertmanager,
    render_blackbox,
    render_prometheus,
)
from tenantry.monitoring.webhook import WebhookPayload
from tests.monitoring.conftest import free_port

pytestmark = pytest.mark.slow

SD_TOKEN = "sd-token-for-test"  # noqa: S105 - a test value
HOOK_TOKEN = "hook-token-for-test"  # noqa: S105 - a test value
SITE = "p1.acme.localhost"
LOAD = Check("test_load", TargetKind.HOST, 'tenantry_test_load{job="agent"}', True,
             busy=50, overloaded=80, clear=20, hold=0, unit="%", summary="test load")


class FakeControlPlane:
    """SD endpoints, a /metrics with one settable gauge, and the webhook receiver."""

    def __init__(self, node_port: int, prober: Prober | None = None) -> None:
        self.value = 10.0
        self.prober = prober
        self.hooks: list[tuple[float, str, WebhookPayload]] = []
        self.sd_auth: set[str] = set()
        self.lock = threading.Lock()
        outer = self
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(outer))
        self.port = self.server.server_address[1]
        self.sd = {
            "node": SdDocument([SdGroup(targets=[f"127.0.0.1:{node_port}"],
                                        labels={"kind": "host", "host": "h1"})]),
            "agent": SdDocument([SdGroup(targets=[f"127.0.0.1:{self.port}"],
                                         labels={"kind": "host", "host": "h1"})]),
        }
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set(self, value: float) -> float:
        with self.lock:
            self.value = value
        return time.monotonic()

    def wait_hook(self, status: str, level: str, *, after: float, timeout: float = 60,
                  scope: str | None = None, check: str = LOAD.name,
                  ) -> tuple[float, dict[str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for at, auth, payload in self.hooks:
                    for alert in payload.alerts:
                        lab = alert.labels
                        if (at >= after and alert.status == status and lab["check"] == check
                                and lab["level"] == level
                                and (scope is None or lab["scope"] == scope)):
                            assert auth == f"Bearer {HOOK_TOKEN}"
                            return at, lab
            time.sleep(0.1)
        raise AssertionError(f"no {status} {level} webhook within {timeout} s: {self.hooks}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(cp: FakeControlPlane) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/metrics":
                with cp.lock:
                    text = f"tenantry_test_load {cp.value}\n"
                if cp.prober is not None:  # as AgentMetrics serves it
                    cp.prober.scraped()
                    text += render(cp.prober.families())
                body = text.encode()
                self._send(200, body, "text/plain; version=0.0.4")
                return
            prefix = "/api/v1/monitoring/sd/"
            if self.path.startswith(prefix):
                cp.sd_auth.add(self.headers.get("Authorization", ""))
                if self.headers.get("Authorization") != f"Bearer {SD_TOKEN}":
                    self._send(401, b"{}")
                    return
                doc = cp.sd.get(self.path[len(prefix):], SdDocument([]))
                self._send(200, doc.model_dump_json().encode())
                return
            self._send(404, b"{}")

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/webhook":
                payload = WebhookPayload.model_validate_json(body)
                with cp.lock:
                    cp.hooks.append((time.monotonic(), self.headers.get("Authorization", ""),
                                     payload))
                self._send(200, b"{}")
                return
            self._send(404, b"{}")

    return Handler


class Site:
    """An HTTPS site serving only the name SITE, with a self-signed certificate (its own CA)."""

    def __init__(self, root: Path) -> None:
        self.cert, key = root / "site.pem", root / "site.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-keyout", str(key), "-out", str(self.cert), "-subj", f"/CN={SITE}",
                        "-addext", f"subjectAltName=DNS:{SITE}"], check=True,
                       capture_output=True)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, key)

        class Ok(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                ok = self.headers.get("Host") == SITE
                self.send_response(200 if ok else 421)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> float:
        self.server.shutdown()
        self.server.server_close()
        return time.monotonic()


def _query(prom: str, promql: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": promql}, timeout=5)
    r.raise_for_status()
    result: list[dict[str, Any]] = r.json()["data"]["result"]
    return result


def _wait(pred: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_threshold_to_webhook_with_hysteresis_and_reload(root: Path, launch: Any) -> None:
    ports = stack.StackPorts(free_port(), free_port(), free_port(), free_port(), free_port())
    layout = stack.StackLayout(root)
    layout.prepare()
    site = Site(root)
    cert = x509.load_pem_x509_certificate(site.cert.read_bytes())
    prober = Prober()
    prober.use(("127.0.0.1", site.port), [ProbeTarget(
        platform_id="p1", isv="acme", platform="acme/p1", hostname=SITE, path="/health",
        cert_der=cert.public_bytes(Encoding.DER),
        not_after=cert.not_valid_after_utc.timestamp())])
    cp = FakeControlPlane(ports.node_exporter, prober)
    try:
        _run(cp, site, layout, ports, launch)
    finally:
        cp.close()
        prober.close()
        site.stop()


def _run(cp: FakeControlPlane, site: Site, layout: stack.StackLayout, ports: stack.StackPorts,
         launch: Any) -> None:
    checks = catalog(extra=(LOAD,))
    rule_file = layout.rules_dir / "checks.yml"
    stack.write_if_changed(layout.sd_token_file, SD_TOKEN, mode=0o600)
    stack.write_if_changed(layout.webhook_token_file, HOOK_TOKEN, mode=0o600)
    stack.write_if_changed(rule_file, rules.render(checks))
    stack.write_if_changed(layout.prometheus_yml, render_prometheus(PrometheusInputs(
        alertmanager=f"127.0.0.1:{ports.alertmanager}",
        control_plane=f"http://127.0.0.1:{cp.port}",
        token_file=str(layout.sd_token_file),
        blackbox=f"127.0.0.1:{ports.blackbox_exporter}",
        rule_files=(str(layout.rules_dir / "*.yml"),))))
    stack.write_if_changed(layout.alertmanager_yml, render_alertmanager(AlertmanagerInputs(
        webhook_url=f"http://127.0.0.1:{cp.port}/webhook",
        token_file=str(layout.webhook_token_file))))
    stack.write_if_changed(layout.blackbox_yml, render_blackbox())

    procs = {spec.name: launch(spec) for spec in stack.programs(layout, ports)}
    prom = f"http://127.0.0.1:{ports.prometheus}"
    stack.wait_ready(prom)
    stack.wait_ready(f"http://127.0.0.1:{ports.alertmanager}")
    _wait(lambda: len(_query(prom, 'up{job=~"agent|node"} == 1')) == 2, "both targets up")
    _wait(lambda: bool(_query(prom, 'tenantry:check_value{check="test_load"}')),
          "the test value recorded")
    assert cp.sd_auth == {f"Bearer {SD_TOKEN}"}
    _wait(lambda: [r["value"][1] for r in _query(prom, 'tenantry:check_value{check="responding",'
                                                       ' platform="acme/p1"}')] == ["1"],
          "the platform probed through its address, by name, its certificate pinned")

    # Busy: the value crosses 50.
    t_fault = cp.set(60)
    t_fire, labels = cp.wait_hook("firing", "busy", after=t_fault)
    assert labels["host"] == "h1" and labels["kind"] == "host" and labels["scope"] == "default"
    fire_latency = t_fire - t_fault

    # Below busy (50) but above clear (20): still firing, three evaluations later.
    t_dip = cp.set(40)
    time.sleep(16)
    assert _query(prom, 'ALERTS{alertname="test_load_busy", alertstate="firing"}')
    with pytest.raises(AssertionError):
        cp.wait_hook("resolved", "busy", after=t_dip, timeout=0.5)

    # Below clear: resolved.
    t_repair = cp.set(10)
    t_resolved, _ = cp.wait_hook("resolved", "busy", after=t_repair)
    resolve_latency = t_resolved - t_repair

    # A host override (busy at 5) in a changed rule file, picked up by a reload.
    pid = procs["mon-prometheus"].pid
    override = ThresholdOverride(check=LOAD.name, scope=Scope.HOST, target="h1",
                                 busy=5, overloaded=80, clear=2)
    assert stack.write_if_changed(rule_file, rules.render(checks, [override]))
    t_reload = time.monotonic()
    stack.reload(prom)
    # A generous wait: once, on a machine loaded by two other test runs, this took over 60 s.
    cp.wait_hook("firing", "busy", after=t_reload, scope="host:h1", timeout=150)
    assert procs["mon-prometheus"].pid == pid and procs["mon-prometheus"].poll() is None

    # A broken rule file is refused by the reload, and the running rules stay in force.
    rule_file.write_text("groups: [{name: x, rules: [{alert: a, expr: 'up >'}]}]\n")
    with pytest.raises(Unavailable):
        stack.reload(prom)
    assert stack.ready(prom) and _query(prom, 'ALERTS{alertname="test_load_busy"}')

    # The site stops answering: "instance not responding" (5 s hold).
    t_down = site.stop()
    t_hook, labels = cp.wait_hook("firing", "overloaded", after=t_down, check="responding")
    assert labels["platform"] == "acme/p1" and labels["isv"] == "acme"
    down_latency = t_hook - t_down

    print(f"\nthreshold crossed -> webhook {fire_latency:.1f} s; below clear -> resolved "
          f"{resolve_latency:.1f} s; site down -> webhook {down_latency:.1f} s")
    assert fire_latency < 15 and resolve_latency < 15 and down_latency < 20


def test_a_silent_host_inhibits_its_platforms(root: Path, launch: Any) -> None:
    """The real Alertmanager with the rendered config: a host's heartbeat alert holds back
    the alerts of platforms on that host, not those of other hosts."""
    ports = stack.StackPorts(free_port(), free_port(), free_port(), free_port(), free_port())
    layout = stack.StackLayout(root)
    layout.prepare()
    cp = FakeControlPlane(0)
    try:
        stack.write_if_changed(layout.webhook_token_file, HOOK_TOKEN, mode=0o600)
        stack.write_if_changed(layout.alertmanager_yml, render_alertmanager(AlertmanagerInputs(
            webhook_url=f"http://127.0.0.1:{cp.port}/webhook",
            token_file=str(layout.webhook_token_file))))
        am_spec = next(s for s in stack.programs(layout, ports) if "alertmanager" in s.name)
        launch(am_spec)
        am = f"http://127.0.0.1:{ports.alertmanager}"
        stack.wait_ready(am)

        def alert(check: str, **labels: str) -> dict[str, Any]:
            return {"labels": {"alertname": f"{check}_overloaded", "check": check,
                               "level": "overloaded", "scope": "default", **labels}}

        t0 = time.monotonic()
        httpx.post(f"{am}/api/v2/alerts", timeout=5, json=[
            alert("heartbeat", kind="host", host="hx", job="node"),
            alert("responding", kind="platform", host="hx", isv="acme", platform="acme/p1"),
            alert("responding", kind="platform", host="hy", isv="acme", platform="acme/p2"),
        ]).raise_for_status()
        cp.wait_hook("firing", "overloaded", after=t0, check="heartbeat")
        _, labels = cp.wait_hook("firing", "overloaded", after=t0, check="responding")
        assert labels["host"] == "hy"
        states = {a["labels"].get("platform", a["labels"]["check"]): a["status"]
                  for a in httpx.get(f"{am}/api/v2/alerts", timeout=5).json()}
        assert states["acme/p1"]["state"] == "suppressed" and states["acme/p1"]["inhibitedBy"]
        assert states["acme/p2"]["state"] == "active"
        time.sleep(6)  # one more group interval: still nothing about hx's platform
        with cp.lock:
            sent = [a.labels for _, _, p in cp.hooks for a in p.alerts]
        assert not [x for x in sent if x.get("platform") == "acme/p1"]
    finally:
        cp.close()
