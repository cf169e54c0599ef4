"""How the CLI speaks: JSON or tables on stdout, everything else on stderr, one exit code map."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, NoReturn, ParamSpec, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tenantry.core.errors import TenantryError

out = Console()
err = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def fail(exc: TenantryError) -> NoReturn:
    where = f" ({exc.field})" if exc.field else ""
    err.print(f"[red]error[/red]{escape(where)}: {escape(exc.message)}", highlight=False,
              markup=True)
    raise SystemExit(exc.exit_code)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except TenantryError as exc:
            fail(exc)
        except KeyboardInterrupt:
            err.print("interrupted")
            raise SystemExit(130) from None
    return wrapper


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str],
          *, title: str | None = None, empty: str = "nothing to show") -> None:
    if not rows:
        err.print(empty)
        return
    t = Table(title=title, header_style="bold", show_lines=False)
    for c in columns:
        t.add_column(c.upper().replace("_", " "))
    for row in rows:
        t.add_row(*[_cell(row.get(c)) for c in columns])
    out.print(t)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def show(data: dict[str, Any] | list[dict[str, Any]], as_json: bool, columns: Sequence[str],
         *, title: str | None = None) -> None:
    if as_json:
        emit_json(data)
    elif isinstance(data, list):
        table(data, columns, title=title)
    else:
        t = Table(show_header=False, box=None)
        t.add_column(style="bold")
        t.add_column()
        for key in columns:
            t.add_row(key, _cell(data.get(key)))
        out.print(t)


def configure_logging() -> None:
    """Log lines on stderr for the long-running processes (worker, agent)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
