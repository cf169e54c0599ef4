"""`tenantry usage|plan|subscription|invoice|quote`: billing from the shell."""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from tenantry.cli.client import Client
from tenantry.cli.options import DataDirOpt, JsonOpt, seg
from tenantry.cli.output import emit_json, err, handle_errors, out, show, table
from tenantry.core.errors import InvalidInput

usage = typer.Typer(help="End users' activity, as the ISV's application reports it.",
                    no_args_is_help=True)
plan = typer.Typer(help="Price plans (TOML files; a changed plan becomes a new version).",
                   no_args_is_help=True)
subscription = typer.Typer(help="ISVs' subscriptions: a plan, a commitment term, a minimum.",
                           no_args_is_help=True)
invoice = typer.Typer(help="Monthly invoices: run, list, show, PDF, active users as CSV.",
                      no_args_is_help=True)

PlatformArg = Annotated[str, typer.Argument(help="The platform, ISV/NAME.")]
IsvArg = Annotated[str, typer.Argument(help="The ISV's name.")]
PeriodOpt = Annotated[str, typer.Option("--period", help="The month, YYYY-MM.")]
BATCH = 10_000  # the API's most events a request
INVOICE_COLUMNS = ["id", "isv", "period", "currency", "active_users", "subtotal", "tax", "total",
                   "issued_at"]
LINE_COLUMNS = ["description", "quantity", "unit_price", "amount"]
TOKEN_COLUMNS = ["id", "platform", "created_at", "created_by", "revoked_at"]


def register(root: typer.Typer) -> None:
    root.add_typer(usage, name="usage")
    root.add_typer(plan, name="plan")
    root.add_typer(subscription, name="subscription")
    root.add_typer(invoice, name="invoice")
    root.command("quote")(quote)


def _platform_path(ref: str, what: str) -> str:
    isv, sep, name = ref.partition("/")
    if not sep or not isv or not name:
        raise InvalidInput("platform must be ISV/NAME", field="platform")
    return f"/platforms/{seg(isv)}/{seg(name)}/{what}"


# ------------------------------------------------------------------ usage


@usage.command("token")
@handle_errors
def usage_token(platform: PlatformArg, json_: JsonOpt = False,
                data_dir: DataDirOpt = None) -> None:
    """A new token that may only send usage for this platform (shown once)."""
    made = Client.from_env(data_dir).post(_platform_path(platform, "usage-tokens"))
    if json_:
        emit_json(made)
    else:
        err.print(f"usage token {made['id']} for {made['platform']} (shown once; it may only "
                  "send usage):")
        out.print(made["token"], markup=False, soft_wrap=True)


@usage.command("tokens")
@handle_errors
def usage_tokens(platform: PlatformArg, json_: JsonOpt = False,
                 data_dir: DataDirOpt = None) -> None:
    """The platform's usage tokens (never the tokens themselves), revoked ones too."""
    show(Client.from_env(data_dir).get(_platform_path(platform, "usage-tokens")), json_,
         TOKEN_COLUMNS)


@usage.command("revoke")
@handle_errors
def usage_revoke(platform: PlatformArg,
                 token_id: Annotated[str, typer.Argument(help="The token's id (`usage tokens`).")],
                 json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Revoke a usage token: its next request is refused."""
    show(Client.from_env(data_dir).post(_platform_path(platform,
                                                       f"usage-tokens/{seg(token_id)}/revoke")),
         json_, TOKEN_COLUMNS)


def _read_events(path: Path) -> list[Any]:
    """Every line of a JSONL file, parsed before anything is sent."""
    try:
        text = path.read_text()
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror}", field="file") from None
    events = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except ValueError as e:
            raise InvalidInput(f"{path}:{number}: not JSON ({e})", field="file") from None
    if not events:
        raise InvalidInput(f"{path} holds no events", field="file")
    return events


@usage.command("send")
@handle_errors
def usage_send(platform: PlatformArg,
               file: Annotated[Path, typer.Argument(help="JSON lines, one event each: "
                                                    '{"id", "tenant", "user", "time"}.')],
               json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Send a file of usage events with your own credentials (backfills, tests)."""
    events = _read_events(file)
    client = Client.from_env(data_dir)
    total: dict[str, Any] = {"platform": platform, "accepted": 0, "duplicates": 0,
                             "refused": 0, "refusals": []}
    with Progress(TextColumn("sending usage"), BarColumn(), MofNCompleteColumn(),
                  console=err, transient=True, disable=json_) as progress:
        task = progress.add_task("send", total=len(events))
        for start in range(0, len(events), BATCH):
            got = client.post("/usage", {"platform": platform,
                                         "events": events[start:start + BATCH]})
            total["platform"] = got["platform"]
            for key in ("accepted", "duplicates", "refused"):
                total[key] += got[key]
            total["refusals"] += [{**r, "index": r["index"] + start,
                                   "field": r["field"].replace(
                                       f"events[{r['index']}]",
                                       f"events[{r['index'] + start}]", 1)}
                                  for r in got["refusals"]]
            progress.advance(task, len(events[start:start + BATCH]))
    if json_:
        emit_json(total)
        return
    err.print(f"{total['platform']}: {total['accepted']} accepted, {total['duplicates']} "
              f"duplicates, {total['refused']} refused")
    table(total["refusals"][:50], ["index", "id", "field", "reason"], empty="")


# ------------------------------------------------------------------ plans


@plan.command("apply")
@handle_errors
def plan_apply(file: Annotated[Path, typer.Argument(help="The plan, a TOML file.")],
               json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Create a plan, or a new version of it when the file changed."""
    try:
        document = tomllib.loads(file.read_text())
    except OSError as e:
        raise InvalidInput(f"cannot read {file}: {e.strerror}", field="file") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidInput(f"{file}: not TOML ({e})", field="file") from None
    made = Client.from_env(data_dir).post("/plans", document)
    if json_:
        emit_json(made)
    else:
        err.print(f"plan {made['name']} version {made['version']}"
                  + ("" if made["changed"] else " (unchanged)"))


@plan.command("list")
@handle_errors
def plan_list(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """The plans, each at its latest version."""
    plans = Client.from_env(data_dir).get("/plans")
    rows = [{"name": p["name"], "version": p["version"], "currency": p["document"]["currency"],
             "model": p["document"]["users"]["model"],
             "terms": list(p["document"]["terms"])} for p in plans]
    show(plans if json_ else rows, json_, ["name", "version", "currency", "model", "terms"])


# ------------------------------------------------------------------ subscriptions


@subscription.command("create")
@handle_errors
def subscription_create(
        isv: IsvArg,
        plan_: Annotated[str, typer.Option("--plan", help="The plan's name.")],
        term: Annotated[str, typer.Option("--term", help="The commitment: one of the plan's "
                                          "terms (1m, 3m, 12m, 1y ...).")],
        min_users: Annotated[int, typer.Option("--min-users", help="Users committed to: a "
                                               "month with fewer bills the shortfall.")] = 0,
        start: Annotated[str | None, typer.Option("--start", help="YYYY-MM-DD (default: today;"
                                                  " a renewal starts next month).")] = None,
        tax_rate: Annotated[str, typer.Option("--tax-rate", help="Percent, 0-100.")] = "0",
        json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Subscribe an ISV to a plan for a term."""
    if start is not None:
        try:
            dt.date.fromisoformat(start)
        except ValueError:
            raise InvalidInput("start: must be a date, YYYY-MM-DD", field="start") from None
    made = Client.from_env(data_dir).post(f"/isvs/{seg(isv)}/subscriptions", {
        "plan": plan_, "term": term, "min_users": min_users, "start": start,
        "tax_rate": tax_rate})
    show(made, json_, ["id", "isv", "plan", "plan_version", "term", "min_users", "tax_rate",
                       "start", "end"])


@subscription.command("list")
@handle_errors
def subscription_list(isv: Annotated[str | None, typer.Option("--isv")] = None,
                      json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Subscriptions (yours, as an ISV's person)."""
    show(Client.from_env(data_dir).get("/subscriptions", isv=isv), json_,
         ["id", "isv", "plan", "plan_version", "term", "min_users", "tax_rate", "start", "end"])


# ------------------------------------------------------------------ invoices


def _show_invoice(inv: dict[str, Any], json_: bool) -> None:
    if json_:
        emit_json(inv)
        return
    title = (f"{inv['id']}  {inv['isv']}  {inv['period']}  ({inv['currency']}, "
             f"{inv['active_users']} active users)")
    table(inv["lines"], LINE_COLUMNS, title=title, empty="no lines")
    out.print(f"subtotal {inv['subtotal']}   tax ({inv['tax_rate']} %) {inv['tax']}   "
              f"total {inv['total']} {inv['currency']}", markup=False)


@invoice.command("run")
@handle_errors
def invoice_run(period: PeriodOpt, json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Issue the invoices of a month that has ended (again: the same invoices, nothing new)."""
    made = Client.from_env(data_dir).post("/invoices/run", {"period": period})
    show(made, json_, INVOICE_COLUMNS)


@invoice.command("list")
@handle_errors
def invoice_list(isv: Annotated[str | None, typer.Option("--isv")] = None,
                 json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Issued invoices, newest month first."""
    show(Client.from_env(data_dir).get("/invoices", isv=isv), json_, INVOICE_COLUMNS)


@invoice.command("show")
@handle_errors
def invoice_show(invoice_id: Annotated[str, typer.Argument(help="The invoice's id.")],
                 json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """An invoice, line by line."""
    _show_invoice(Client.from_env(data_dir).get(f"/invoices/{seg(invoice_id)}"), json_)


@invoice.command("projection")
@handle_errors
def invoice_projection(isv: IsvArg,
                       period: Annotated[str | None, typer.Option(
                           "--period", help="YYYY-MM (default: this month).")] = None,
                       json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """The invoice a month would get if it ended now."""
    _show_invoice(Client.from_env(data_dir).get(f"/isvs/{seg(isv)}/projection",
                                                period=period), json_)


@invoice.command("pdf")
@handle_errors
def invoice_pdf(invoice_id: Annotated[str, typer.Argument(help="The invoice's id.")],
                output: Annotated[Path, typer.Option("-o", "--output", help="The PDF file.")],
                json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Write an invoice's PDF (the same bytes every time)."""
    body = Client.from_env(data_dir).download(f"/invoices/{seg(invoice_id)}/pdf")
    output.write_bytes(body)
    if json_:
        emit_json({"id": invoice_id, "file": str(output), "bytes": len(body)})
    else:
        err.print(f"wrote {output} ({len(body)} bytes)")


@invoice.command("csv")
@handle_errors
def invoice_csv(isv: IsvArg, period: PeriodOpt,
                output: Annotated[Path | None, typer.Option(
                    "-o", "--output", help="The CSV file (default: standard output).")] = None,
                data_dir: DataDirOpt = None) -> None:
    """Active users per platform and tenant in a month, as CSV."""
    body = Client.from_env(data_dir).download(f"/isvs/{seg(isv)}/active-users", period=period)
    if output is None:
        out.file.write(body.decode())
    else:
        output.write_bytes(body)
        err.print(f"wrote {output}")


# ------------------------------------------------------------------ quotes


@handle_errors
def quote(plan_: Annotated[str, typer.Option("--plan", help="The plan's name.")],
          users: Annotated[int, typer.Option("--users", help="Users committed to.")],
          term: Annotated[str, typer.Option("--term", help="One of the plan's terms.")],
          platforms: Annotated[int, typer.Option("--platforms", help="Platforms.")] = 1,
          json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """The monthly price of a commitment, line by line, before any usage."""
    got = Client.from_env(data_dir).get("/quote", plan=plan_, users=users, term=term,
                                        platforms=platforms)
    if json_:
        emit_json(got)
        return
    table(got["lines"], LINE_COLUMNS, title=f"{got['plan']} (version {got['plan_version']}), "
          f"{got['users']} users, {got['term']}", empty="no lines")
    out.print(f"monthly, before tax: {got['monthly']} {got['currency']}", markup=False)
