"""Monitoring end to end, with every real part: `tenantry up` runs Prometheus, Alertmanager
and the blackbox prober, the agent its exporters; a real SMTP server (aiosmtpd) and a real
HTTP SMS gateway on loopback receive the notifications.

The issue's "done when": a platform's app hangs (SIGSTOP) → one email and one SMS; the alert
is in the history with its notifications; it recovers → the recovery is told; a maintenance
window then silences the next hang, and the history shows it silenced.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ControlPlaneProcess, make_isv, running_plane, wait_until
from tests.monitoring.servers import Gateway, SmtpServer, http_gateway, smtp_server

pytestmark = pytest.mark.slow

EMAIL, PHONE = "anna@bms.example", "+41790000001"


def app_pids(platform_id: str) -> list[int]:
    """The platform's application processes: run by its own Unix user."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            continue
        if user.startswith("tp-") and platform_id in user and b"bodyshop.server" in cmd:
            found.append(int(pid))
    return found


def hang(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)


def resume(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGCONT)


def to(mailbox: SmtpServer, gateway: Gateway, *words: str) -> tuple[list[str], list[str]]:
    """The emails and SMS to the ISV's contact that say all of `words`."""
    mails = [m.content.decode(errors="replace") for m in mailbox.mailbox.messages
             if EMAIL in m.rcpt_tos]
    texts = [r.json()["body"] for r in gateway.requests if r.json()["to"] == PHONE]
    return ([m for m in mails if all(w in m for w in words)],
            [t for t in texts if all(w in t for w in words)])


def prometheus(cp: ControlPlaneProcess) -> str:
    import json

    return str(json.loads((cp.data_dir / "monitoring" / "stack.json").read_text())["prometheus"])


def check_value(cp: ControlPlaneProcess, check: str, platform: str) -> float | None:
    try:
        r = httpx.get(f"{prometheus(cp)}/api/v1/query", timeout=5, params={
            "query": f'tenantry:check_value{{check="{check}", platform="{platform}"}}'})
        result = r.json()["data"]["result"]
    except (httpx.HTTPError, KeyError, ValueError):
        return None  # Prometheus restarting

    return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def live(bundles: dict[str, Path]) -> Iterator[tuple[ControlPlaneProcess, SmtpServer,
                                                      Gateway, dict[str, Any]]]:
    with smtp_server() as smtp, http_gateway() as sms:
        env = {"TENANTRY_SMTP_URL": f"smtp://127.0.0.1:{smtp.port}",
               "TENANTRY_SMTP_FROM": "tenantry@provider.example",
               "TENANTRY_SMS_URL": f"{sms.url}/sms"}
        with running_plane(env=env) as cp:
            isv = make_isv(cp, bundles)
            made = cp.cli_json("platform", "create", isv, "--tenant", "t1", "--app",
                               "bodyshop@1.0.0", "--wait")
            cp.cli("contact", "add", "anna", "--email", EMAIL, "--phone", PHONE,
                   "--isv", isv)
            yield cp, smtp, sms, made


def test_a_hung_app_is_told_once_by_email_and_sms(live: Any) -> None:
    cp, smtp, sms, platform = live
    name = f"{platform['isv']}/{platform['name']}"
    wait_until(lambda: check_value(cp, "responding", name) == 1, 90,
               "Prometheus probing the new platform through the ingress")
    pids = app_pids(platform["id"])
    assert pids, "the platform's app processes"
    hang(pids)
    try:
        wait_until(lambda: all(to(smtp, sms, "OVERLOADED", "not responding")), 90,
                   "an email and an SMS saying the instance is not responding")
        time.sleep(8)  # anything more would have arrived by now (5 s evaluations)
        mails, texts = to(smtp, sms, "OVERLOADED", "not responding")
        assert len(mails) == 1 and len(texts) == 1, (mails, texts)
        assert name in mails[0] and name in texts[0]
    finally:
        resume(pids)
    wait_until(lambda: all(to(smtp, sms, "RESOLVED", "not responding")), 90,
               "the recovery, by email and SMS")
    alerts = cp.cli_json("alert", "list", "--platform", name)
    # nothing else fired on the platform (its creation, say, raised no database alert)
    assert {a["check"] for a in alerts} == {"responding"}, alerts
    mine = [a for a in alerts if a["check"] == "responding"]
    assert len(mine) == 1 and mine[0]["ended_at"] is not None
    shown = cp.cli_json("alert", "show", str(mine[0]["id"]))
    sent = {(n["channel"], n["recipient"], n["state"]) for n in shown["notifications"]
            if n["status"] == "sent"}
    assert {("email", EMAIL, "firing"), ("sms", PHONE, "firing"), ("email", EMAIL, "resolved"),
            ("sms", PHONE, "resolved")} <= sent
    assert all(n["sent_at"] for n in shown["notifications"] if n["status"] == "sent")
    assert [c["state"] for c in shown["changes"]][:2] == ["firing", "resolved"]


def test_the_database_checks_read_the_real_cluster(live: Any) -> None:
    """Status, WAL space, memory and checkpoint duration of the platform's own cluster,
    through the real exporters, the agent and Prometheus's recording rules."""
    cp, _, _, platform = live
    name = f"{platform['isv']}/{platform['name']}"
    wait_until(lambda: None not in [check_value(cp, c, name)
                                    for c in ("db_recovery", "wal_space", "db_memory")],
               90, "the database checks' values")
    assert check_value(cp, "db_recovery", name) == 0, "a primary"
    wal = check_value(cp, "wal_space", name)
    assert wal is not None and wal > 5, "this machine has gigabytes free: many max_wal_size"
    memory = check_value(cp, "db_memory", name)
    assert memory is not None and 1 < memory < 85, "an idle size-s cluster, within budget"
    # a backup starts with an immediate checkpoint: the check then has one to average
    cp.cli_json("backup", "run", name, "--type", "incr", "--wait")
    wait_until(lambda: check_value(cp, "checkpoint", name) is not None, 60,
               "the checkpoint's duration")
    took = check_value(cp, "checkpoint", name)
    assert took is not None and 0 <= took < 95, took
    assert not [a for a in cp.cli_json("alert", "list", "--platform", name, "--open")
                if a["check"] in ("db_recovery", "wal_space", "db_memory", "checkpoint")]


def test_a_maintenance_window_silences_the_next_hang(live: Any) -> None:
    cp, smtp, sms, platform = live
    name = f"{platform['isv']}/{platform['name']}"
    now = dt.datetime.now(dt.UTC)
    window = cp.cli_json("maintenance", "create", "--platform", name,
                         "--from", now.isoformat(), "--to",
                         (now + dt.timedelta(hours=1)).isoformat(),
                         "--message", "database upgrade")
    wait_until(lambda: any(EMAIL in m.rcpt_tos and b"MAINTENANCE" in m.content
                           for m in smtp.mailbox.messages), 60, "the announcement")
    wait_until(lambda: cp.cli_json("maintenance", "list")[0]["silence_id"], 30,
               "the Alertmanager silence")
    before = len(to(smtp, sms, "OVERLOADED", "not responding")[0])
    wait_until(lambda: check_value(cp, "responding", name) == 1, 60, "the platform answering")
    pids = app_pids(platform["id"])
    hang(pids)
    try:
        def silenced() -> bool:
            return any(a["silenced_by"] == window["id"]
                       for a in cp.cli_json("alert", "list", "--platform", name, "--open"))
        wait_until(silenced, 90, "the silenced alert in the history")
        time.sleep(5)
        assert len(to(smtp, sms, "OVERLOADED", "not responding")[0]) == before
    finally:
        resume(pids)


def test_bad_input_is_refused_by_field_and_changes_nothing(live: Any) -> None:
    cp, *_ = live
    cases = [
        (("threshold", "set", "cpu", "--busy", "abc", "--overloaded", "90", "--host", "local"),
         "busy"),
        (("threshold", "set", "cpu", "--busy", "95", "--overloaded", "90", "--host", "local"),
         "busy"),
        (("threshold", "set", "nope", "--overloaded", "90", "--host", "local"), "check"),
        (("threshold", "set", "cpu", "--busy", "80", "--overloaded", "90", "--host", "mars"),
         "host"),
        (("contact", "add", "x", "--email", "not-an-address"), "email"),
        (("contact", "add", "x", "--phone", "0791234567"), "phone"),
        (("maintenance", "create", "--host", "local", "--from", "2030-01-02T00:00:00Z",
          "--to", "2030-01-01T00:00:00Z", "--message", "backwards"), "to"),
    ]
    before = (cp.cli_json("threshold", "list"), cp.cli_json("contact", "list"),
              cp.cli_json("maintenance", "list"))
    for args, field in cases:
        done = cp.cli(*args, check=False)
        assert done.returncode != 0, args
        assert field in done.stderr + done.stdout, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert (cp.cli_json("threshold", "list"), cp.cli_json("contact", "list"),
            cp.cli_json("maintenance", "list")) == before


def test_the_stack_endpoints_want_their_own_tokens(live: Any) -> None:
    cp, *_ = live
    secrets = cp.data_dir / "monitoring" / "secrets"
    assert (secrets / "sd-token").stat().st_mode & 0o077 == 0
    sd_token = (secrets / "sd-token").read_text().strip()
    hook_token = (secrets / "webhook-token").read_text().strip()
    body = {"version": "4", "groupKey": "g", "status": "firing", "receiver": "tenantry",
            "groupLabels": {}, "alerts": []}
    with httpx.Client(base_url=f"{cp.url}/api/v1", timeout=10) as http:
        assert http.get("/monitoring/sd/node").status_code == 401
        assert http.get("/monitoring/sd/node", headers={
            "Authorization": f"Bearer {hook_token}"}).status_code == 401  # not its token
        assert http.get("/monitoring/sd/node", headers={
            "Authorization": f"Bearer {cp.token}"}).status_code == 401  # nor a person's
        assert http.get("/monitoring/sd/node", headers={
            "Authorization": f"Bearer {sd_token}"}).status_code == 200
        assert http.post("/monitoring/alertmanager", json=body).status_code == 401
        assert http.post("/monitoring/alertmanager", json=body, headers={
            "Authorization": f"Bearer {sd_token}"}).status_code == 401
        bad = http.post("/monitoring/alertmanager", json={**body, "alerts": "x"}, headers={
            "Authorization": f"Bearer {hook_token}"})
        assert bad.status_code == 422 and "alerts" in bad.text


def test_prometheus_and_alertmanager_killed_are_restarted_and_tell_nothing_twice(
        live: Any) -> None:
    from tests.conftest import processes_mentioning

    cp, smtp, sms, first = live
    # a platform of its own: the first one's hangs moments ago would make this one flapping
    platform = cp.cli_json("platform", "create", first["isv"], "--tenant", "t2", "--app",
                           "bodyshop@1.0.0", "--wait")
    name = f"{platform['isv']}/{platform['name']}"
    wait_until(lambda: check_value(cp, "responding", name) == 1, 90, "the probe")
    fired_before = len(to(smtp, sms, "OVERLOADED", "not responding")[0])
    resolved_before = len(to(smtp, sms, "RESOLVED", "not responding")[0])
    pids = app_pids(platform["id"])
    hang(pids)
    try:
        try:
            wait_until(lambda: len(to(smtp, sms, "OVERLOADED", "not responding")[0])
                       > fired_before, 90, "the email of the new hang")
        except AssertionError:
            import json
            am = json.loads((cp.data_dir / "monitoring" / "stack.json").read_text())
            print("ALERTS", cp.cli_json("alert", "list", "--platform", name))
            print("AM", httpx.get(am["alertmanager"] + "/api/v2/alerts").text)
            print("AMS", httpx.get(am["alertmanager"] + "/api/v2/silences").text)
            print("MAIL", [m.content[-400:] for m in smtp.mailbox.messages])
            raise
        for config in ("prometheus.yml", "alertmanager.yml"):
            for pid in processes_mentioning(f"{cp.data_dir}/monitoring/{config}"):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: check_value(cp, "responding", name) == 0, 90,
                   "Prometheus back (restarted by up), seeing the hang")
        time.sleep(20)  # Prometheus raises the alert anew; Alertmanager sends it anew
    finally:
        resume(pids)
    wait_until(lambda: len(to(smtp, sms, "RESOLVED", "not responding")[0]) > resolved_before, 120,
               "the recovery")
    time.sleep(8)
    assert len(to(smtp, sms, "OVERLOADED", "not responding")[0]) == fired_before + 1
    assert len(to(smtp, sms, "RESOLVED", "not responding")[0]) == resolved_before + 1
    assert "prometheus exited; restarting it" in cp.log.read_text().replace("mon-", "")
