"""`tenantry up --demo`: ISV bms with bodyshop 1.0.0 and one platform each for lbh and dlg."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

from tenantry.cli.client import Client
from tenantry.cli.main import pack, wait_for_job
from tenantry.cli.output import err
from tenantry.core.config import Settings
from tenantry.core.errors import Conflict, Unavailable

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "bodyshop"


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


def run_demo(settings: Settings, stopping: threading.Event) -> None:
    client = Client.from_env(settings.data_dir)
    if client.get("/platforms", isv="bms") if _isv_exists(client) else []:
        err.print("demo: ISV bms exists already; leaving it as it is")
        return
    err.print("demo: creating ISV bms, app bodyshop 1.0.0, tenants lbh and dlg ...")
    _ignore_conflict(lambda: client.post("/isvs", {"name": "bms"}))
    with tempfile.TemporaryDirectory() as tmp:
        bundle = build_example("1.0.0", Path(tmp))
        client.request("POST", "/isvs/bms/releases",
                       files={"bundle": ("bundle.tar.gz", pack(bundle), "application/gzip")})
    jobs = []
    for tenant in ("lbh", "dlg"):
        _ignore_conflict(partial(client.post, "/isvs/bms/tenants", {"name": tenant}))
        result = client.post("/isvs/bms/platforms", {"tenants": [tenant],
                                                     "app": "bodyshop@1.0.0"})
        jobs.append((result["platform"]["url"], result["job_id"]))
    for url, job_id in jobs:
        if stopping.is_set():
            return
        job = wait_for_job(client, job_id)
        state = "ready" if job["state"] == "succeeded" else f"failed: {job['error']}"
        err.print(f"demo: {url} {state}")


def _isv_exists(client: Client) -> bool:
    return any(i["name"] == "bms" for i in client.get("/isvs"))


def _ignore_conflict(call: Callable[[], object]) -> None:
    with contextlib.suppress(Conflict):
        call()
