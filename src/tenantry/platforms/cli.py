"""`tenantry isv|tenant|app|platform|job|host ...` and `tenantry events`: thin clients of the
platforms API."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tenantry.cli.client import Client
from tenantry.cli.follow import wait_for_job
from tenantry.cli.options import DataDirOpt, JsonOpt, WaitOpt, connect, seg
from tenantry.cli.output import emit_json, err, handle_errors, show
from tenantry.core.errors import InvalidInput

isv_app = typer.Typer(help="ISVs (the vendors whose apps we host).", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants (an ISV's customers).", no_args_is_help=True)
app_app = typer.Typer(help="Applications and their releases.", no_args_is_help=True)
platform_app = typer.Typer(help="Platforms: an app release with its own database, served "
                           "over HTTPS.", no_args_is_help=True)
host_app = typer.Typer(help="Hosts and their agents.", no_args_is_help=True)
job_app = typer.Typer(help="Jobs: the long operations and their steps.", no_args_is_help=True)

JOB_COLUMNS = ["id", "kind", "state", "platform", "created_at", "error"]
PLATFORM_COLUMNS = ["id", "isv", "name", "tenants", "state", "release", "region", "host", "url"]


def register(root: typer.Typer) -> None:
    for group, name in ((isv_app, "isv"), (tenant_app, "tenant"), (app_app, "app"),
                        (platform_app, "platform"), (job_app, "job"), (host_app, "host")):
        root.add_typer(group, name=name)
    root.command("events")(events)


def platform_path(ref: str) -> str:
    """The API path of a platform given as ISV/NAME or as its id."""
    if "/" in ref:
        isv, _, name = ref.partition("/")
        return f"/platforms/{seg(isv)}/{seg(name)}"
    return f"/platforms/{seg(ref)}"


# ---------------------------------------------------------------- isv, tenant

@isv_app.command("create")
@handle_errors
def isv_create(name: str, json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Create an ISV."""
    show(connect(data_dir).post("/isvs", {"name": name}), json_, ["id", "name", "created_at"])


@isv_app.command("list")
@handle_errors
def isv_list(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """List the ISVs you may see."""
    show(connect(data_dir).get("/isvs"), json_, ["id", "name", "created_at"])


@tenant_app.command("create")
@handle_errors
def tenant_create(isv: str, name: str, json_: JsonOpt = False,
                  data_dir: DataDirOpt = None) -> None:
    """Create a tenant (a customer of the ISV)."""
    show(connect(data_dir).post(f"/isvs/{seg(isv)}/tenants", {"name": name}), json_,
         ["id", "isv", "name"])


@tenant_app.command("list")
@handle_errors
def tenant_list(isv: str, json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """List an ISV's tenants."""
    show(connect(data_dir).get(f"/isvs/{seg(isv)}/tenants"), json_, ["id", "isv", "name"])


# ---------------------------------------------------------------- app

def pack(path: Path) -> bytes:
    """A directory becomes a tarball here; the server validates either the same way."""
    if not path.exists():
        raise InvalidInput(f"{path} does not exist", field="path")
    if path.is_file():
        return path.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for child in sorted(path.iterdir()):
            tar.add(child, arcname=child.name)
    return buf.getvalue()


@app_app.command("release")
@handle_errors
def app_release(isv: str, path: Annotated[Path, typer.Argument(
        help="A bundle directory or tarball with tenantry.toml at its top.")],
        json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Validate and upload an application release."""
    data = pack(path)
    err.print(f"uploading {len(data) / 1024:.0f} KiB ...")
    release = connect(data_dir).request(
        "POST", f"/isvs/{seg(isv)}/releases",
        files={"bundle": ("bundle.tar.gz", data, "application/gzip")})
    show(release, json_, ["id", "isv", "app", "version", "digest", "processes"])


@app_app.command("list")
@handle_errors
def app_list(isv: Annotated[str | None, typer.Option(help="Only this ISV.")] = None,
             app: Annotated[str | None, typer.Option(help="Only this app.")] = None,
             json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """List releases."""
    show(connect(data_dir).get("/releases", isv=isv, app=app), json_,
         ["isv", "app", "version", "digest", "created_at"])


# ---------------------------------------------------------------- platform

def _accepted(client: Client, result: dict[str, Any], wait: bool, json_: bool) -> None:
    job_id = result["job_id"]
    if not wait:
        if json_:
            emit_json(result)
        else:
            show(result["platform"], False, PLATFORM_COLUMNS)
            err.print(f"job {job_id} started; follow it with `tenantry job show {job_id}`")
        return
    job = wait_for_job(client, job_id, quiet=json_)
    platform_id = result["platform"]["id"]
    try:
        platform = client.get(f"/platforms/{seg(platform_id)}")
    except Exception:  # destroyed platforms are gone
        platform = {**result["platform"], "state": "destroyed"}
    if json_:
        emit_json(platform)
    else:
        show(platform, False, PLATFORM_COLUMNS)
    if job["state"] == "failed":
        err.print(f"[red]job {job_id} failed[/red]: {job['error']}")
        raise SystemExit(1)


@platform_app.command("create")
@handle_errors
def platform_create(
        isv: str,
        tenant: Annotated[list[str], typer.Option("--tenant", help="Tenant served (repeat for a "
                                                  "multi-tenant platform).")],
        app_ref: Annotated[str, typer.Option("--app", help="APP@VERSION")],
        name: Annotated[str | None, typer.Option(help="Platform name (default: the tenant)")]
        = None,
        region: Annotated[str | None, typer.Option(help="Region to place it in.")] = None,
        size: Annotated[str, typer.Option(help="s, m or l")] = "s",
        service_level: Annotated[str, typer.Option(
            help="hands-off (only the provider manages hosts) or hands-on")] = "hands-off",
        wait: WaitOpt = False, json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Create a platform: database, app processes and HTTPS route, by a durable job."""
    client = connect(data_dir)
    body = {"tenants": tenant, "app": app_ref, "name": name, "region": region, "size": size,
            "service_level": service_level}
    _accepted(client, client.post(f"/isvs/{seg(isv)}/platforms", body), wait, json_)


@platform_app.command("list")
@handle_errors
def platform_list(isv: Annotated[str | None, typer.Option()] = None,
                  tenant: Annotated[str | None, typer.Option()] = None,
                  region: Annotated[str | None, typer.Option()] = None,
                  state: Annotated[str | None, typer.Option()] = None,
                  json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """List platforms."""
    rows = connect(data_dir).get("/platforms", isv=isv, tenant=tenant, region=region,
                                 state=state)
    show(rows, json_, ["isv", "name", "tenants", "state", "release", "region", "url"])


@platform_app.command("show")
@handle_errors
def platform_show(platform: Annotated[str, typer.Argument(help="ISV/NAME or id")],
                  json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Show one platform."""
    show(connect(data_dir).get(platform_path(platform)), json_,
         [*PLATFORM_COLUMNS, "previous_release", "size", "error", "created_at"])


@platform_app.command("upgrade")
@handle_errors
def platform_upgrade(platform: Annotated[str, typer.Argument(help="ISV/NAME or id")],
                     app_ref: Annotated[str, typer.Option("--app", help="APP@VERSION")],
                     wait: WaitOpt = False, json_: JsonOpt = False,
                     data_dir: DataDirOpt = None) -> None:
    """Upgrade to another release; rolls back by itself if any step fails."""
    client = connect(data_dir)
    _accepted(client, client.post(f"{platform_path(platform)}/upgrade", {"app": app_ref}),
              wait, json_)


def _simple_action(verb: str, doc: str) -> None:
    @platform_app.command(verb, help=doc)
    @handle_errors
    def command(platform: Annotated[str, typer.Argument(help="ISV/NAME or id")],
                wait: WaitOpt = False, json_: JsonOpt = False,
                data_dir: DataDirOpt = None) -> None:
        client = connect(data_dir)
        if verb == "destroy":
            result = client.delete(platform_path(platform))
        else:
            result = client.post(f"{platform_path(platform)}/{verb}")
        _accepted(client, result, wait, json_)


_simple_action("rollback", "Go back to the previous release.")
_simple_action("stop", "Stop the app processes and the database (data is kept).")
_simple_action("start", "Start a stopped platform.")
_simple_action("destroy", "Remove every process, cluster, route, user and file of it.")


# ---------------------------------------------------------------- job, events

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


# ---------------------------------------------------------------- host

@host_app.command("enroll-token")
@handle_errors
def host_enroll_token(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Make a one-time token for `tenantry agent --enroll-token` (valid one hour)."""
    result = connect(data_dir).post("/hosts/enroll-tokens")
    if json_:
        emit_json(result)
    else:
        print(result["token"])
        err.print(f"valid until {result['expires_at']}, for one enrollment")


@host_app.command("revoke")
@handle_errors
def host_revoke(host: Annotated[str, typer.Argument(help="Host name or id.")],
                json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Cut a lost or compromised host's agent off for good (token and certificate)."""
    show(connect(data_dir).post(f"/hosts/{seg(host)}/revoke"), json_,
         ["id", "name", "region", "state", "platforms"])


@host_app.command("list")
@handle_errors
def host_list(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """List hosts; under the table, each host that refuses its desired state, and why."""
    hosts = connect(data_dir).get("/hosts")
    show(hosts, json_, ["id", "name", "region", "state", "ingress_port", "platforms",
                        "firewall", "disk", "last_seen_at"])
    if not json_:
        for h in hosts:
            if h.get("desired_error"):
                err.print(f"host {h['name']} refuses its desired state: {h['desired_error']}",
                          soft_wrap=True, markup=False)
