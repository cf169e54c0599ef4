"""Portal pages (placeholder until the portal lands)."""

from __future__ import annotations

from fastapi import FastAPI


def mount(app: FastAPI) -> None:
    return None
