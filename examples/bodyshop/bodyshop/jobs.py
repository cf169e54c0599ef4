"""Repair jobs: input validation and SQL. No HTTP here."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from bodyshop import FEATURES, STAGES

REGISTRATION = re.compile(r"^[A-Za-z0-9 -]{1,16}$")
MAX_ESTIMATE = Decimal("9999999999.99")


class Invalid(Exception):
    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _columns() -> str:
    extra = ", estimate" if "estimate" in FEATURES else ""
    # Name columns explicitly: a newer schema may have more of them (rollback safety).
    return "id, registration, customer, stage, created_at, updated_at" + extra


def _public(row: tuple[Any, ...]) -> dict[str, Any]:
    job = {
        "id": row[0],
        "registration": row[1],
        "customer": row[2],
        "stage": row[3],
        "created_at": row[4].isoformat(),
        "updated_at": row[5].isoformat(),
    }
    if "estimate" in FEATURES:
        job["estimate"] = None if row[6] is None else str(row[6])
    return job


def _stage(value: Any) -> str:
    if value not in STAGES:
        raise Invalid(f"stage must be one of {', '.join(STAGES)}", "stage")
    return str(value)


def _estimate(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Invalid("estimate must be a decimal amount", "estimate")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise Invalid("estimate must be a decimal amount", "estimate") from None
    if not amount.is_finite() or amount < 0 or amount > MAX_ESTIMATE:
        raise Invalid("estimate must be between 0 and 9999999999.99", "estimate")
    if amount != amount.quantize(Decimal("0.01")):
        raise Invalid("estimate has at most 2 decimal places", "estimate")
    return amount.quantize(Decimal("0.01"))


def _check_keys(data: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise Invalid("body must be a JSON object", None)
    if "estimate" in FEATURES:
        allowed = allowed | {"estimate"}
    for key in data:
        if key not in allowed:
            raise Invalid(f"unknown field {key!r}", str(key))
    return data


def validate_new(data: Any) -> dict[str, Any]:
    data = _check_keys(data, {"registration", "customer", "stage"})
    registration = data.get("registration")
    if not isinstance(registration, str) or not REGISTRATION.match(registration.strip()):
        raise Invalid("registration must be 1-16 letters, digits, spaces or dashes", "registration")
    customer = data.get("customer")
    if not isinstance(customer, str) or not 1 <= len(customer.strip()) <= 200:
        raise Invalid("customer must be 1-200 characters", "customer")
    job = {
        "registration": registration.strip().upper(),
        "customer": customer.strip(),
        "stage": _stage(data.get("stage", "received")),
    }
    if "estimate" in FEATURES:
        job["estimate"] = _estimate(data.get("estimate"))
    return job


def validate_change(data: Any) -> dict[str, Any]:
    data = _check_keys(data, {"stage"})
    if not data:
        raise Invalid("nothing to change", "stage")
    change: dict[str, Any] = {}
    if "stage" in data:
        change["stage"] = _stage(data["stage"])
    if "estimate" in data:
        change["estimate"] = _estimate(data["estimate"])
    return change


def create(conn: Any, job: dict[str, Any]) -> dict[str, Any]:
    keys = list(job)
    sql = (
        f"INSERT INTO jobs ({', '.join(keys)}) VALUES ({', '.join(['%s'] * len(keys))})"
        f" RETURNING {_columns()}"
    )
    return _public(conn.execute(sql, [job[k] for k in keys]).fetchone())


def list_jobs(conn: Any, stage: str | None) -> list[dict[str, Any]]:
    if stage is None:
        rows = conn.execute(f"SELECT {_columns()} FROM jobs ORDER BY id").fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_columns()} FROM jobs WHERE stage = %s ORDER BY id", (_stage(stage),)
        ).fetchall()
    return [_public(r) for r in rows]


def get(conn: Any, job_id: int) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {_columns()} FROM jobs WHERE id = %s", (job_id,)).fetchone()
    return None if row is None else _public(row)


def change(conn: Any, job_id: int, change: dict[str, Any]) -> dict[str, Any] | None:
    # Keys come from validate_change's fixed set, never from the request.
    sets = ", ".join(f"{k} = %s" for k in change)
    row = conn.execute(
        f"UPDATE jobs SET {sets}, updated_at = now() WHERE id = %s RETURNING {_columns()}",
        [*change.values(), job_id],
    ).fetchone()
    return None if row is None else _public(row)
