"""`tenantry up --demo` as a newcomer runs it, and its start-up order under slow parts.

The README's first command is run exactly (the installed `tenantry` script, `up --demo`, an
empty data dir; only the data dir and free ports come from the environment). The order
tests make one part slow on purpose (`TENANTRY_TEST_DELAYS`): the demo must still come up,
because `up` waits on conditions, not on the usual timing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    ControlPlaneProcess,
    PortalAccount,
    curl_health,
    free_port,
    left_running,
    portal_login,
    short_tmp,
    wait_until,
)

pytestmark = pytest.mark.slow

TENANTRY_SCRIPT = Path(sys.executable).parent / "tenantry"
DEMO_PLATFORMS = ("lbh", "dlg")


@pytest.fixture
def fresh() -> Iterator[ControlPlaneProcess]:
    """An empty data dir and free ports; whatever runs of it is stopped afterwards."""
    root = short_tmp("tnt-new-")
    cp = ControlPlaneProcess(data_dir=root / "data", listen_port=free_port(),
                             ingress_port=free_port())
    try:
        yield cp
    finally:
        cp.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def readme_up(cp: ControlPlaneProcess, **env: str) -> None:
    """`tenantry up --demo`, the README's first command, in the background."""
    settings = {"TENANTRY_LISTEN": f"127.0.0.1:{cp.listen_port}",
                "TENANTRY_INGRESS_PORT": str(cp.ingress_port),
                "TENANTRY_PORT_RANGE": "{}-{}".format(*cp.port_range)}
    with cp.log.open("ab") as out:
        cp.process = subprocess.Popen([str(TENANTRY_SCRIPT), "up", "--demo"], stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env={**cp.env, **settings, **env},
                                      start_new_session=True)


def wait_demo_serving(cp: ControlPlaneProcess, timeout: float = 240) -> float:
    def serving() -> bool:
        assert cp.process is not None
        if cp.process.poll() is not None:
            raise AssertionError(f"tenantry up exited {cp.process.returncode}:\n"
                                 f"{cp.log.read_text()[-3000:]}")
        log = cp.log.read_text()
        if "the demo failed" in log:
            raise AssertionError(log[-3000:])
        reported = all(f"demo: https://{t}.bms.localhost:{cp.ingress_port}/ ready" in log
                       or "exists already" in log for t in DEMO_PLATFORMS)
        return reported and all(curl_health(cp, f"{t}.bms.localhost") for t in DEMO_PLATFORMS)

    try:
        return wait_until(serving, timeout, "both demo platforms to be ready and serve over HTTPS",
                      every=0.5)
    except AssertionError:
        print(cp.log.read_text()[-3000:])
        raise


def interrupt(cp: ControlPlaneProcess, *, group: bool = True,
              signum: signal.Signals = signal.SIGINT) -> None:
    """Ctrl-C: everything stops, in order, and nothing of the data dir is left running, nor
    starts 3 s later. A terminal sends SIGINT to `up`'s whole process group, so the API, the
    worker and the agent get it at the moment `up` does (`group=False`: `kill -INT` of `up`
    alone, which then stops them in order); nothing may be started again meanwhile. A closed
    terminal sends SIGHUP instead, and a service manager SIGTERM: the same clean stop."""
    assert cp.process is not None
    before = len(cp.log.read_text())
    if group:
        os.killpg(cp.process.pid, signum)
    else:
        cp.process.send_signal(signum)
    assert cp.process.wait(120) == 0, cp.log.read_text()[-3000:]
    assert left_running(cp.data_dir) == []
    stop_log = cp.log.read_text()[before:]
    assert "restarting it" not in stop_log, stop_log
    # the stop says how long it took, and where the time went
    assert re.search(r"tenantry: stopped in [0-9.]+ s \(worker [0-9.]+ s, api [0-9.]+ s, "
                     r"the agent and its services [0-9.]+ s, .*the last sweep [0-9.]+ s\)",
                     stop_log), stop_log
    time.sleep(3)
    assert left_running(cp.data_dir) == []


def test_first_command_from_an_empty_data_dir(fresh: ControlPlaneProcess) -> None:
    cp = fresh
    assert not cp.data_dir.exists()
    readme_up(cp)
    took = wait_demo_serving(cp)
    print(f"both demo platforms served over HTTPS {took:.1f} s after `tenantry up --demo`")
    log = cp.log.read_text()
    assert "waiting for the local agent" in log and "local agent online" in log
    assert "failed" not in log

    # The portal: admin, with the password from the data dir (the first login sets a new
    # one and a second factor), sees both demo platforms.
    account = PortalAccount("admin", (cp.data_dir / "admin-password").read_text().strip())
    with httpx.Client(base_url=cp.url, timeout=30) as client:
        assert portal_login(client, account).status_code == 303
        page = client.get("/", params={"isv": "bms"})
        assert page.status_code == 200
        assert all(f"{t}.bms.localhost" in page.text for t in DEMO_PLATFORMS)
        # and the NOC console, where the demo's platforms are watched
        wait_until(lambda: all(f"bms/{t}" in client.get("/monitoring").text
                               for t in DEMO_PLATFORMS), 60, "the platforms in the console")
    for secret in ("admin-password", "admin-token"):
        assert (cp.data_dir / secret).stat().st_mode & 0o777 == 0o600
    assert [c["name"] for c in cp.cli_json("contact", "list")] == ["ops"]

    interrupt(cp)  # checks that nothing of the data dir is left: the monitoring stack too

    # Again, on the same data dir: the demo sees its ISV and leaves it alone, and every
    # platform comes back.
    readme_up(cp)
    wait_demo_serving(cp)  # the platforms may serve again before the demo has looked
    wait_until(lambda: "ISV bms exists already" in cp.log.read_text(), 60,
               "the demo to find its ISV")
    assert len(cp.cli_json("platform", "list", "--isv", "bms")) == 2
    interrupt(cp, group=False)


def test_demo_waits_for_a_slow_agent(fresh: ControlPlaneProcess) -> None:
    """The race of the last round: the agent enrolls long after the API answers. The shell
    also points the CLI at another control plane (TENANTRY_URL): `up` talks to its own."""
    readme_up(fresh, TENANTRY_TEST_DELAYS="agent.enroll=8",
              TENANTRY_URL="http://127.0.0.1:9", TENANTRY_TOKEN="elsewhere")  # noqa: S106
    wait_demo_serving(fresh)
    log = fresh.log.read_text()
    online = log.split("local agent online after ", 1)[1].split(" ", 1)[0]
    assert float(online) >= 8, log
    assert "failed" not in log
    interrupt(fresh)


def test_demo_waits_for_a_slow_api_and_worker(fresh: ControlPlaneProcess) -> None:
    readme_up(fresh, TENANTRY_TEST_DELAYS="api.start=5,worker.start=12")
    wait_demo_serving(fresh)
    assert "failed" not in fresh.log.read_text()
    interrupt(fresh, signum=signal.SIGHUP)  # the terminal `up` ran in was closed


def test_a_part_that_never_comes_up_is_named_and_up_keeps_running(
        fresh: ControlPlaneProcess) -> None:
    """The agent never enrolls: `up` says which part and where its log is, keeps the API and
    portal running, and still stops cleanly on Ctrl-C."""
    # 20 s: long enough for the API and worker to start on a busy machine, far short of the
    # agent's 600 s delay.
    readme_up(fresh, TENANTRY_TEST_DELAYS="agent.enroll=600", TENANTRY_STARTUP_TIMEOUT="20")
    agent_log = fresh.data_dir / "logs" / "agent.log"
    wait_until(lambda: "not started" in fresh.log.read_text(), 90, "up to give up on the agent")
    log = fresh.log.read_text()
    assert f"the local agent did not come up within 20 s; see {agent_log}" in log
    assert "the demo not started" in log
    time.sleep(1)
    assert fresh.process is not None and fresh.process.poll() is None
    assert httpx.get(f"{fresh.url}/api/v1/health").status_code == 200
    assert fresh.api().get("/isvs").json() == []  # the demo did nothing half-way
    interrupt(fresh)
