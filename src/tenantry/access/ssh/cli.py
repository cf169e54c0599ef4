"""CLI commands of this package."""

from __future__ import annotations

import typer

app = typer.Typer(help="SSH certificates for operators.", no_args_is_help=True)
