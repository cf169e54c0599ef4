"""`tenantry check|threshold|contact|alert|maintenance|status`: monitoring from the shell."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tenantry.cli.client import Client
from tenantry.cli.options import DataDirOpt, JsonOpt
from tenantry.cli.output import emit_json, err, handle_errors, out, show, table

checks = typer.Typer(help="The check catalog: what is watched, and its default thresholds.",
                     no_args_is_help=True)
thresholds = typer.Typer(help="Thresholds of a check for an ISV, a host or a platform.",
                         no_args_is_help=True)
contacts = typer.Typer(help="Who is told of alerts: an ISV's people, or the provider's NOC.",
                       no_args_is_help=True)
alerts = typer.Typer(help="The alert history: every state change and every notification.",
                     no_args_is_help=True)
maintenance = typer.Typer(help="Maintenance windows: announced, and silencing alerts in "
                          "scope while open.", no_args_is_help=True)

IsvOpt = Annotated[str | None, typer.Option("--isv", help="An ISV (by name).")]
HostOpt = Annotated[str | None, typer.Option("--host", help="A host (by name).")]
PlatformOpt = Annotated[str | None, typer.Option("--platform", help="A platform, ISV/NAME.")]


@checks.command("list")
@handle_errors
def check_list(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Every check with its target kind, thresholds and hold time."""
    show(Client.from_env(data_dir).get("/checks"), json_,
         ["name", "kind", "summary", "busy", "overloaded", "clear", "unit", "hold_seconds",
          "overrides"])


@thresholds.command("set")
@handle_errors
def threshold_set(check: Annotated[str, typer.Argument(help="The check (see check list).")],
                  overloaded: Annotated[float, typer.Option(help="Critical threshold.")],
                  busy: Annotated[float | None, typer.Option(
                      help="Warning threshold (checks that are only up or down have none).")]
                  = None,
                  clear: Annotated[float | None, typer.Option(
                      help="Where an alert clears (default: the catalog's gap below busy).")]
                  = None,
                  isv: IsvOpt = None, host: HostOpt = None, platform: PlatformOpt = None,
                  json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Override a check's thresholds for one ISV, host or platform (the most specific wins)."""
    body: dict[str, Any] = {"check": check, "busy": busy, "overloaded": overloaded,
                            "clear": clear, "isv": isv, "host": host, "platform": platform}
    made = Client.from_env(data_dir).request(
        "PUT", "/thresholds", json={k: v for k, v in body.items() if v is not None})
    if json_:
        emit_json(made)
        return
    err.print(f"{made['check']} for {made['scope']} {made['target']}: busy {made['busy']}, "
              f"overloaded {made['overloaded']}, clears at {made['clear']}")


@thresholds.command("list")
@handle_errors
def threshold_list(check: Annotated[str | None, typer.Option(help="Only this check.")] = None,
                   json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """The overrides you may see."""
    show(Client.from_env(data_dir).get("/thresholds", check=check), json_,
         ["check", "scope", "target", "busy", "overloaded", "clear", "set_by", "updated_at"])


@thresholds.command("unset")
@handle_errors
def threshold_unset(check: str, isv: IsvOpt = None, host: HostOpt = None,
                    platform: PlatformOpt = None, json_: JsonOpt = False,
                    data_dir: DataDirOpt = None) -> None:
    """Remove an override: the next less specific threshold applies again."""
    given = [(s, v) for s, v in (("isv", isv), ("host", host), ("platform", platform)) if v]
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of --isv, --host or --platform")
    scope, target = given[0]
    Client.from_env(data_dir).request("DELETE", "/thresholds", params={
        "check": check, "scope": scope, "target": target})
    if json_:
        emit_json({"check": check, "scope": scope, "target": target, "removed": True})
    else:
        err.print(f"removed the {check} threshold of {scope} {target}")


@contacts.command("add")
@handle_errors
def contact_add(name: Annotated[str, typer.Argument(help="A name for the contact.")],
                email: Annotated[str | None, typer.Option(help="Email address.")] = None,
                phone: Annotated[str | None, typer.Option(
                    help="Mobile number for SMS, international form (+41791234567).")] = None,
                isv: Annotated[str | None, typer.Option(
                    help="Whose alerts: this ISV's platforms. Without: the provider's NOC.")]
                = None,
                hours: Annotated[str, typer.Option(
                    help="always, or business (TENANTRY_BUSINESS_HOURS) only.")] = "always",
                json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Add someone who is told of alerts by email and/or SMS."""
    body = {"name": name, "email": email, "phone": phone, "isv": isv, "hours": hours}
    made = Client.from_env(data_dir).post("/contacts",
                                          {k: v for k, v in body.items() if v is not None})
    if json_:
        emit_json(made)
        return
    err.print(f"contact {made['id']} {made['name']} ({made['isv'] or 'NOC'}) added")


@contacts.command("list")
@handle_errors
def contact_list(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """The contacts you may see."""
    rows = Client.from_env(data_dir).get("/contacts")
    for r in rows:
        r["for"] = r["isv"] or "NOC"
    show(rows, json_, ["id", "name", "for", "email", "phone", "hours"])


@contacts.command("remove")
@handle_errors
def contact_remove(contact_id: str, json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Stop telling a contact."""
    Client.from_env(data_dir).delete(f"/contacts/{contact_id}")
    if json_:
        emit_json({"id": contact_id, "removed": True})
    else:
        err.print(f"contact {contact_id} removed")


ALERT_COLUMNS = ["id", "check", "level", "target", "started_at", "ended_at", "told"]


def _told(alert: dict[str, Any]) -> str:
    notes = alert.get("notifications") or []
    if alert.get("silenced_by"):
        return f"silenced ({alert['silenced_by']})"
    if alert.get("suppressed"):
        return "suppressed"
    sent = sum(1 for n in notes if n["status"] == "sent")
    return f"{sent}/{len(notes)} sent" if notes else "-"


@alerts.command("list")
@handle_errors
def alert_list(platform: PlatformOpt = None, host: HostOpt = None,
               open_: Annotated[bool, typer.Option("--open", help="Only open ones.")] = False,
               since: Annotated[str | None, typer.Option(
                   help="Started after: an ISO time, or 30m, 6h, 7d back.")] = None,
               check: Annotated[str | None, typer.Option(help="Only this check.")] = None,
               limit: Annotated[int, typer.Option(min=1, max=1000)] = 200,
               json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Alerts, newest first, with their notifications."""
    rows = Client.from_env(data_dir).get("/alerts", platform=platform, host=host,
                                         open="true" if open_ else None, since=since,
                                         check=check, limit=limit)
    if json_:
        emit_json(rows)
        return
    for r in rows:
        r["told"] = _told(r)
    table(rows, ALERT_COLUMNS, empty="no alerts")


@alerts.command("show")
@handle_errors
def alert_show(alert_id: int, json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """One alert: its changes and every notification attempt."""
    found = Client.from_env(data_dir).get(f"/alerts/{alert_id}")
    if json_:
        emit_json(found)
        return
    show(found, False, ["id", "check", "level", "kind", "target", "summary", "value",
                        "threshold", "started_at", "ended_at", "silenced_by", "suppressed"])
    table(found["changes"], ["state", "at", "value", "note"], title="changes")
    table(found["notifications"], ["channel", "recipient", "state", "status", "attempts",
                                   "sent_at", "last_error"], title="notifications",
          empty="no notifications")


MAINT_COLUMNS = ["id", "scope", "target", "starts_at", "ends_at", "active", "message"]


@maintenance.command("create")
@handle_errors
def maintenance_create(
        from_: Annotated[str, typer.Option("--from", help="Start, ISO time with zone.")],
        to: Annotated[str, typer.Option("--to", help="End, ISO time with zone.")],
        message: Annotated[str, typer.Option(help="What the affected contacts read.")],
        region: Annotated[str | None, typer.Option(help="A whole region.")] = None,
        host: HostOpt = None, platform: PlatformOpt = None,
        json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Post a maintenance window: announced now, silencing alerts in scope while it lasts."""
    body = {"region": region, "host": host, "platform": platform, "from": from_, "to": to,
            "message": message}
    made = Client.from_env(data_dir).post("/maintenance",
                                          {k: v for k, v in body.items() if v is not None})
    if json_:
        emit_json(made)
        return
    err.print(f"maintenance {made['id']} of {made['scope']} {made['target']} from "
              f"{made['starts_at']} to {made['ends_at']} posted")


@maintenance.command("list")
@handle_errors
def maintenance_list(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Current and coming windows."""
    show(Client.from_env(data_dir).get("/maintenance"), json_, MAINT_COLUMNS)


@maintenance.command("cancel")
@handle_errors
def maintenance_cancel(maintenance_id: str, json_: JsonOpt = False,
                       data_dir: DataDirOpt = None) -> None:
    """End a window now (its silence is lifted)."""
    show(Client.from_env(data_dir).post(f"/maintenance/{maintenance_id}/cancel"), json_,
         MAINT_COLUMNS)


@handle_errors
def status(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """The status matrix per region (Network, Compute, Storage) and what is not OK."""
    found = Client.from_env(data_dir).get("/status")
    if json_:
        emit_json(found)
        return
    rows = [{"region": r["name"], **r["matrix"], "hosts": len(r["hosts"]),
             "platforms": sum(len(h["platforms"]) for h in r["hosts"])}
            for r in found["regions"]]
    table(rows, ["region", "Network", "Compute", "Storage", "hosts", "platforms"],
          empty="no hosts yet")
    bad = [{"target": target, "check": c["check"], "level": c["level"], "since": c["since"]}
           for r in found["regions"] for h in r["hosts"]
           for target, cs in [(h["name"], h["checks"]),
                              *((p["name"], p["checks"]) for p in h["platforms"])]
           for c in cs if c["level"] != "ok"]
    if bad:
        table(bad, ["target", "check", "level", "since"], title="not OK")
    for m in found["maintenance"]:
        out.print(f"maintenance {m['id']}: {m['scope']} {m['target']} {m['starts_at']} to "
                  f"{m['ends_at']}: {m['message']}")


def register(root: typer.Typer) -> None:
    root.add_typer(checks, name="check")
    root.add_typer(thresholds, name="threshold")
    root.add_typer(contacts, name="contact")
    root.add_typer(alerts, name="alert")
    root.add_typer(maintenance, name="maintenance")
    root.command("status")(status)
