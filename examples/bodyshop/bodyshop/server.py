"""The bodyshop web server: stdlib HTTP plus psycopg, small enough to idle at ~20 MiB.

DATABASE_URL=postgresql://... PORT=8080 python -m bodyshop.server
"""

from __future__ import annotations

import html
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg

from bodyshop import STAGES, VERSION, jobs, photos

MAX_BODY = 64 * 1024
MAX_IDLE_CONNECTIONS = 4


class Database:
    """A handful of reusable connections; a connection that failed is dropped, not reused."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            conn = psycopg.connect(self._url, connect_timeout=5)
        reusable = False
        try:
            with conn.transaction():
                yield conn
            reusable = True
        except psycopg.Error:
            raise
        except BaseException:
            reusable = True  # the transaction rolled back; the connection itself is fine
            raise
        finally:
            with self._lock:
                if reusable and not conn.closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
                    self._idle.append(conn)
                    conn = None
            if conn is not None:
                conn.close()


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"code": code, "message": message, "field": field}}


class _Sent(Exception):
    """The response went out already (a photo's bytes)."""


class Handler(BaseHTTPRequestHandler):
    server_version = f"bodyshop/{VERSION}"
    protocol_version = "HTTP/1.1"
    # The ingress keeps its connection to the app. A response goes out as two writes (the
    # headers, then the body); with Nagle's algorithm the body waited for the ingress to
    # acknowledge the headers, which Linux delays up to 40 ms, so every request but the
    # first on a kept connection took 44 ms instead of 2.
    disable_nagle_algorithm = True
    db: Database  # set on the class by main()

    # --- plumbing ---------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        self._started = time.monotonic()
        url = urlsplit(self.path)
        try:
            status, body = self._route(method, url.path, parse_qs(url.query))
        except _Sent:
            return
        except HttpError as exc:
            status, body = exc.status, exc.body
        except jobs.Invalid as exc:
            status = 422
            body = {"error": {"code": "invalid_input", "message": exc.message, "field": exc.field}}
        except psycopg.Error as exc:
            print(f"database error: {type(exc).__name__}", file=sys.stderr, flush=True)
            status = 503
            body = {
                "error": {"code": "unavailable", "message": "database unavailable", "field": None}
            }
        if isinstance(body, str):
            self._send(status, body.encode(), "text/html; charset=utf-8")
        else:
            self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _json_body(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise HttpError(400, "bad_request", "bad Content-Length") from None
        if length > MAX_BODY:
            self.close_connection = True
            raise HttpError(413, "too_large", "body is larger than 64 KiB")
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise jobs.Invalid("body must be JSON", None) from None

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        elapsed = (time.monotonic() - getattr(self, "_started", time.monotonic())) * 1000
        path = self.path.split("?", 1)[0] if hasattr(self, "path") else "-"
        command = getattr(self, "command", None) or "-"
        print(f"{self.client_address[0]} {command} {path} {code} {elapsed:.1f}ms", flush=True)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        print(f"{self.client_address[0]} {format % args}", file=sys.stderr, flush=True)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    # --- routes -----------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if parts == []:
            self._allow(method, "GET")
            return 200, self._index()
        if parts == ["health"]:
            self._allow(method, "GET")
            return self._health()
        if parts == ["api", "jobs"]:
            self._allow(method, "GET", "POST")
            if method == "POST":
                job = jobs.validate_new(self._json_body())
                with self.db.connection() as conn:
                    return 201, jobs.create(conn, job)
            stage = query.get("stage", [None])[0]
            with self.db.connection() as conn:
                return 200, jobs.list_jobs(conn, stage)
        if len(parts) in (4, 5) and parts[:2] == ["api", "jobs"] and parts[3] == "photos":
            return self._photos(method, parts)
        if len(parts) == 3 and parts[:2] == ["api", "jobs"]:
            self._allow(method, "GET", "PATCH")
            job_id = int(parts[2]) if parts[2].isdigit() and len(parts[2]) < 19 else None
            if method == "PATCH":
                change = jobs.validate_change(self._json_body())
            if job_id is not None:
                with self.db.connection() as conn:
                    if method == "PATCH":
                        found = jobs.change(conn, job_id, change)
                    else:
                        found = jobs.get(conn, job_id)
                if found is not None:
                    return 200, found
            raise HttpError(404, "not_found", f"no job {parts[2]!r}", "id")
        raise HttpError(404, "not_found", "no such page")

    def _photos(self, method: str, parts: list[str]) -> tuple[int, Any]:
        """POST /api/jobs/{id}/photos (the image as the body), GET .../photos (the list),
        GET .../photos/{name} (one image)."""
        self._allow(method, "GET", "POST" if len(parts) == 4 else "GET")
        job_id = int(parts[2]) if parts[2].isdigit() and len(parts[2]) < 19 else None
        found = None
        if job_id is not None:
            with self.db.connection() as conn:
                found = jobs.get(conn, job_id)
        if job_id is None or found is None:
            raise HttpError(404, "not_found", f"no job {parts[2]!r}", "id")
        store = photos.Store.from_env()
        if store is None:
            raise HttpError(503, "unavailable", "no files directory (TENANTRY_FILES_DIR)")
        if len(parts) == 5:
            data = store.read(job_id, parts[4])
            if data is None:
                raise HttpError(404, "not_found", f"no photo {parts[4]!r}", "name")
            content, kind = data
            self._send(200, content, kind)
            raise _Sent()
        if method == "POST":
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                raise HttpError(400, "bad_request", "bad Content-Length") from None
            if length > photos.MAX_BYTES:
                self.close_connection = True
                if length <= 4 * photos.MAX_BYTES:  # read it, so the client hears why
                    while length > 0:
                        length -= len(self.rfile.read(min(length, 2**20))) or length
                raise HttpError(413, "too_large",
                                f"a photo is at most {photos.MAX_BYTES // 2**20} MiB", "body")
            body = self.rfile.read(length) if length > 0 else b""
            return 201, store.add(job_id, body, self.headers.get("Content-Type", ""))
        return 200, store.list(job_id)

    def _allow(self, method: str, *allowed: str) -> None:
        if method not in allowed:
            raise HttpError(405, "method_not_allowed", f"use {' or '.join(allowed)}")

    def _health(self) -> tuple[int, Any]:
        try:
            with self.db.connection() as conn:
                conn.execute("SELECT 1").fetchone()
        except psycopg.Error:
            return 503, {"status": "unavailable", "version": VERSION}
        return 200, {"status": "ok", "version": VERSION}

    def _index(self) -> str:
        with self.db.connection() as conn:
            rows = jobs.list_jobs(conn, None)
        e = html.escape
        body = "".join(
            f"<tr><td>{r['id']}</td><td>{e(r['registration'])}</td><td>{e(r['customer'])}</td>"
            f"<td>{e(r['stage'])}</td></tr>"
            for r in rows
        )
        counts = " · ".join(f"{s}: {sum(r['stage'] == s for r in rows)}" for s in STAGES)
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>bodyshop</title></head>"
            f"<body><h1>bodyshop {e(VERSION)}</h1><p>{counts}</p>"
            "<table><thead><tr><th>#</th><th>registration</th><th>customer</th><th>stage</th>"
            f"</tr></thead><tbody>{body}</tbody></table></body></html>"
        )


def main() -> int:
    url = os.environ.get("DATABASE_URL")
    if not url:
        print("bodyshop: DATABASE_URL is not set", file=sys.stderr)
        return 2
    port = int(os.environ.get("PORT", "8080"))
    Handler.db = Database(url)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    # SIGTERM from the service manager: finish the current request, then exit 0.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"bodyshop {VERSION} listening on 127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
