"""Records every mutating API and portal request in the audit log.

A pure ASGI middleware: GET/HEAD/OPTIONS pass straight through. For any other method the
entry is written, in its own transaction (shared with other requests' entries under load,
see service.GroupAppender), just before the last body chunk of the response
goes out, so a client that saw the response can already find the entry. What is recorded:
who (the API token's or portal cookie's user even when the token is now revoked, e.g. on
logout; `agent:<host>` for agents), `METHOD /route/{template}`, the concrete path (plus the
`name` of what a POST creates), the status code, the client address, and for portal logins
the attempted username (action `login` or `login.failed`) — never a password or token.
The agents' heartbeats (`/api/v1/agent/report`, `/api/v1/agent/desired`) are skipped.
A failure to record is logged and does not fail the request.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs

import anyio
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenantry.access.audit import service
from tenantry.access.models import ApiToken, User
from tenantry.api.deps import SESSION_COOKIE
from tenantry.core.crypto import token_hash
from tenantry.core.runtime import Runtime
from tenantry.platforms.models import Host, Isv

log = logging.getLogger(__name__)

READ_ONLY = frozenset({"GET", "HEAD", "OPTIONS"})
SKIP = frozenset({"/api/v1/agent/report", "/api/v1/agent/desired"})
KEEP_BODY = frozenset({"/login", "/api/v1/agent/enroll"})
MAX_BODY = 64 * 1024
# Request fields safe to keep in `detail` (what was asked for; never secrets).
SAFE_FIELDS = ("name", "tenants", "app", "region", "size", "service_level", "role")


def install(app: FastAPI, runtime: Runtime) -> None:
    app.add_middleware(AuditMiddleware, runtime=runtime)


class AuditMiddleware:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] in READ_ONLY
                or scope["path"] in SKIP or scope["path"].startswith("/static/")):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        status = 0
        done = False
        keep = scope["path"] in KEEP_BODY or scope["path"].startswith("/api/v1/")

        async def receive_and_keep() -> Message:
            message = await receive()
            if keep and message["type"] == "http.request" and len(body) < MAX_BODY:
                body.extend(message.get("body", b""))
            return message

        async def send_and_record(message: Message) -> None:
            nonlocal status, done
            if message["type"] == "http.response.start":
                status = message["status"]
            elif (message["type"] == "http.response.body" and not message.get("more_body")
                  and not done):
                done = True
                await self._record(scope, status, bytes(body))
            await send(message)

        try:
            await self.app(scope, receive_and_keep, send_and_record)
        except Exception:
            if not done:
                done = True
                await self._record(scope, 500, bytes(body))
            raise

    async def _record(self, scope: Scope, status: int, body: bytes) -> None:
        try:
            await anyio.to_thread.run_sync(self._record_sync, scope, status, body)
        except Exception:
            log.exception("could not record %s %s in the audit log", scope["method"],
                          scope["path"])

    def _record_sync(self, scope: Scope, status: int, body: bytes) -> None:
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        route = scope.get("route")
        template = getattr(route, "path", None) or path
        if path.startswith("/api/v1/") and not template.startswith("/api/v1/"):
            template = "/api/v1" + template  # routes of an included router lack the prefix
        client = scope.get("client")
        entry: dict[str, Any] = {
            "actor": "anonymous", "actor_id": None, "org": None,
            "source": "api" if path.startswith("/api/") else "portal",
            "action": f"{scope['method']} {template}",
            "target": path.removeprefix("/api/v1"), "outcome": str(status),
            "ip": client[0] if client else None, "detail": None,
        }
        fields = _json_fields(body, headers)
        if isinstance(fields.get("name"), str) and scope["method"] == "POST":
            entry["target"] = f"{entry['target'].rstrip('/')}/{fields['name']}"
        safe = {k: fields[k] for k in SAFE_FIELDS if k in fields}
        entry["detail"] = safe or None
        with self.runtime.sessions() as session:
            if path == "/login":
                _login(session, entry, body, status)
            elif path.startswith("/api/v1/agent/"):
                _agent(session, entry, headers, fields)
            else:
                _person(session, entry, headers)
            isv = scope.get("path_params", {}).get("isv")
            if entry["org"] is None and isinstance(isv, str):
                entry["org"] = session.scalar(select(Isv.id).where(Isv.name == isv))
        # many requests' entries share one commit when they arrive together
        service.appender(self.runtime).append(entry)


def _json_fields(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    if not body or "json" not in headers.get("content-type", "") or len(body) >= MAX_BODY:
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _token(headers: dict[str, str]) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE)


def _person(session: Session, entry: dict[str, Any], headers: dict[str, str]) -> None:
    """The token's user, valid or not: the status code says whether it was let in."""
    token = _token(headers)
    if not token:
        return
    user = session.scalar(select(User).join(ApiToken, ApiToken.user_id == User.id)
                          .where(ApiToken.token_hash == token_hash(token)))
    if user is not None:
        entry.update(actor=user.username, actor_id=user.id, org=user.isv_id)
    else:
        entry["actor"] = "unknown-token"


def _agent(session: Session, entry: dict[str, Any], headers: dict[str, str],
           fields: dict[str, Any]) -> None:
    entry["source"] = "agent"
    token = _token(headers)
    host = (session.scalar(select(Host).where(Host.agent_token_hash == token_hash(token)))
            if token else None)
    if host is not None:
        entry.update(actor=f"agent:{host.name}", actor_id=host.id)
    elif isinstance(fields.get("name"), str):
        entry["actor"] = f"agent:{fields['name'][:100]}"


def _login(session: Session, entry: dict[str, Any], body: bytes, status: int) -> None:
    form = parse_qs(body.decode("utf-8", "replace"))
    username = (form.get("username") or [""])[0][:100]
    user = session.scalar(select(User).where(User.username == username)) if username else None
    ok = status == 303
    entry.update(action="login" if ok else "login.failed", actor=username or "anonymous",
                 actor_id=user.id if user else None, org=user.isv_id if user else None,
                 target=f"user:{username}", outcome="ok" if ok else "denied",
                 detail={"status": status})
