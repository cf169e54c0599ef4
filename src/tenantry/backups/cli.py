"""`tenantry backup run|list|window|key`: a platform's backups from the shell."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tenantry.cli.client import Client
from tenantry.cli.follow import wait_for_job
from tenantry.cli.options import DataDirOpt, JsonOpt, WaitOpt, seg
from tenantry.cli.output import emit_json, err, handle_errors, out, show
from tenantry.core.errors import InvalidInput
from tenantry.platforms.cli import platform_app

backup = typer.Typer(help="Backups of platforms (pgBackRest: full, differential, incremental, "
                     "and continuous WAL archiving for point-in-time recovery).",
                     no_args_is_help=True)

PlatformArg = Annotated[str, typer.Argument(help="The platform, ISV/NAME or its id.")]
COLUMNS = ["label", "type", "status", "started_at", "finished_at", "duration_seconds", "size",
           "stored"]


dr = typer.Typer(help="Disaster recovery: drills that destroy a platform's database and "
                 "recover it from the repository alone, with the data lost (RPO) and the time "
                 "to serving again (RTO) measured.", no_args_is_help=True)
DRILL_COLUMNS = ["id", "kind", "platform", "result", "host", "started_at", "acked_commits",
                 "lost_commits", "rpo_seconds", "rto_seconds", "detail"]


def register(root: typer.Typer) -> None:
    root.add_typer(backup, name="backup")
    root.add_typer(dr, name="dr")


def _path(client: Client, ref: str, what: str = "backups") -> str:
    """The backups (or restore) path of a platform given as ISV/NAME or as its id."""
    if "/" not in ref:
        found = client.get(f"/platforms/{seg(ref)}")
        ref = f"{found['isv']}/{found['name']}"
    isv, _, name = ref.partition("/")
    return f"/platforms/{seg(isv)}/{seg(name)}/{what}"


def _follow(client: Client, accepted: dict[str, Any], wait: bool,
            json_: bool) -> dict[str, Any] | None:
    """Print the accepted job, or follow it to its end (exit 1 when it failed)."""
    job_id = accepted["job_id"]
    if not wait:
        if json_:
            emit_json(accepted)
        else:
            err.print(f"job {job_id} started; follow it with `tenantry job show {job_id}`")
        return None
    return wait_for_job(client, job_id, quiet=json_)


@backup.command("run")
@handle_errors
def backup_run(platform: PlatformArg,
               type_: Annotated[str, typer.Option(
                   "--type", help="full, diff (changes since the last full) or incr (since the "
                   "last backup of any type); or a check: verify (every file of the "
                   "repository against its checksum), restore-test (the latest backup "
                   "restored into a scratch cluster and every table read).")] = "incr",
               wait: WaitOpt = False, json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Back up a platform now (the schedule runs on its own)."""
    client = Client.from_env(data_dir)
    path = _path(client, platform)
    accepted = client.post(path, {"type": type_})
    job_id = accepted["job_id"]
    job = _follow(client, accepted, wait, json_)
    if job is None:
        return
    label = ""
    if job["state"] == "succeeded":
        done = client.get(path)
        label = done[-1]["label"] if done else ""
    result: dict[str, Any] = {"platform": accepted["platform"], "job_id": job_id,
                              "state": job["state"], "error": job["error"], "label": label}
    if json_:
        emit_json(result)
    elif job["state"] == "succeeded":
        out.print(f"backup {label} of {accepted['platform']} done")
    if job["state"] == "failed":
        if not json_:
            err.print(f"[red]job {job_id} failed[/red]: {job['error']}")
        raise SystemExit(1)


@backup.command("list")
@handle_errors
def backup_list(platform: PlatformArg, json_: JsonOpt = False,
                data_dir: DataDirOpt = None) -> None:
    """The platform's backups, oldest first."""
    client = Client.from_env(data_dir)
    show(client.get(_path(client, platform)), json_, COLUMNS)


@backup.command("window")
@handle_errors
def backup_window(platform: PlatformArg, json_: JsonOpt = False,
                  data_dir: DataDirOpt = None) -> None:
    """The recoverable time range: `earliest` and `latest`."""
    client = Client.from_env(data_dir)
    show(client.get(f"{_path(client, platform)}/window"), json_,
         ["platform", "earliest", "latest", "archive_error"])


@backup.command("schedule")
@handle_errors
def backup_schedule(
        platform: PlatformArg,
        full: Annotated[str | None, typer.Option(
            "--full", help="Between full backups, like 7d (1d to 90d).")] = None,
        diff: Annotated[str | None, typer.Option(
            "--diff", help="Between differentials, like 1d (1h to 30d).")] = None,
        incr: Annotated[str | None, typer.Option(
            "--incr", help="Between incrementals, like 4h (15m to 7d).")] = None,
        verify: Annotated[str | None, typer.Option(
            "--verify", help="Between verifications, like 1d (1h to 90d).")] = None,
        restore_test: Annotated[str | None, typer.Option(
            "--restore-test", help="Between restore tests, like 7d (1h to 90d).")] = None,
        reset: Annotated[bool, typer.Option(
            "--reset", help="Back to the defaults (the options given apply after).")] = False,
        json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Show the platform's backup schedule, or change it (operators): intervals like 30m,
    4h, 1d or 2w. Without options it only shows it."""
    client = Client.from_env(data_dir)
    path = f"{_path(client, platform)}/schedule"
    given = {k: v for k, v in (("full", full), ("diff", diff), ("incr", incr),
                               ("verify", verify), ("restore_test", restore_test))
             if v is not None}
    if given or reset:
        found = client.put(path, {**given, **({"reset": True} if reset else {})})
    else:
        found = client.get(path)
    show(found, json_, ["platform", "full", "diff", "incr", "verify", "restore_test",
                        "overridden"])


@backup.command("restore")
@handle_errors
def backup_restore(platform: PlatformArg,
                   to_time: Annotated[str | None, typer.Option(
                       "--to-time", help="A time within `backup window` (ISO 8601, UTC "
                       "unless it names a zone), to the second or finer.")] = None,
                   latest: Annotated[bool, typer.Option(
                       "--latest", help="As far as the archived WAL goes.")] = False,
                   wait: WaitOpt = False, json_: JsonOpt = False,
                   data_dir: DataDirOpt = None) -> None:
    """Restore the platform in place: a safety backup first, the app stopped, the database
    restored to the point and started, the app health-checked. If anything fails, the
    platform is put back as it was."""
    if latest == (to_time is not None):
        raise InvalidInput("give either --to-time T or --latest", field="to_time")
    client = Client.from_env(data_dir)
    body: dict[str, Any] = {"latest": True} if latest else {"to_time": to_time}
    accepted = client.post(_path(client, platform, "restore"), body)
    job = _follow(client, accepted, wait, json_)
    if job is None:
        return
    result = {"platform": accepted["platform"], "job_id": accepted["job_id"],
              "state": job["state"], "error": job["error"], "to_time": to_time,
              "latest": latest}
    if json_:
        emit_json(result)
    elif job["state"] == "succeeded":
        out.print(f"{accepted['platform']} restored to {to_time or 'the latest commit'}")
    if job["state"] == "failed":
        if not json_:
            err.print(f"[red]job {accepted['job_id']} failed[/red]: {job['error']}")
        raise SystemExit(1)


@backup.command("key")
@handle_errors
def backup_key(isv: Annotated[str, typer.Argument(help="The ISV (by name).")],
               json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Export the ISV's escrowed backup passphrases (admins only; the export is recorded)."""
    show(Client.from_env(data_dir).get(f"/isvs/{seg(isv)}/backup-keys"), json_,
         ["isv", "pgbackrest_cipher_pass", "restic_password"])


@dr.command("drill")
@handle_errors
def dr_drill(platform: PlatformArg,
             host: Annotated[str | None, typer.Option(
                 "--host", help="Recover onto this host (default: another online host of "
                 "the platform's region; with none, fresh directories on its own).")] = None,
             seconds: Annotated[float, typer.Option(
                 "--seconds", help="How long the write load runs before the destruction.")]
             = 20.0,
             json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Destroy the platform's database under a write load (SIGKILL of the postmaster, its data
    directory and WAL spool deleted), recover it from the repository alone, and report
    `rpo_seconds`, `lost_commits` and `rto_seconds`. The platform is down meanwhile."""
    client = Client.from_env(data_dir)
    body: dict[str, Any] = {"seconds": seconds, **({"host": host} if host else {})}
    accepted = client.post(_path(client, platform, "drills"), body)
    job = wait_for_job(client, accepted["job_id"], quiet=json_, timeout=7200)
    found = client.get(f"/drills/by-job/{accepted['job_id']}")
    if json_:
        emit_json(found)
    else:
        show(found, False, DRILL_COLUMNS)
    if job["state"] == "failed":
        if not json_:
            err.print(f"[red]job {accepted['job_id']} failed[/red]: {job['error']}")
        raise SystemExit(1)


@dr.command("recover")
@handle_errors
def dr_recover(platform: PlatformArg,
               host: Annotated[str | None, typer.Option(
                   "--host", help="Rebuild on this host (by name).")] = None,
               region: Annotated[str | None, typer.Option(
                   "--region", help="Rebuild on an online host of this region.")] = None,
               to_time: Annotated[str | None, typer.Option(
                   "--to-time", help="A time within `backup window` (default: the latest "
                   "archived commit).")] = None,
               wait: WaitOpt = False, json_: JsonOpt = False,
               data_dir: DataDirOpt = None) -> None:
    """Rebuild a platform whose host is gone on another host, from its repository alone
    (database and files); it keeps its id, name and hostname. Refused while its host is
    online."""
    client = Client.from_env(data_dir)
    body: dict[str, Any] = {k: v for k, v in (("host", host), ("region", region),
                                              ("to_time", to_time)) if v is not None}
    accepted = client.post(_path(client, platform, "recover"), body)
    job = _follow(client, accepted, wait, json_)
    if job is None:
        return
    made = client.get(_path(client, accepted["platform"]).removesuffix("/backups"))
    result = {"platform": accepted["platform"], "job_id": accepted["job_id"],
              "state": job["state"], "error": job["error"], "host": made.get("host"),
              "url": made.get("url"), "to_time": to_time}
    if json_:
        emit_json(result)
    elif job["state"] == "succeeded":
        out.print(f"{accepted['platform']} recovered on {made.get('host')}: {made.get('url')}")
    if job["state"] == "failed":
        if not json_:
            err.print(f"[red]job {accepted['job_id']} failed[/red]: {job['error']}")
        raise SystemExit(1)


@dr.command("drills")
@handle_errors
def dr_drills(platform: PlatformArg, json_: JsonOpt = False,
              data_dir: DataDirOpt = None) -> None:
    """The platform's drills, oldest first, with what each measured."""
    client = Client.from_env(data_dir)
    show(client.get(_path(client, platform, "drills")), json_, DRILL_COLUMNS)


@platform_app.command("clone")
@handle_errors
def platform_clone(platform: PlatformArg,
                   name: Annotated[str, typer.Option("--name", help="The new platform's name.")],
                   to_time: Annotated[str | None, typer.Option(
                       "--to-time", help="A time within `backup window` (default: the "
                       "latest).")] = None,
                   wait: WaitOpt = False, json_: JsonOpt = False,
                   data_dir: DataDirOpt = None) -> None:
    """A new platform from this one's backups (same ISV, tenants, release and size): a
    staging copy, or one to investigate. Its database is restored, then backed up itself."""
    client = Client.from_env(data_dir)
    body: dict[str, Any] = {"name": name, **({"to_time": to_time} if to_time else {})}
    accepted = client.post(_path(client, platform, "clone"), body)
    job = _follow(client, accepted, wait, json_)
    if job is None:
        return
    made = client.get(f"/platforms/{seg(accepted['platform']['id'])}")
    if json_:
        emit_json(made)
    else:
        show(made, False, ["id", "isv", "name", "tenants", "state", "release", "host", "url"])
    if job["state"] == "failed":
        if not json_:
            err.print(f"[red]job {accepted['job_id']} failed[/red]: {job['error']}")
        raise SystemExit(1)
