"""The control plane's HTTP service discovery for Prometheus: what to scrape and probe.

One document per job (`prometheus.SD_JOBS`). Hosts tell where their exporters listen in
every report (`HostObserved.monitoring`); every enrolled host stays listed while it is
offline, so its heartbeat alert fires rather than its series vanishing. Platforms are probed
through their host's ingress while they should run; a destroyed or stopped one drops out
at the next refresh (5 s).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tenantry.core.errors import NotFound
from tenantry.monitoring.prometheus import SD_JOBS, SdDocument, SdGroup
from tenantry.platforms.models import Host, Isv, Platform, Region

PROBED_STATES = frozenset({"ready", "upgrading", "failed"})


def sd_document(session: Session, job: str) -> SdDocument:
    if job not in SD_JOBS:
        raise NotFound(f"no discovery for job {job!r}; one of {', '.join(SD_JOBS)}",
                       field="job")
    hosts = session.execute(select(Host, Region.name).join(Region).order_by(Host.name)).all()
    groups: list[SdGroup] = []
    if job in ("node", "agent", "postgres"):
        for host, region in hosts:
            where = host.observed.monitoring.get(job) if host.observed else None
            if where:
                groups.append(SdGroup(targets=[where], labels={
                    "kind": "host", "host": host.name, "region": region}))
    elif job == "probe_proxy":
        for host, region in hosts:
            groups.append(SdGroup(targets=[f"{host.address}:{host.ingress_port}"], labels={
                "kind": "host", "host": host.name, "region": region}))
    else:  # probe_platform
        rows = session.execute(
            select(Platform, Isv.name, Host, Region.name).join(Isv)
            .join(Host, Host.id == Platform.host_id).join(Region, Region.id == Host.region_id)
            .where(Platform.state.in_(PROBED_STATES)).order_by(Isv.name, Platform.name))
        for platform, isv, host, region in rows:
            name = platform.desired.hostname
            if not name or not platform.desired.running:
                continue
            groups.append(SdGroup(
                targets=[f"https://{host.address}:{host.ingress_port}/health"],
                labels={"kind": "platform", "host": host.name, "region": region, "isv": isv,
                        "platform": f"{isv}/{platform.name}", "server_name": name}))
    return SdDocument(groups)
