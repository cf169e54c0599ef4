"""Notifications pending while the SMTP server is down survive a SIGKILL of the whole of
`tenantry up`: brought back, with the SMTP server, each is delivered exactly once, and what
was delivered before (the SMS) is not sent again. The alert states catch up: the hang that
fired before the kill resolves after it, told once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, make_isv, processes_mentioning, running_plane, wait_until
from tests.monitoring.servers import http_gateway, smtp_server
from tests.monitoring.test_monitoring_live import EMAIL, PHONE, app_pids, check_value, to

pytestmark = pytest.mark.slow


def test_sigkill_while_the_smtp_server_is_down_delivers_each_once(
        bundles: dict[str, Path]) -> None:
    smtp_port = free_port()  # nothing listens here until after the restart
    with http_gateway() as sms:
        env = {"TENANTRY_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
               "TENANTRY_SMTP_FROM": "tenantry@provider.example",
               "TENANTRY_SMS_URL": f"{sms.url}/sms"}
        with running_plane(env=env) as cp:
            isv = make_isv(cp, bundles)
            made = cp.cli_json("platform", "create", isv, "--tenant", "t1", "--app",
                               "bodyshop@1.0.0", "--wait")
            name = f"{made['isv']}/{made['name']}"
            cp.cli("contact", "add", "anna", "--email", EMAIL, "--phone", PHONE, "--isv", isv)
            wait_until(lambda: check_value(cp, "responding", name) == 1, 90, "the probe")
            pids = app_pids(made["id"])
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                wait_until(lambda: [r for r in sms.requests
                                    if "not responding" in r.json()["body"]], 90,
                           "the SMS (the alert fired and the outbox runs)")

                def email_failing() -> bool:
                    alerts = cp.cli_json("alert", "list", "--platform", name, "--open")
                    return any(n["channel"] == "email" and n["status"] == "pending"
                               and n["attempts"] >= 1 and n["last_error"]
                               for a in alerts for n in a["notifications"])
                wait_until(email_failing, 60, "the email pending after a failed attempt")

                assert cp.process is not None
                os.kill(cp.process.pid, signal.SIGKILL)  # the whole of up, at once
                cp.process.wait(10)
                wait_until(lambda: not processes_mentioning(f"{cp.data_dir}/monitoring/") and
                           not [p for p in processes_mentioning(str(cp.data_dir))
                                if b"serve-" in Path(f"/proc/{p}/cmdline").read_bytes()],
                           30, "up's children gone with it")

                with smtp_server(port=smtp_port) as smtp:
                    cp.start()
                    wait_until(lambda: to(smtp, sms, "OVERLOADED", "not responding")[0], 90,
                               "the email, once the server is back")
                    for pid in pids:
                        os.kill(pid, signal.SIGCONT)
                    pids = []
                    wait_until(lambda: all(to(smtp, sms, "RESOLVED", "not responding")), 120,
                               "the recovery, told after the restart")
                    time.sleep(10)  # a duplicate would have arrived by now
                    fired_mail, fired_sms = to(smtp, sms, "OVERLOADED", "not responding")
                    resolved_mail, resolved_sms = to(smtp, sms, "RESOLVED", "not responding")
                    assert (len(fired_mail), len(fired_sms)) == (1, 1)
                    assert (len(resolved_mail), len(resolved_sms)) == (1, 1)
                    alerts = cp.cli_json("alert", "list", "--platform", name)
                    assert len([a for a in alerts if a["check"] == "responding"]) == 1
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
