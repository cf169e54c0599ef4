"""CLI commands of this package."""

from __future__ import annotations

import typer

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
