"""The one place that turns library errors into HTTP answers."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from tenantry.core.errors import TenantryError, field_errors

log = logging.getLogger("tenantry.api")


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None


class ErrorBody(BaseModel):
    """Every error answer of the API has this shape."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in ((400, "The request body is not readable (not JSON, say)"),
                                (401, "No valid token"), (403, "Not allowed"),
                                (404, "Not found (or not yours)"), (405, "Method not allowed"),
                                (409, "Conflict with the current state"),
                                (422, "Invalid input: the field and the reason"),
                                (429, "Too many attempts; wait"),
                                (503, "A part tenantry depends on is unavailable"))
}


def error_body(code: str, message: str, field: str | None) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "field": field}}


def _store_away() -> JSONResponse:
    return JSONResponse(error_body("unavailable", "the control plane's database is not "
                                   "reachable (it may be restarting); try again in a few "
                                   "seconds", None), status_code=503,
                        headers={"Retry-After": "5"})


def install(app: FastAPI) -> None:
    @app.exception_handler(TenantryError)
    async def _tenantry(request: Request, exc: TenantryError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.field),
                            status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        field, message = next(iter(field_errors(exc.errors()).items()),
                              ("_form", "invalid request"))
        if field == "_form":
            return JSONResponse(error_body("invalid_input", message, None), status_code=422)
        return JSONResponse(error_body("invalid_input", f"{field}: {message}", field),
                            status_code=422)

    @app.exception_handler(sqlalchemy.exc.DBAPIError)
    async def _store(request: Request, exc: sqlalchemy.exc.DBAPIError) -> JSONResponse:
        """The store is away (its PostgreSQL restarting, say): 503, said so, never a 500. The
        engine checks connections before use, so the next request after it is back works."""
        if not (isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
                or exc.connection_invalidated):
            raise exc
        log.warning("the store is unreachable: %s", type(exc.orig).__name__)
        return _store_away()

    @app.exception_handler(sqlalchemy.exc.TimeoutError)
    async def _busy(request: Request, exc: sqlalchemy.exc.TimeoutError) -> JSONResponse:
        """No store connection came free in time: the API is overloaded, which a client may
        retry (an agent does), not a bug."""
        log.warning("no store connection came free in time: %s", exc)
        return JSONResponse(error_body("unavailable", "the control plane is overloaded (no "
                                       "database connection came free in time); try again "
                                       "in a few seconds", None), status_code=503,
                            headers={"Retry-After": "5"})

    @app.exception_handler(psycopg.OperationalError)
    async def _store_direct(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        log.warning("the store is unreachable: %s", type(exc).__name__)  # (the job queue's)
        return _store_away()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated"}.get(
            exc.status_code, "error")
        return JSONResponse(error_body(code, str(exc.detail), None), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))
