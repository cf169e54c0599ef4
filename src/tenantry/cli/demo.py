"""`tenantry up --demo`: ISV bms with bodyshop 1.0.0 and one platform each for lbh and dlg.

The demo is a client of the API like any other. `up` runs it once the local agent is
online; each step is named, so a failure says which step failed and why, and `up` keeps
running for the user to look at the portal and the logs.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from tenantry.cli.client import Client
from tenantry.cli.follow import wait_for_job
from tenantry.core.errors import Conflict, TenantryError, Unavailable
from tenantry.platforms.cli import pack

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "bodyshop"
ISV, APP, VERSION, TENANTS = "bms", "bodyshop", "1.0.0", ("lbh", "dlg")


class DemoFailed(Unavailable):
    """A step of the demo failed; the message names the step."""


def build_example(version: str, out: Path) -> Path:
    """Assemble the bodyshop bundle directory for a version with its own build script."""
    if not (EXAMPLE / "build.py").exists():
        raise Unavailable(f"the bodyshop example is not at {EXAMPLE} (run from a checkout)")
    target = out / f"bodyshop-{version}"
    done = subprocess.run([sys.executable, str(EXAMPLE / "build.py"), version, str(target)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise Unavailable(f"building the bodyshop example failed: {done.stderr.strip()[-300:]}")
    return target


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """A named step: its failure is reported as that step's."""
    try:
        yield
    except TenantryError as exc:
        raise DemoFailed(f"step {name!r}: {exc.message}", field=exc.field) from exc


def run_demo(client: Client, stopping: threading.Event,
             say: Callable[[str], None]) -> None:
    """Create the demo's ISV, release, tenants and platforms, and wait for them to serve."""
    with step(f"look for ISV {ISV}"):
        exists = any(i["name"] == ISV for i in client.get("/isvs"))
    if exists:
        say(f"demo: ISV {ISV} exists already; leaving it as it is")
        return
    say(f"demo: creating ISV {ISV}, app {APP} {VERSION}, tenants {' and '.join(TENANTS)} ...")
    with step(f"create ISV {ISV}"), contextlib.suppress(Conflict):
        client.post("/isvs", {"name": ISV})
    with step(f"release {APP} {VERSION}"), tempfile.TemporaryDirectory() as tmp:
        bundle = build_example(VERSION, Path(tmp))
        client.request("POST", f"/isvs/{ISV}/releases",
                       files={"bundle": ("bundle.tar.gz", pack(bundle), "application/gzip")})
    with step(f"add contact ops of {ISV}"), contextlib.suppress(Conflict):
        # The ISV's on-call: alerts of its platforms are queued for it (and sent once
        # TENANTRY_SMTP_URL / TENANTRY_SMS_URL point at a mail server and SMS gateway).
        client.post("/contacts", {"name": "ops", "isv": ISV, "email": f"ops@{ISV}.example",
                                  "phone": "+15550100100"})
    jobs = []
    for tenant in TENANTS:
        with step(f"create tenant {tenant}"), contextlib.suppress(Conflict):
            client.post(f"/isvs/{ISV}/tenants", {"name": tenant})
        with step(f"create platform {tenant}"):
            result = client.post(f"/isvs/{ISV}/platforms",
                                 {"tenants": [tenant], "app": f"{APP}@{VERSION}"})
        jobs.append((tenant, result["platform"]["url"], result["job_id"]))
    failed = []
    for tenant, url, job_id in jobs:
        if stopping.is_set():
            return
        with step(f"wait for platform {tenant}"):
            job = wait_for_job(client, job_id, quiet=True)
        if job["state"] == "succeeded":
            say(f"demo: {url} ready")
        else:
            say(f"demo: {url} failed: {job['error']} (see `tenantry job show {job_id}`)")
            failed.append(tenant)
    if failed:
        raise DemoFailed(f"step 'wait for platform {failed[0]}': its job failed (above)")
