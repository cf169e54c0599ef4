"""The options every command shares, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer

from tenantry.cli.client import Client

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (one object, or an array).")]
DataDirOpt = Annotated[Path | None, typer.Option(
    "--data-dir", help="Data dir of a local control plane (default: $TENANTRY_DATA_DIR or "
    "~/.local/share/tenantry).")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for the job, with progress.")]


def connect(data_dir: Path | None = None) -> Client:
    """The control plane: TENANTRY_URL and TENANTRY_TOKEN, else the local one in the data dir."""
    return Client.from_env(data_dir)


def seg(value: str) -> str:
    """One URL path segment."""
    return quote(value, safe="")
