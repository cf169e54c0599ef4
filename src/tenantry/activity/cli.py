"""`tenantry job ...` and `tenantry events`: what tenantry did and what happened."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from tenantry.cli.options import DataDirOpt, JsonOpt, connect
from tenantry.cli.output import emit_json, handle_errors, show
from tenantry.core.errors import InvalidInput

job_app = typer.Typer(help="Jobs: the long operations and their steps.", no_args_is_help=True)
JOB_COLUMNS = ["id", "kind", "state", "platform", "created_at", "error"]


def register(root: typer.Typer) -> None:
    root.add_typer(job_app, name="job")
    root.command("events")(events)


@job_app.command("list")
@handle_errors
def job_list(platform: Annotated[str | None, typer.Option(help="ISV/NAME or id")] = None,
             state: Annotated[str | None, typer.Option()] = None,
             limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
             json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """List recent jobs."""
    show(connect(data_dir).get("/jobs", platform=platform, state=state, limit=limit), json_,
         JOB_COLUMNS)


@job_app.command("show")
@handle_errors
def job_show(job_id: int, json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Show a job and its steps."""
    if job_id < 1:
        raise InvalidInput("job id must be a positive number", field="job_id")
    job = connect(data_dir).get(f"/jobs/{job_id}")
    if json_:
        emit_json(job)
        return
    show(job, False, JOB_COLUMNS)
    show(job["steps"], False, ["name", "state", "started_at", "ended_at", "error"])


@handle_errors
def events(isv: Annotated[str | None, typer.Option()] = None,
           platform: Annotated[str | None, typer.Option(help="ISV/NAME or id")] = None,
           follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new "
                                                "events.")] = False,
           limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
           json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Show events (newest last)."""
    client = connect(data_dir)
    rows = client.get("/events", isv=isv, platform=platform, limit=limit)
    columns = ["time", "kind", "isv", "platform_id", "message"]
    if not follow:
        show(rows, json_, columns)
        return
    last = rows[-1]["id"] if rows else 0
    for row in rows:
        _print_event(row, json_)
    while True:
        for row in client.get("/events", isv=isv, platform=platform, after=last, limit=1000):
            _print_event(row, json_)
            last = row["id"]
        time.sleep(1.0)


def _print_event(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row), flush=True)
    else:
        print(f"{row['time']}  {row['kind']:<18} {row.get('isv') or '-':<10} {row['message']}",
              flush=True)
