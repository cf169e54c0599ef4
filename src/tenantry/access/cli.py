"""`tenantry user ...` and `tenantry token ...`."""

from __future__ import annotations

import typer

user_app = typer.Typer(help="People and their roles.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens: scoped, expiring, revocable.", no_args_is_help=True)
