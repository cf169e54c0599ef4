"""The control plane's HTTP service discovery for Prometheus: what to scrape and probe.

One document per job (`prometheus.SD_JOBS`). Hosts tell where their exporters listen in
every report (`HostObserved.monitoring`); every enrolled host stays listed while it is
offline, so its heartbeat alert fires rather than its series vanishing. Platforms are probed
by their host's agent (agent/prober.py), whose /metrics carries the results.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tenantry.core.errors import NotFound
from tenantry.monitoring.prometheus import SD_JOBS, SdDocument, SdGroup
from tenantry.platforms.models import Host, Region


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
    else:  # probe_proxy
        for host, region in hosts:
            groups.append(SdGroup(targets=[f"{host.address}:{host.ingress_port}"], labels={
                "kind": "host", "host": host.name, "region": region}))
    return SdDocument(groups)
