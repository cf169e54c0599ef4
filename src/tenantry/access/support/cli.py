"""`tenantry support grant|list|revoke`: let the provider into a hands-on platform, for hours."""

from __future__ import annotations

from typing import Annotated

import typer

from tenantry.cli.client import Client
from tenantry.cli.options import DataDirOpt, JsonOpt
from tenantry.cli.output import emit_json, err, handle_errors, show

app = typer.Typer(help="Support access: ISV admins let the provider into a hands-on "
                  "platform for a few hours.", no_args_is_help=True)

COLUMNS = ["id", "platform", "reason", "granted_by", "expires_at", "active"]


@app.command("grant")
@handle_errors
def grant(platform: Annotated[str, typer.Argument(help="ISV/NAME or platform id.")],
          hours: Annotated[int, typer.Option(help="How long, 1 to 72 hours.")],
          reason: Annotated[str, typer.Option(help="Why (audited, shown to the provider).")],
          json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Grant the provider's operators access to a hands-on platform; it ends by itself."""
    made = Client.from_env(data_dir).post("/support-grants", {
        "platform": platform, "hours": hours, "reason": reason})
    if json_:
        emit_json(made)
        return
    err.print(f"support access {made['id']} to {made['platform']} until {made['expires_at']}")


@app.command("list")
@handle_errors
def list_(all_: Annotated[bool, typer.Option("--all", help="Ended ones too.")] = False,
          json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Support grants you may see (live ones unless --all)."""
    show(Client.from_env(data_dir).get("/support-grants", all="true" if all_ else None),
         json_, COLUMNS)


@app.command("revoke")
@handle_errors
def revoke(grant_id: str, json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """End a support grant now."""
    show(Client.from_env(data_dir).post(f"/support-grants/{grant_id}/revoke"), json_, COLUMNS)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="support")
