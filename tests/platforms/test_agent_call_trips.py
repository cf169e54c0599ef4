"""An agent's long poll takes one trip to the API's thread pool, none after its wait when it
ends with nothing new, and its heartbeat two (the token's check, the report's record).

Every trip waits for the GIL behind the other requests' threads. At 1,000 hosts
(bench/fleet.py) the route's session and the token check as sync dependencies were three
trips for a long poll (one after its wait) and four for a heartbeat: the long polls came
back 0.17 s after their wait at the median and 2 s at p99."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import httpx
import pytest
from sqlalchemy import select

from tenantry.api.app import create_app
from tenantry.core.crypto import token_hash
from tenantry.core.names import new_id
from tenantry.platforms.models import Host, Region
from tests.conftest import store_runtime

TOKEN = "tna_trips_counted"  # noqa: S105 - a test host's agent token


def test_a_long_poll_takes_one_trip_to_a_thread_and_a_heartbeat_two(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with store_runtime("tn-trip-") as runtime:
        with runtime.sessions() as session:
            region = Region(id=new_id("g"), name="r1")
            session.add_all([region, Host(id=new_id("h"), name="counted", region=region,
                                          address="127.0.0.1", ingress_port=443,
                                          port_min=20000, port_max=20100,
                                          agent_token_hash=token_hash(TOKEN), state="online")])
            session.commit()
            generation = session.scalars(select(Host.generation)).one()

        trips: list[str] = []
        real = anyio.to_thread.run_sync

        async def counted(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            trips.append(getattr(func, "__qualname__", repr(func)))
            return await real(func, *args, **kwargs)

        monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
        headers = {"Authorization": f"Bearer {TOKEN}"}

        async def calls() -> tuple[httpx.Response, list[str], httpx.Response, list[str]]:
            transport = httpx.ASGITransport(app=create_app(runtime))
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                beat = await client.post("/api/v1/agent/report", json={}, headers=headers)
                beat_trips = trips[:]
                trips.clear()
                poll = await client.get(
                    "/api/v1/agent/desired", params={"generation": generation, "wait": 0.5},
                    headers={**headers, "If-None-Match": f'"{generation}"'})
                return beat, beat_trips, poll, trips[:]

        beat, beat_trips, poll, poll_trips = asyncio.run(calls())
        assert beat.status_code == 204, beat.text
        assert len(beat_trips) == 2, beat_trips
        assert poll.status_code == 304, poll.text
        assert len(poll_trips) == 1, poll_trips

        # a call with a token of no host is refused in its one trip, and stores nothing
        trips.clear()

        async def stranger() -> httpx.Response:
            transport = httpx.ASGITransport(app=create_app(runtime))
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await client.post("/api/v1/agent/report", json={},
                                         headers={"Authorization": "Bearer tna_nobody"})

        refused = asyncio.run(stranger())
        assert refused.status_code == 401 and len(trips) == 1, (refused.text, trips)
