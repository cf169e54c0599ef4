"""The NOC console in the portal: the live status tree, a check's graph and alert history,
and the alert history with each alert's changes and notifications.

Every page is one fixed set of service calls (no query per row); only the graph and the
live refresh need JavaScript. The graph's data comes from `/monitoring/graph.json`, the
page router's twin of `/api/v1/monitoring/graph`: the portal holds a session cookie, never a
bearer token, so the browser cannot call the API itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Form, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy.orm import Session

from tenantry.access.principal import Principal
from tenantry.api.deps import RuntimeDep, SessionDep
from tenantry.api.errors import error_body
from tenantry.core.errors import InvalidInput, NotFound, TenantryError
from tenantry.monitoring import catalog, graphs, service
from tenantry.monitoring.schemas import CheckState, StatusPublic, ThresholdSet
from tenantry.platforms.service import get_platform
from tenantry.portal.web import (
    FormErrors,
    PageAdmin,
    PageViewer,
    check_csrf,
    form_value,
    page_router,
    render,
    submit,
)

router = page_router()
RangeParam = Annotated[str, Query(alias="range")]
SPAN_NAMES = {"1h": "hour", "1d": "day", "1w": "week", "1m": "month"}
OPEN_SHOWN = 50  # open alerts under the tree, newest first
HISTORY_SHOWN = 200


def _dashboard(session: Session, principal: Principal) -> dict[str, Any]:
    return {"status": service.status(session=session, principal=principal),
            "alerts": service.list_alerts(session=session, principal=principal,
                                          open_only=True, limit=OPEN_SHOWN)}


@router.get("/monitoring")
def dashboard(request: Request, session: SessionDep, principal: PageViewer) -> Response:
    return render(request, "monitoring.html", principal=principal,
                  **_dashboard(session, principal))


@router.get("/monitoring/tree")
def dashboard_live(request: Request, session: SessionDep, principal: PageViewer) -> Response:
    """The dashboard's live part, which the page polls."""
    return render(request, "_monitoring_live.html", principal=principal,
                  **_dashboard(session, principal))


# ---------------------------------------------------------------- one check of one target


@dataclass(frozen=True)
class CheckTarget:
    check: catalog.Check
    host: str | None
    platform: str | None  # ISV/NAME

    @property
    def name(self) -> str:
        return self.host or self.platform or ""

    @property
    def query(self) -> str:
        """The query string naming the check and its target (for links and the graph)."""
        where = {"host": self.host} if self.host else {"platform": self.platform or ""}
        return urlencode({"check": self.check.name, **where})


def _check_target(session: Session, principal: Principal, check: str, host: str | None,
                  platform: str | None) -> CheckTarget:
    found = catalog.catalog().get(check)
    if found is None:
        raise InvalidInput(f"unknown check {check!r}", field="check")
    if found.kind is catalog.TargetKind.HOST:
        if host is None or platform is not None:
            raise InvalidInput(f"check {check!r} is of a host: give host", field="host")
        return CheckTarget(found, host, None)
    if platform is None or host is not None:
        raise InvalidInput(f"check {check!r} is of a platform: give platform",
                           field="platform")
    visible = get_platform(session, principal, platform)
    return CheckTarget(found, None, f"{visible.isv.name}/{visible.name}")


def _current(tree: StatusPublic, target: CheckTarget) -> CheckState | None:
    """The check's state on its target now; NotFound for a host the caller does not see
    (the tree holds exactly the hosts they may see)."""
    for region in tree.regions:
        for host in region.hosts:
            if target.host is not None and host.name == target.host:
                return next((c for c in host.checks if c.check == target.check.name), None)
            for p in host.platforms:
                if target.platform is not None and p.name == target.platform:
                    return next((c for c in p.checks if c.check == target.check.name), None)
    if target.host is not None:
        raise NotFound(f"no host named {target.host!r}", field="host")
    return None  # a platform with no host yet


def _check_page(request: Request, session: Session, principal: Principal,
                target: CheckTarget, span: str, *, values: dict[str, str] | None = None,
                errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    current = _current(service.status(session=session, principal=principal), target)
    alerts = service.list_alerts(session=session, principal=principal,
                                 check=target.check.name, host=target.host,
                                 platform=target.platform, limit=100)
    isv = target.platform.partition("/")[0] if target.platform else None
    overrides = [t for t in service.list_thresholds(session=session, principal=principal,
                                                    check=target.check.name)
                 if (t.scope, t.target) in {("host", target.host), ("platform", target.platform),
                                            ("isv", isv)}]
    may_set = _may(principal, "admin") and (target.platform is not None
                                                   or principal.is_provider)
    return render(request, "monitoring_check.html", principal=principal, target=target,
                  current=current, alerts=alerts, spans=SPAN_NAMES,
                  span=span if span in SPAN_NAMES else "1h", overrides=overrides,
                  may_set=may_set, values=values or {}, errors=errors or {},
                  status_code=status_code)


def _may(principal: Principal, action: str) -> bool:
    try:
        principal.require(action)
    except TenantryError:
        return False
    return True


@router.get("/monitoring/check")
def check_page(request: Request, session: SessionDep, principal: PageViewer,
               check: str = "", host: str = "", platform: str = "",
               range_: RangeParam = "1h") -> Response:
    """A check on a host or platform: its state, its graph, its thresholds and alerts."""
    target = _check_target(session, principal, check.strip(), form_value(host),
                           form_value(platform))
    return _check_page(request, session, principal, target, range_)


@router.post("/monitoring/check")
def set_threshold(request: Request, session: SessionDep, principal: PageAdmin,
                  check: Annotated[str, Form()] = "", host: Annotated[str, Form()] = "",
                  platform: Annotated[str, Form()] = "", busy: Annotated[str, Form()] = "",
                  overloaded: Annotated[str, Form()] = "", clear: Annotated[str, Form()] = "",
                  csrf: Annotated[str, Form()] = "") -> Response:
    """Override the check's thresholds for this host or platform (the form on its page)."""
    check_csrf(request, csrf)
    target = _check_target(session, principal, check.strip(), form_value(host),
                           form_value(platform))
    values = {"busy": busy, "overloaded": overloaded, "clear": clear}
    made = submit(lambda: service.set_threshold(
        session=session, principal=principal, spec=ThresholdSet.model_validate({
            "check": target.check.name, "host": target.host, "platform": target.platform,
            **{k: v.strip() for k, v in values.items() if v.strip()}})),
        fields=("busy", "overloaded", "clear"))
    if isinstance(made, FormErrors):
        session.rollback()
        return _check_page(request, session, principal, target, "1h", values=values,
                           errors=made.errors, status_code=made.status)
    return RedirectResponse(f"/monitoring/check?{target.query}#thresholds", status_code=303)


@router.get("/monitoring/graph.json")
def graph_json(session: SessionDep, principal: PageViewer, runtime: RuntimeDep,
               check: str = "", host: str = "", platform: str = "",
               range_: RangeParam = "1h") -> Response:
    """The drilldown's graph data: `graphs.graph` as JSON, its refusals in the API's error
    shape (the portal's HTML error page would mean nothing to the script)."""
    try:
        graph = graphs.graph(session=session, principal=principal,
                             data_dir=runtime.settings.data_dir, check=check.strip(),
                             host=form_value(host), platform=form_value(platform),
                             span=range_)
    except TenantryError as exc:
        return JSONResponse(error_body(exc.code, exc.message, exc.field),
                            status_code=exc.status, headers={"Cache-Control": "no-store"})
    return JSONResponse(graph.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------- alert history


@router.get("/monitoring/alerts")
def alert_list(request: Request, session: SessionDep, principal: PageViewer,
               platform: str = "", host: str = "", check: str = "",
               open_: Annotated[str, Query(alias="open")] = "") -> Response:
    platform_ref, host_ref, check_ref = form_value(platform), form_value(host), form_value(check)
    open_only = form_value(open_) is not None
    alerts = service.list_alerts(session=session, principal=principal, platform=platform_ref,
                                 host=host_ref, check=check_ref, open_only=open_only,
                                 limit=HISTORY_SHOWN)
    filters = {"platform": platform_ref, "host": host_ref, "check": check_ref,
               "open": open_only}
    tree = service.status(session=session, principal=principal)
    hosts = [h.name for r in tree.regions for h in r.hosts]
    platforms = sorted(p.name for r in tree.regions for h in r.hosts for p in h.platforms)
    return render(request, "monitoring_alerts.html", principal=principal, alerts=alerts,
                  filters=filters, hosts=hosts, platforms=platforms,
                  checks=list(catalog.catalog()), filtered=any(filters.values()),
                  shown=HISTORY_SHOWN)


@router.get("/monitoring/alerts/{alert_id}")
def alert_detail(request: Request, session: SessionDep, principal: PageViewer,
                 alert_id: Annotated[int, PathParam(ge=1, le=2**31 - 1)]) -> Response:
    alert = service.get_alert(session=session, principal=principal, alert_id=alert_id)
    where = {"host": alert.host} if alert.kind == "host" else {"platform": alert.platform}
    graph_query = None  # the drilldown, when the alert names a known check and its target
    if alert.check in catalog.catalog() and all(where.values()):
        graph_query = urlencode({"check": alert.check, **where})
    return render(request, "monitoring_alert.html", principal=principal, alert=alert,
                  graph_query=graph_query)
