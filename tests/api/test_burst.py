"""The API under a burst of agents larger than its store pool and its thread pool: no request
holds a store connection while it waits for a thread, so a burst is slow, never stuck.

Each request crosses the thread pool several times (the session dependency, the agent's
token check, the route). A check that kept its connection while its request queued for the
route's thread left every connection with a queued request and every thread waiting for a
connection, until the pool's timeout failed them (found by `bench/fleet.py` with 300
hosts: 312 requests failed after 30 s)."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import func, select

from tenantry.access.audit.models import AuditEntry
from tenantry.api.app import create_app
from tenantry.api.deps import SESSION_COOKIE
from tenantry.core.crypto import token_hash
from tenantry.core.db import make_engine, utcnow
from tenantry.core.names import new_id
from tenantry.core.runtime import database_url
from tenantry.monitoring import local
from tenantry.platforms.models import Host, Region
from tests.conftest import store_runtime

HOSTS = 150  # more than the 40 threads of the pool and the 4 connections below


def test_a_burst_of_heartbeats_beyond_the_pool_and_the_threads_all_succeed() -> None:
    with store_runtime("tn-burst-") as runtime:
        engine = make_engine(database_url(runtime.settings), pool_size=4, max_overflow=0,
                             pool_timeout=5)
        runtime.sessions.configure(bind=engine)
        tokens = [f"tna_burst_{i}" for i in range(HOSTS)]
        with runtime.sessions() as session:
            region = Region(id=new_id("g"), name="r1")
            session.add(region)
            session.add_all(Host(id=new_id("h"), name=f"h{i}", region=region,
                                 address="127.0.0.1", ingress_port=443, port_min=20000,
                                 port_max=20100, agent_token_hash=token_hash(token),
                                 state="online", last_seen_at=utcnow())
                            for i, token in enumerate(tokens))
            session.commit()
        app = create_app(runtime)

        async def burst() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://api",
                                         timeout=120) as client:
                return await asyncio.gather(*(
                    client.post("/api/v1/agent/report", json={},
                                headers={"Authorization": f"Bearer {token}"})
                    for token in tokens))

        try:
            answers = asyncio.run(burst())
        finally:
            engine.dispose()
        failed = [(r.status_code, r.text[:200]) for r in answers if r.status_code != 204]
        assert failed == []


def test_a_burst_of_alertmanager_webhooks_beyond_the_pool_all_get_their_answer() -> None:
    """Alertmanager's webhook is a mutating request, audited (its entry written with a store
    connection of its own) before its answer goes out. Its token check kept the connection
    it read with while the request queued for the route's thread: a burst left every
    connection with a request queued for a thread, and every thread with an audit entry
    waiting for a connection, until the pool's timeout failed them all. `up` on 100
    platforms stalled so when the webhooks of its platforms' alerts arrived together (found
    by `bench/density.py --count 100 --restart`)."""
    with store_runtime("tn-burst-hook-") as runtime:
        engine = make_engine(database_url(runtime.settings), pool_size=4, max_overflow=0,
                             pool_timeout=5)
        runtime.sessions.configure(bind=engine)
        with runtime.sessions() as session:
            token = local.issue_tokens(session)["alertmanager"]
        app = create_app(runtime)
        payload = {"version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "r",
                   "groupLabels": {}, "alerts": []}

        async def burst() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://api",
                                         timeout=120) as client:
                return await asyncio.gather(*(
                    client.post("/api/v1/monitoring/alertmanager", json=payload,
                                headers={"Authorization": f"Bearer {token}"})
                    for _ in range(HOSTS)))

        try:
            answers = asyncio.run(burst())
            with runtime.sessions() as session:
                audited = session.scalar(select(func.count()).select_from(AuditEntry).where(
                    AuditEntry.action == "POST /api/v1/monitoring/alertmanager"))
        finally:
            engine.dispose()
        wrong = [(r.status_code, r.text[:200]) for r in answers if r.status_code != 200]
        assert wrong == []
        assert audited == HOSTS


def test_a_request_that_gets_no_store_connection_in_time_answers_503() -> None:
    """Overload is said as such (503 `unavailable`, Retry-After), never a 500."""
    with store_runtime("tn-busy-") as runtime:
        engine = make_engine(database_url(runtime.settings), pool_size=1, max_overflow=0,
                             pool_timeout=0.5)
        runtime.sessions.configure(bind=engine)
        app = create_app(runtime)
        held = engine.connect()  # the pool's only connection, taken
        try:
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

            async def ask() -> httpx.Response:
                async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
                    return await c.post("/api/v1/agent/report", json={},
                                        headers={"Authorization": "Bearer tna_x"})

            answer = asyncio.run(ask())
        finally:
            held.close()
            engine.dispose()
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "unavailable"
        assert answer.headers["retry-after"] == "5"


def test_a_burst_of_refused_callers_beyond_the_pool_all_get_their_refusal() -> None:
    """A refused check keeps the connection it read with until its request's session is
    closed. That close needs no thread of the shared pool (FastAPI runs a dependency's exit
    on a limiter of its own), so refused requests cannot hold every connection while they
    queue for a thread, as accepted ones did before `release_connection`: a burst of bad
    tokens (agents with an old token, browsers with an expired cookie, a revoked usage
    token) all get their refusal."""
    with store_runtime("tn-burst-refused-") as runtime:
        engine = make_engine(database_url(runtime.settings), pool_size=4, max_overflow=0,
                             pool_timeout=5)
        runtime.sessions.configure(bind=engine)
        app = create_app(runtime)

        async def burst() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://api",
                                         timeout=120) as client:
                agents = (client.post("/api/v1/agent/report", json={},
                                      headers={"Authorization": f"Bearer tna_old_{i}"})
                          for i in range(HOSTS))
                browsers = (client.get("/monitoring",
                                       cookies={SESSION_COOKIE: f"tns_expired_{i}"})
                            for i in range(HOSTS))
                usage = (client.post("/api/v1/usage", json={},
                                     headers={"Authorization": f"Bearer tnu_revoked_{i}"})
                         for i in range(HOSTS))
                return await asyncio.gather(*agents, *browsers, *usage)

        try:
            answers = asyncio.run(burst())
        finally:
            engine.dispose()
        wrong = [(r.request.url.path, r.status_code, r.text[:200]) for r in answers
                 if r.status_code not in (401, 303)]
        assert wrong == []
        assert sum(r.status_code == 303 for r in answers) == HOSTS  # to /login
