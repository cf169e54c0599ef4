"""A quiet heartbeat's pace is the control plane's to set: the larger the fleet, the slower,
so that what its idle hosts cost the API stops growing at QUIET_BEATS calls a second; a host is
called offline once three heartbeats at that pace are missed.

At 1,000 hosts a heartbeat from each every 6 s was four fifths of the API's calls and kept it
above a core (bench/fleet.py, docs/scaling.md)."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
from sqlalchemy import delete, select, update

from tenantry.api.app import create_app
from tenantry.core.crypto import token_hash
from tenantry.core.db import utcnow
from tenantry.core.models import Event
from tenantry.core.names import new_id
from tenantry.core.runtime import Runtime
from tenantry.platforms import hosts
from tenantry.platforms.contract import PACE_HEADER, QUIET_HEARTBEAT_RANGE
from tenantry.platforms.models import Host, Region
from tests.conftest import store_runtime

TOKEN = "tna_pace_beating"  # noqa: S105 - a test host's agent token


def test_a_fleets_quiet_heartbeats_stay_under_the_rate_and_within_the_range() -> None:
    assert hosts.quiet_heartbeat(1) == 6
    assert hosts.quiet_heartbeat(300) == 6, "up to 300 hosts, the agent's own pace"
    assert hosts.quiet_heartbeat(1000) == 20
    assert hosts.quiet_heartbeat(1_000_000) == QUIET_HEARTBEAT_RANGE[1]
    for fleet in (1, 299, 300, 301, 1000, 1001, 2999, 3000):
        assert fleet / hosts.quiet_heartbeat(fleet) <= hosts.QUIET_BEATS
    assert hosts.offline_after(6) == dt.timedelta(seconds=20), "as before, for a small fleet"
    assert hosts.offline_after(20) > dt.timedelta(seconds=3 * 20)


def _host(region: Region, name: str, seen_ago: float, token: str = "") -> Host:
    return Host(id=new_id("h"), name=name, region=region, address="127.0.0.1",
                ingress_port=443, port_min=20000, port_max=20100,
                agent_token_hash=token_hash(token or new_id("tna")), state="online",
                last_seen_at=utcnow() - dt.timedelta(seconds=seen_ago))


def _offline(runtime: object, names: set[str]) -> set[str]:
    with runtime.sessions() as session:  # type: ignore[attr-defined]
        hosts.mark_offline_hosts(session=session)
        return set(session.scalars(select(Host.name).where(Host.state == "offline",
                                                           Host.name.in_(names))))


def _beat(runtime: Runtime) -> httpx.Response:
    """A quiet heartbeat of the host with the agent token TOKEN, through the real API app."""

    async def beat() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.post("/api/v1/agent/report", json={},
                                     headers={"Authorization": f"Bearer {TOKEN}"})

    return asyncio.run(beat())


def test_the_answer_to_a_heartbeat_gives_the_fleets_pace_and_offline_waits_for_it() -> None:
    with store_runtime("tn-pace-") as runtime:
        with runtime.sessions() as session:
            region = Region(id=new_id("g"), name="r1")
            session.add_all([region, _host(region, "late-a", 40),
                             _host(region, "beating", 0, token=TOKEN)])
            session.commit()
        # a small fleet: 40 s without a heartbeat is offline (20 s at the 6 s pace)
        assert _offline(runtime, {"late-a", "beating"}) == {"late-a"}

        with runtime.sessions() as session:
            region = session.scalars(select(Region)).one()
            session.add_all([_host(region, f"idle-{i}", 0) for i in range(996)])
            session.add_all([_host(region, "late-b", 40), _host(region, "gone", 70)])
            session.commit()

        answer = _beat(runtime)
        assert answer.status_code == 204, answer.text
        assert answer.headers[PACE_HEADER] == "20", "1,000 hosts: one quiet beat each 20 s"
        # at that pace 40 s is two heartbeats missed, not three: still online; 70 s is not
        assert _offline(runtime, {"late-b", "gone"}) == {"gone"}


def test_a_host_is_offline_by_the_pace_it_was_given_when_the_fleet_shrinks() -> None:
    """A host given a slow pace keeps it until its next heartbeat: when most of the fleet
    goes at once (and the fleet's pace with it), a quiet host is not called offline for
    keeping the pace it was given."""
    with store_runtime("tn-pace-") as runtime:
        with runtime.sessions() as session:
            region = Region(id=new_id("g"), name="r1")
            session.add_all([region, _host(region, "beating", 0, token=TOKEN)])
            session.add_all([_host(region, f"idle-{i}", 0) for i in range(999)])
            session.commit()

        assert _beat(runtime).headers[PACE_HEADER] == "20"
        with runtime.sessions() as session:
            assert session.scalars(select(Host.quiet_pace).where(Host.name == "beating")
                                   ).one() == 20
            # 900 hosts are removed; the rest is a small fleet, whose pace is 6 s
            session.execute(delete(Host).where(Host.name.in_(
                [f"idle-{i}" for i in range(900)])))
            region = session.scalars(select(Region)).one()
            told_six = _host(region, "told-six", 40)
            told_six.quiet_pace = 6
            session.add(told_six)
            session.execute(update(Host).where(Host.name == "beating").values(
                last_seen_at=utcnow() - dt.timedelta(seconds=40)))
            session.commit()
        assert hosts.quiet_heartbeat(101) == 6
        # 40 s is two of its 20 s heartbeats missed; three of 6 s for the other
        assert _offline(runtime, {"beating", "told-six"}) == {"told-six"}
        with runtime.sessions() as session:
            session.execute(update(Host).where(Host.name == "beating").values(
                last_seen_at=utcnow() - dt.timedelta(seconds=63)))
            session.commit()
        assert _offline(runtime, {"beating"}) == {"beating"}
        with runtime.sessions() as session:
            told = session.scalars(select(Event.message).where(
                Event.kind == "HOST_OFFLINE")).all()
        assert sorted(told) == ["host beating has not reported for 62 s",
                                "host told-six has not reported for 20 s"], told
