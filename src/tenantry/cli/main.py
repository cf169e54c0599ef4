"""`tenantry <noun> <verb>`: the Typer root. Each domain brings its own command groups
(`tenantry.app.DOMAINS`), and the front-ends theirs (`up`, `agent`)."""

from __future__ import annotations

import typer


def build() -> typer.Typer:
    from tenantry.app import register_cli

    root = typer.Typer(help="tenantry: your application as a managed SaaS, one platform per "
                       "tenant.", no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False)
    register_cli(root)
    return root


def main() -> None:
    build()()
