"""Choosing a host for a platform and handing out its ports."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from tenantry.core.errors import Unavailable
from tenantry.platforms.contract import DatabaseSpec, DesiredSlot, DesiredState
from tenantry.platforms.models import Host, Platform, PortAllocation

WEB_PROCESSES = {"s": 1, "m": 2, "l": 3}


def place(session: Session, platform: Platform) -> None:
    """Pick the least loaded online host of the platform's region and reserve its ports."""
    if platform.host_id is not None:
        return
    load = (select(Platform.host_id, func.count().label("n")).group_by(Platform.host_id)
            .subquery())
    host = session.scalar(
        select(Host).outerjoin(load, load.c.host_id == Host.id)
        .where(Host.region_id == platform.region.id, Host.state == "online")
        .order_by(func.coalesce(load.c.n, 0), Host.name).limit(1))
    if host is None:
        raise Unavailable(f"no host is online in region {platform.region.name}", field="region")
    platform.host = host
    platform.desired_at = None  # a stamp of another host's generations
    db_port = allocate_ports(session, host, platform.id, "db", 1)[0]
    web = allocate_ports(session, host, platform.id, "slot-a", WEB_PROCESSES[platform.size])
    platform.desired = DesiredState(
        gen=1, db=DatabaseSpec(port=db_port), releases=[platform.release.id],
        slots={"a": DesiredSlot(release_id=platform.release.id, ports=web)})


def allocate_ports(session: Session, host: Host, platform_id: str, purpose: str,
                   count: int, avoid: Collection[int] = ()) -> list[int]:
    """The lowest free ports of the host's range; an advisory lock serialises allocators."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:a))"), {"a": host.address})
    taken = set(session.scalars(select(PortAllocation.port)
                                .where(PortAllocation.address == host.address)))
    # Ports the agent saw held by other programs on the machine are not ours to give.
    taken.update(host.observed.busy_ports)
    taken.update(avoid)
    ports: list[int] = []
    for port in range(host.port_min, host.port_max + 1):
        if port not in taken:
            ports.append(port)
            session.add(PortAllocation(address=host.address, port=port, platform_id=platform_id,
                                       purpose=purpose))
            if len(ports) == count:
                session.flush()
                return ports
    raise Unavailable(f"host {host.name} has no free ports left in "
                      f"{host.port_min}-{host.port_max}")


def move_port(session: Session, host: Host, platform_id: str, port: int, purpose: str,
              avoid: Collection[int]) -> int:
    """Swap one allocated port for a fresh one; the old one stays reserved as unusable."""
    row = session.get(PortAllocation, (host.address, port))
    if row is not None:
        row.purpose, row.note = "taken", "held by another program on the host"
    return allocate_ports(session, host, platform_id, purpose, 1, avoid)[0]


def release_ports(session: Session, platform_id: str, purpose: str) -> None:
    for row in session.scalars(select(PortAllocation).where(
            PortAllocation.platform_id == platform_id, PortAllocation.purpose == purpose)):
        session.delete(row)
