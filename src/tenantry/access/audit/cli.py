"""`tenantry audit list|verify|ship`: thin clients of /api/v1/audit."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tenantry.cli.client import Client
from tenantry.cli.options import DataDirOpt, JsonOpt
from tenantry.cli.output import emit_json, err, handle_errors, out, show

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)

COLUMNS = ["id", "time", "actor", "source", "action", "target", "outcome", "ip"]


@app.command("list")
@handle_errors
def audit_list(actor: Annotated[str | None, typer.Option(help="Only this actor.")] = None,
               action: Annotated[str | None, typer.Option(help="Action contains.")] = None,
               target: Annotated[str | None, typer.Option(help="Target contains.")] = None,
               since: Annotated[str | None, typer.Option(help="ISO time, inclusive.")] = None,
               until: Annotated[str | None, typer.Option(help="ISO time, exclusive.")] = None,
               limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
               json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """List audit entries, newest first (ISV users see their organisation's only)."""
    rows = Client.from_env(data_dir).get("/audit", actor=actor, action=action, target=target,
                                         since=since, until=until, limit=limit)
    show(rows, json_, COLUMNS)


@app.command("verify")
@handle_errors
def audit_verify(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Check the whole chain and the last shipped head; exit 1 naming the first bad entry."""
    report: dict[str, Any] = Client.from_env(data_dir).get("/audit/verify")
    bad = report.get("first_bad")
    if json_:
        emit_json(report)
    elif bad is None:
        head = report.get("head")
        shipped = f", matches the head shipped at {head['time']}" if head else ", no head shipped"
        out.print(f"ok: {report['checked']} entries{shipped}", highlight=False)
    if bad is not None:
        err.print(f"[red]tampered[/red]: entry {bad['id']}: {bad['reason']} "
                  f"({report['checked']} entries good before it)", highlight=False)
        if bad.get("entry") and not json_:
            err.print(bad["entry"], highlight=False)
        raise SystemExit(1)


@app.command("ship")
@handle_errors
def audit_ship(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Sign the current head and ship it offsite now."""
    show(Client.from_env(data_dir).post("/audit/ship"), json_,
         ["last_id", "count", "time", "last_mac"])


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="audit")
