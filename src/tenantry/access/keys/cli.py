"""CLI commands of this package."""

from __future__ import annotations

import typer

app = typer.Typer(help="Secrets at rest and the master key.", no_args_is_help=True)
