"""The platform use cases, fast: a real PostgreSQL, each test in a transaction rolled back.

What a user relies on: names are unique per ISV, bad references name their field and
change nothing, a platform is placed on an online host of its region with its own ports and
a queued job, and another ISV's platform does not exist for you."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tenantry.access.principal import Principal
from tenantry.core.errors import Conflict, InvalidInput, NotFound, Unavailable
from tenantry.core.models import Event, Job
from tenantry.core.runtime import Runtime
from tenantry.platforms import service
from tenantry.platforms.models import App, Host, Isv, Platform, PortAllocation, Region, Release
from tenantry.platforms.schemas import IsvCreate, PlatformCreate, PlatformUpgrade, TenantCreate
from tests.conftest import rolled_back, store_runtime

pytestmark = pytest.mark.slow

ADMIN = Principal(user_id="u-admin", username="ada", role="provider-admin")
MANIFEST: dict[str, Any] = {
    "name": "shop", "version": "1.0.0", "processes": {"web": ["python", "-m", "shop"]},
    "release_command": None, "health_path": "/health", "requirements": None, "wheels": None}


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    with store_runtime("tntsvc-") as rt:
        yield rt


@pytest.fixture
def session(runtime: Runtime) -> Iterator[Session]:
    with rolled_back(runtime) as s:
        yield s


def _isv(session: Session, name: str = "acme", tenants: tuple[str, ...] = ("t1",)) -> str:
    service.create_isv(session=session, principal=ADMIN, spec=IsvCreate(name=name))
    for tenant in tenants:
        service.create_tenant(session=session, principal=ADMIN, isv=name,
                              spec=TenantCreate(name=tenant))
    isv_id = session.scalar(select(Isv.id).where(Isv.name == name))
    assert isv_id is not None
    for app, version in (("shop", "1.0.0"), ("shop", "1.1.0"), ("other", "1.0.0")):
        row = session.scalar(select(App).where(App.isv_id == isv_id, App.name == app))
        if row is None:
            row = App(id=f"a-{name}-{app}", isv_id=isv_id, name=app)
            session.add(row)
            session.flush()
        session.add(Release(id=f"r-{name}-{app}-{version}", app_id=row.id, version=version,
                            digest="sha256:" + "0" * 64,
                            manifest={**MANIFEST, "name": app, "version": version}))
    session.commit()
    return isv_id


def _host(session: Session, state: str = "online") -> Host:
    region = Region(id="g-local", name="local")
    host = Host(id="h-1", name="h1", region=region, ingress_port=8443, port_min=21000,
                port_max=21009, agent_token_hash="x" * 64, state=state)
    session.add(host)
    session.commit()
    return host


def _create(session: Session, isv: str = "acme", **spec: Any) -> tuple[Any, int]:
    body = {"tenants": ["t1"], "app": "shop@1.0.0", **spec}
    return service.create_platform(session=session, principal=ADMIN, isv=isv,
                                   spec=PlatformCreate.model_validate(body),
                                   secrets=session.info["tenantry.runtime"].secrets,
                                   domain="localhost")


def _count(session: Session, table: Any) -> int:
    return session.scalar(select(func.count()).select_from(table)) or 0


def test_an_isv_name_is_unique_and_a_second_try_changes_nothing(session: Session) -> None:
    service.create_isv(session=session, principal=ADMIN, spec=IsvCreate(name="acme"))
    events = _count(session, Event)
    with pytest.raises(Conflict) as caught:
        service.create_isv(session=session, principal=ADMIN, spec=IsvCreate(name="acme"))
    assert caught.value.field == "name"
    assert _count(session, Isv) == 1 and _count(session, Event) == events


def test_each_test_starts_from_the_same_store(session: Session) -> None:
    assert _count(session, Isv) == 0  # the test above was rolled back


def test_a_platform_is_placed_with_its_own_ports_and_a_queued_job(session: Session) -> None:
    _isv(session)
    _host(session)
    platform, job_id = _create(session)
    assert (platform.state, platform.host, platform.url) == (
        "creating", "h1", "https://t1.acme.localhost:8443/")
    ports = session.scalars(select(PortAllocation.port).where(
        PortAllocation.platform_id == platform.id)).all()
    assert len(ports) == 2 and all(21000 <= p <= 21009 for p in ports)  # database + web
    job = session.get(Job, job_id)
    assert job is not None and job.kind == "create" and job.state == "queued"
    assert [s.name for s in job.steps] == ["place", "database", "build", "migrate", "start",
                                           "route", "health", "backup"]
    kinds = session.scalars(select(Event.kind).where(Event.platform_id == platform.id)).all()
    assert kinds == ["PLATFORM_CREATED"]


@pytest.mark.parametrize(("spec", "error", "field"), [
    ({"tenants": ["nobody"]}, NotFound, "tenants"),
    ({"app": "shop@9.9.9"}, NotFound, "app"),
    ({"region": "mars"}, NotFound, "region"),
])
def test_a_bad_reference_names_its_field_and_creates_nothing(
        session: Session, spec: dict[str, Any], error: type[Exception], field: str) -> None:
    _isv(session)
    _host(session)
    with pytest.raises(error) as caught:
        _create(session, **spec)
    assert getattr(caught.value, "field", None) == field
    assert _count(session, Platform) == 0 and _count(session, Job) == 0


def test_no_online_host_is_unavailable_not_half_made(session: Session) -> None:
    _isv(session)
    _host(session, state="offline")
    with pytest.raises(Unavailable) as caught:
        _create(session)
    assert caught.value.field == "region"
    assert _count(session, Platform) == 0 and _count(session, PortAllocation) == 0


def test_a_platform_name_is_unique_within_its_isv(session: Session) -> None:
    _isv(session)
    _host(session)
    _create(session)
    with pytest.raises(Conflict) as caught:
        _create(session)
    assert caught.value.field == "name"


def test_upgrades_go_to_another_version_of_the_same_app(session: Session) -> None:
    _isv(session)
    _host(session)
    platform, create_job = _create(session)
    session.get(Platform, platform.id).state = "ready"  # type: ignore[union-attr]
    session.get(Job, create_job).state = "succeeded"  # type: ignore[union-attr]
    session.commit()
    for app, error in (("shop@1.0.0", Conflict), ("other@1.0.0", InvalidInput)):
        with pytest.raises(error) as caught:
            service.upgrade_platform(session=session, principal=ADMIN, ref=f"acme/{platform.name}",
                                     spec=PlatformUpgrade(app=app), domain="localhost")
        assert caught.value.field == "app"  # type: ignore[attr-defined]
    upgraded, job_id = service.upgrade_platform(
        session=session, principal=ADMIN, ref=f"acme/{platform.name}",
        spec=PlatformUpgrade(app="shop@1.1.0"), domain="localhost")
    assert upgraded.state == "upgrading"
    with pytest.raises(Conflict, match="busy with another job"):
        service.stop_platform(session=session, principal=ADMIN, ref=upgraded.id,
                              domain="localhost")


def test_another_isvs_platform_does_not_exist_for_you(session: Session) -> None:
    _isv(session, "acme")
    other = _isv(session, "globex")
    _host(session)
    platform, _ = _create(session, isv="acme")
    stranger = Principal(user_id="u-g", username="gina", role="isv-admin", isv_id=other)
    with pytest.raises(NotFound):
        service.get_platform(session, stranger, f"acme/{platform.name}")
    with pytest.raises(NotFound):
        service.get_platform(session, stranger, platform.id)
    assert service.list_platforms(session=session, principal=stranger,
                                  filters=service.PlatformFilter(), domain="localhost") == []


def test_exits_of_ups_own_processes_are_events_on_its_host(session: Session) -> None:
    """`up` tells the restarts of the API, the worker, the agent, the store and itself as the
    agent tells its programs': PROCESS_RESTARTED on its host, with how and how often."""
    import time

    from tenantry.platforms import hosts
    from tenantry.platforms.contract import ProcessExit

    def told() -> list[str]:
        return list(session.scalars(select(Event.message).where(
            Event.kind == "PROCESS_RESTARTED").order_by(Event.id)))

    killed = ProcessExit(program="tenantry-api", how="terminated by SIGKILL", at=time.time())
    assert not hosts.record_exits(session=session, host_name="h1", exits=[killed])
    assert told() == []  # not enrolled yet: kept by `up`, nothing told
    _host(session)
    assert hosts.record_exits(session=session, host_name="h1", exits=[
        killed, ProcessExit(program="tenantry-api", how="exit status 1", at=time.time())])
    first, second = told()
    assert first.startswith("tenantry-api on host h1 ended unexpectedly at ")
    assert "(terminated by SIGKILL)" in first and first.endswith("1 time(s) in the last hour")
    assert "(exit status 1)" in second and second.endswith("2 time(s) in the last hour")
