"""HTTP routes for users, roles and API tokens."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
