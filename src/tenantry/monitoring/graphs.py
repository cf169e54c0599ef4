"""A check's graph: its value series from Prometheus over a span, with its thresholds.

The caller names a check and a target they may see (a host, or a platform `ISV/NAME`); the
query is built here from those validated names, never taken from the caller.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from tenantry.access.principal import Principal
from tenantry.core import localhttp
from tenantry.core.errors import InvalidInput, NotFound, Unavailable
from tenantry.monitoring import catalog, local, rules
from tenantry.platforms.models import Host, Platform
from tenantry.platforms.service import get_platform

SPANS = {"1h": (3600, 15), "1d": (86400, 300), "1w": (604800, 1800), "1m": (2592000, 7200)}


class Series(BaseModel):
    labels: dict[str, str]
    points: list[tuple[float, float]]  # unix seconds, value


class Graph(BaseModel):
    check: str
    target: str
    unit: str
    span: str
    busy: float | None
    overloaded: float
    series: list[Series]


def _target(session: Session, principal: Principal, check: catalog.Check, host: str | None,
            platform: str | None) -> tuple[str, str]:
    if check.kind is catalog.TargetKind.HOST:
        if host is None or platform is not None:
            raise InvalidInput(f"check {check.name!r} is of a host: give host", field="host")
        if len(host) > 40 or not catalog.TARGET_RE.fullmatch(host):
            raise InvalidInput("host must be a plain name", field="host")
        visible = select(Host.id).where(Host.name == host)
        if not principal.is_provider:
            principal.require("view")
            visible = visible.where(Host.id.in_(select(Platform.host_id).where(
                Platform.isv_id == principal.isv_id)))
        if session.scalar(visible) is None:
            raise NotFound(f"no host named {host!r}", field="host")
        return f'host="{host}"', host
    if platform is None or host is not None:
        raise InvalidInput(f"check {check.name!r} is of a platform: give platform",
                           field="platform")
    found = get_platform(session, principal, platform)
    name = f"{found.isv.name}/{found.name}"
    return f'platform="{name}"', name


def graph(*, session: Session, principal: Principal, data_dir: Path, check: str,
          host: str | None, platform: str | None, span: str) -> Graph:
    checks = catalog.catalog()
    found = checks.get(check)
    if found is None:
        raise InvalidInput(f"unknown check {check!r}", field="check")
    if span not in SPANS:
        raise InvalidInput(f"range must be one of {', '.join(SPANS)}", field="range")
    matcher, target = _target(session, principal, found, host, platform)
    urls = local.StackUrls.load(data_dir)
    if urls is None:
        raise Unavailable("monitoring is not running on this control plane")
    seconds, step = SPANS[span]
    end = time.time()
    query = f'{rules.VALUE}{{check="{check}", {matcher}}}'
    try:
        r = localhttp.client().get(f"{urls.prometheus}/api/v1/query_range", timeout=10, params={
            "query": query, "start": end - seconds, "end": end, "step": step})
        r.raise_for_status()
        result = r.json()["data"]["result"]
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        raise Unavailable(f"Prometheus did not answer: {exc}") from exc
    keep = ("mountpoint", "device", "server", "instance")
    series = [Series(labels={k: v for k, v in s["metric"].items() if k in keep},
                     points=[(float(t), float(v)) for t, v in s["values"]])
              for s in result]
    return Graph(check=check, target=target, unit=found.unit, span=span, busy=found.busy,
                 overloaded=found.overloaded, series=series)
