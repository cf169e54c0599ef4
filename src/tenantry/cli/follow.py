"""Following a job from the CLI: its steps as a progress bar on stderr until it ends."""

from __future__ import annotations

import time
from typing import Any

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tenantry.cli.client import Client
from tenantry.cli.output import err
from tenantry.core.errors import Unavailable


def wait_for_job(client: Client, job_id: int, *, quiet: bool = False,
                 timeout: float = 900) -> dict[str, Any]:
    """Follow a job's steps with a progress bar on stderr until it ends."""
    deadline = time.monotonic() + timeout
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} steps"), TimeElapsedColumn(),
                  console=err, transient=False, disable=quiet) as progress:
        task = progress.add_task(f"job {job_id}", total=None)
        while True:
            job: dict[str, Any] = client.get(f"/jobs/{job_id}")
            steps = job["steps"]
            done = sum(1 for s in steps if s["state"] in ("done", "skipped"))
            current = next((s["name"] for s in steps if s["state"] == "running"), job["state"])
            progress.update(task, total=len(steps), completed=done,
                            description=f"job {job_id} {job['kind']}: {current}")
            if job["state"] in ("succeeded", "failed"):
                return job
            if time.monotonic() > deadline:
                raise Unavailable(f"job {job_id} still {job['state']} after {int(timeout)} s")
            time.sleep(0.3)
