"""What one host costs the control plane must not grow with what the host holds.

A fleet of hosts each fetches its whole desired state now and then, and at once after a
change: its queries are a fixed number however many platforms the host carries (one query
per platform per fetch is what made one API process saturate at 300 hosts; bench/fleet.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlalchemy.orm import defer

from tenantry.platforms.contract import DatabaseSpec, DesiredSlot, DesiredState, StoredCert


@pytest.fixture(scope="module")
def store() -> Iterator[Any]:
    from tests.conftest import store_runtime

    with store_runtime("tnfc-") as runtime:
        yield runtime


def manifest(name: str) -> dict[str, Any]:
    """A release's manifest as stored: one web process, nothing else."""
    return {"name": name, "version": "1.0.0", "processes": {"web": ["x"]},
            "health_path": "/health", "release_command": None, "requirements": None,
            "wheels": None}


def _statements(runtime: Any) -> tuple[list[str], Any]:
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", count)
    return seen, lambda: event.remove(runtime.engine, "before_cursor_execute", count)


def _add_platforms(runtime: Any, first: int, count: int) -> None:
    """Platforms p<first>.. on host h1, placed and serving, alternately on release r1 and r2,
    each of ISV i1 or i2 (by parity) with two tenants of its ISV."""
    from tenantry.platforms.models import Platform, Tenant

    with runtime.sessions() as session:
        for n in range(first, first + count):
            isv = f"i{n % 2 + 1}"
            release = f"r{n % 2 + 1}"
            tenants = [session.get(Tenant, f"t{isv}{k}") for k in (2, 1)]
            want = DesiredState(
                gen=3, db=DatabaseSpec(port=21000 + n), releases=[release],
                slots={"a": DesiredSlot(release_id=release, ports=[22000 + n])},
                route_slot="a", running=True, placed_by=n, hostname=f"p{n}.example",
                cert=StoredCert(cert_pem=f"CERT {n}", key=runtime.secrets.encrypt(
                    f"KEY {n}", org=isv), not_after=dt.datetime(2030, 1, 1, tzinfo=dt.UTC)))
            session.add(Platform(id=f"p{n}", isv_id=isv, name=f"plat{n}", region_id="g1",
                                 release_id=release, host_id="h1", state="ready",
                                 db_password=runtime.secrets.encrypt(f"pw {n}", org=isv),
                                 desired=want, tenants=tenants))
        session.commit()


def test_a_hosts_document_costs_the_same_queries_for_2_and_for_12_platforms(
        store: Any) -> None:
    from tenantry.platforms.hosts import desired_state
    from tenantry.platforms.models import App, Host, Isv, Region, Release, Tenant

    with store.sessions() as session:
        region = Region(id="g1", name="local")
        session.add_all([region, Host(id="h1", name="local", region=region, ingress_port=8443,
                                      agent_token_hash="f" * 64)])
        for i in (1, 2):
            isv = Isv(id=f"i{i}", name=f"isv{i}")
            app = App(id=f"a{i}", isv=isv, name=f"app{i}")
            session.add_all([isv, app, Release(
                id=f"r{i}", app=app, version="1.0.0", digest="sha256:" + str(i) * 64,
                manifest=manifest(f"app{i}")),
                *[Tenant(id=f"ti{i}{k}", isv=isv, name=f"tenant{k}") for k in (1, 2)]])
        session.commit()

    def fetch() -> tuple[int, Any]:
        seen, stop = _statements(store)
        try:
            with store.sessions() as session:
                host = session.get(Host, "h1")
                seen.clear()  # the host's own row is the route's, not the document's
                doc = desired_state(session=session, host=host, secrets=store.secrets)
        finally:
            stop()
        return len(seen), doc

    _add_platforms(store, 0, 2)
    few, doc = fetch()
    assert [p.id for p in doc.platforms] == ["p0", "p1"]
    _add_platforms(store, 2, 10)
    many, doc = fetch()
    assert many == few, f"{few} queries for 2 platforms, {many} for 12"

    assert [p.id for p in doc.platforms] == [f"p{n}" for n in sorted(range(12), key=str)]
    for p in doc.platforms:  # each with its own release, tenants and secrets
        n = int(p.id[1:])
        assert p.isv == f"isv{n % 2 + 1}" and p.tenants == ["tenant1", "tenant2"]
        assert [(r.id, r.app, r.manifest.name) for r in p.releases] == \
            [(f"r{n % 2 + 1}", f"app{n % 2 + 1}", f"app{n % 2 + 1}")]
        assert p.database.password.get_secret_value() == f"pw {n}"
        assert p.route is not None and p.route.cert_pem == f"CERT {n}"
        assert p.route.key_pem.get_secret_value() == f"KEY {n}"


def test_a_change_of_one_platform_sends_that_platform_and_merges_to_the_whole(
        store: Any) -> None:
    """An agent that holds the whole document of generation G asks `since` G: it is sent
    the platforms whose desired state changed after G, built with the same fixed number of
    queries, and the ids of the others; applied to what it holds, that is the whole
    document of now. A platform with no stamp is always sent; a `since` the host never
    had gets the whole document."""
    from sqlalchemy import select

    from tenantry.platforms.hosts import bump, desired_state_of
    from tenantry.platforms.models import Platform

    def document(since: int | None = None) -> tuple[Any, int]:
        seen, stop = _statements(store)
        try:
            with store.sessions() as session:
                return desired_state_of(session=session, host_id="h1", secrets=store.secrets,
                                        since=since), len(seen)
        finally:
            stop()

    _add_platforms(store, 20, 6)  # p20..p25: on h1 whatever the test before left there
    with store.sessions() as session:
        for p in session.scalars(select(Platform).where(Platform.host_id == "h1")):
            bump(session, p)  # stamped: their documents are what the agent holds
        session.commit()
    held, whole_queries = document()
    assert held.since is None and held.unchanged == []
    every = [p.id for p in held.platforms]
    assert {"p20", "p25"} <= set(every)

    with store.sessions() as session:  # one platform changes
        p = session.get(Platform, "p23")
        p.desired = p.desired.model_copy(update={"running": False})
        bump(session, p)
        session.commit()
    change, change_queries = document(since=held.generation)
    assert change.generation == held.generation + 1 and change.since == held.generation
    assert [p.id for p in change.platforms] == ["p23"]
    assert change.platforms[0].running is False
    assert change.platforms[0].database.password.get_secret_value() == "pw 23"
    assert sorted(change.unchanged) == sorted(set(every) - {"p23"})
    assert change_queries <= whole_queries + 1  # and the ids of the unchanged ones
    now, _ = document()
    merged = change.merged(held)
    assert merged is not None and merged.since is None
    assert merged.model_dump(mode="json") == now.model_dump(mode="json")
    assert change.merged(now) is None, "a change to another generation is not applied"
    assert now.merged(held) is now, "a whole document is whole"

    with store.sessions() as session:  # no stamp (as after a move): always sent
        session.execute(update(Platform).where(Platform.id == "p21").values(desired_at=None))
        session.execute(update(Platform).where(Platform.id == "p24").values(host_id=None))
        session.commit()
    later, _ = document(since=now.generation)
    assert [p.id for p in later.platforms] == ["p21"]
    assert "p24" not in later.unchanged, "a platform gone from the host is in neither part"
    merged = later.merged(now)
    assert merged is not None and "p24" not in [p.id for p in merged.platforms]
    assert merged.model_dump(mode="json") == document()[0].model_dump(mode="json")

    ahead, _ = document(since=now.generation + 5)
    assert ahead.since is None and len(ahead.platforms) == len(merged.platforms)


def test_a_look_over_waiting_hosts_brings_back_only_those_that_changed(store: Any) -> None:
    """The API's generation watch asks ten times a second about every host whose agent
    long-polls: the store compares and sends back the changed ones, not a row per host."""
    from tenantry.platforms.agent_api import _generations
    from tenantry.platforms.models import Host, Region

    with store.sessions() as session:
        region = session.get(Region, "g1") or Region(id="g1", name="local")
        session.add_all([Host(id=f"w{i}", name=f"waiting{i}", region=region,
                              ingress_port=8443, agent_token_hash=f"{i:064x}", generation=5)
                         for i in range(200)])
        session.commit()
    held = {f"w{i}": 5 for i in range(200)}
    assert _generations(store, held) == {}
    with store.sessions() as session:
        for i in (7, 150):
            host = session.get(Host, f"w{i}")
            assert host is not None
            host.generation = 6
        session.commit()
    assert _generations(store, held) == {"w7": 6, "w150": 6}
    assert _generations(store, {**held, "w7": 6, "w9": -1}) == {"w150": 6, "w9": 5}
    assert _generations(store, {"nosuchhost": 1}) == {}


def test_a_heartbeat_writes_the_hosts_document_only_when_it_changed(store: Any) -> None:
    """A quiet host heartbeats every few seconds: its row's update is one statement that
    neither reads the host's document back nor writes it again when only the agent's clock
    moved; what changed (the disk's reserve, the host back online) is still told once."""
    from sqlalchemy import select

    from tenantry.core.models import Event
    from tenantry.platforms.contract import HostReport
    from tenantry.platforms.hosts import record_report
    from tenantry.platforms.models import Host, Region

    with store.sessions() as session:
        region = session.get(Region, "g1") or Region(id="g1", name="local")
        session.add(Host(id="hb", name="beating", region=region, ingress_port=8443,
                         agent_token_hash="e" * 64, state="offline"))
        session.commit()

    def beat(at: float, *, low: bool = False, error: str | None = None) -> list[str]:
        disk = {"path": "/srv", "total_bytes": 10 << 30, "free_bytes": 4 << 30,
                "reserve_bytes": 1 << 20, "low": low}
        seen, stop = _statements(store)
        try:
            with store.sessions() as session:
                host = session.get(Host, "hb", options=[defer(Host.observed)])
                seen.clear()  # the route's authentication
                record_report(session=session, host=host, report=HostReport.model_validate(
                    {"agent_time": at, "busy_ports": [5432], "disk": disk,
                     "ingress_error": error}), pace=6)
        finally:
            stop()
        return seen

    def stored() -> tuple[str, Any, list[str]]:
        with store.sessions() as session:
            host = session.get(Host, "hb")
            kinds = list(session.scalars(select(Event.kind).where(Event.host_id == "hb")
                                         .order_by(Event.id)))
            return host.state, host.observed, kinds

    beat(1.0)
    state, observed, kinds = stored()
    assert state == "online" and kinds == ["HOST_ONLINE"]
    assert observed.agent_time == 1.0 and observed.busy_ports == [5432]

    statements = beat(2.0)  # nothing new but the clock
    assert [s.split()[0] for s in statements] == ["UPDATE"], statements
    state, observed, kinds = stored()
    assert observed.agent_time == 1.0 and kinds == ["HOST_ONLINE"]  # not written again

    beat(3.0, low=True)
    beat(4.0, low=True)
    state, observed, kinds = stored()
    assert observed.agent_time == 3.0 and observed.disk.low
    assert kinds == ["HOST_ONLINE", "DISK_LOW"]
    beat(5.0)
    assert stored()[2] == ["HOST_ONLINE", "DISK_LOW", "DISK_OK"]

    beat(6.0, error="caddy said \x00 here")  # jsonb holds no NUL: the slow way, same result
    state, observed, kinds = stored()
    assert observed.ingress_error == "caddy said \x00 here" and observed.agent_time == 6.0
    with store.sessions() as session:
        session.execute(update(Host).where(Host.id == "hb").values(state="offline"))
        session.commit()
    beat(7.0, error="caddy said \x00 here")
    state, observed, kinds = stored()
    assert state == "online" and observed.agent_time == 6.0
    assert kinds == ["HOST_ONLINE", "DISK_LOW", "DISK_OK", "HOST_ONLINE"]
    beat(8.0)  # the stored document holds a NUL: it is replaced, not compared (jsonb)
    assert stored()[1].ingress_error is None and stored()[1].agent_time == 8.0
    beat(9.0)
    assert stored()[1].agent_time == 8.0


def test_a_waiting_step_reads_its_platforms_documents_only_when_its_row_changed(
        store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job step waits on its host's report by looking at the store every 0.15 s: a look
    when nothing changed is one small query, and the platform's documents are read and
    parsed only after a report (or any other write) changed its row."""
    from tenantry.core import jobs as core_jobs
    from tenantry.core.jobs import StepContext
    from tenantry.platforms import jobs
    from tenantry.platforms.contract import HostReport
    from tenantry.platforms.hosts import record_report
    from tenantry.platforms.models import App, Host, Isv, Platform, Region, Release

    with store.sessions() as session:
        region = session.get(Region, "g1") or Region(id="g1", name="local")
        isv = Isv(id="iw", name="waiting")
        app = App(id="aw", isv=isv, name="appw")
        release = Release(id="rw", app=app, version="1.0.0", digest="sha256:" + "7" * 64,
                          manifest=manifest("appw"))
        host = Host(id="hw", name="host-w", region=region, ingress_port=8443,
                    agent_token_hash="d" * 64)
        session.add_all([isv, app, release, host, Platform(
            id="pw", isv=isv, name="platw", region=region, release=release, host=host,
            desired=DesiredState(gen=2, db=DatabaseSpec(port=21500)))])
        session.commit()

    polls, report_at = 0, 6
    seen: list[str] = []
    paused = False

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not paused:
            seen.append(statement)

    def sleep(seconds: float) -> None:
        nonlocal polls, paused
        polls += 1
        if polls == report_at:  # the agent reports the database ready
            paused = True  # the report's own statements are not the wait's
            with store.sessions() as session:
                record_report(session=session, host=session.get(Host, "hw"),
                              report=HostReport.model_validate(
                                  {"platforms": {"pw": {"gen": 2, "database": "ready"}}}),
                              pace=6)
            paused = False

    def wait(check: Any, timeout: float) -> None:
        event.listen(store.engine, "before_cursor_execute", count)
        try:
            jobs.wait_observed(StepContext(runtime=store, job_id=1, platform_id="pw",
                                           params={}), "it", check, timeout=timeout)
        finally:
            event.remove(store.engine, "before_cursor_execute", count)

    def loads() -> int:
        return sum(1 for s in seen if s.startswith("SELECT platforms."))

    monkeypatch.setattr(core_jobs, "sleep", sleep)
    wait(jobs.db_ready, 30)
    assert polls == report_at
    looks = sum(1 for s in seen if "p.updated_at" in s)
    assert looks == report_at + 1 and loads() == 2, seen  # at first, and after the report

    seen.clear()
    polls, report_at = 0, -1  # nothing changes: the wait times out, having read the row once
    with pytest.raises(jobs.StepFailed, match="timed out"):
        wait(lambda observed, desired: False, 0.5)
    assert polls > 10 and loads() == 1


def _scans_of_all(runtime: Any, statements: list[tuple[str, Any]], table: str) -> list[str]:
    """Those of `statements` whose plan reads the whole of `table`."""
    def walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node.get("Plans", []):
            yield from walk(child)

    whole: list[str] = []
    with runtime.engine.connect() as conn:
        for statement, parameters in statements:
            if not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH")):
                continue
            plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement,
                                        parameters).scalar_one()[0]["Plan"]
            if any(n.get("Node Type") == "Seq Scan" and n.get("Relation Name") == table
                   for n in walk(plan)):
                whole.append(" ".join(statement.split())[:160])
        conn.rollback()
    return whole


def test_a_hosts_document_and_heartbeat_read_its_platforms_not_the_whole_table(
        store: Any) -> None:
    """At 1,000 hosts of 20 platforms, every document a host fetched read the whole
    platforms table (130 MB) to find its own: most of the store's work (bench/fleet.py).
    Here 3,000 platforms of 150 other hosts sit beside the host's own."""
    from sqlalchemy import select, text

    from tenantry.platforms.contract import HostReport
    from tenantry.platforms.hosts import desired_state_of, record_report
    from tenantry.platforms.models import Host

    with store.sessions() as session:
        session.execute(text(
            "INSERT INTO hosts SELECT (jsonb_populate_record(NULL::hosts, to_jsonb(h)"
            " || jsonb_build_object('id', 'hx' || n, 'name', 'hostx' || n,"
            " 'agent_token_hash', md5(n::text) || md5(n::text)))).*"
            " FROM hosts AS h, generate_series(0, 149) AS n WHERE h.id = 'h1'"))
        session.execute(text(
            "INSERT INTO platforms SELECT (jsonb_populate_record(NULL::platforms, to_jsonb(p)"
            " || jsonb_build_object('id', 'x' || n, 'name', 'x' || n, 'observed', '{}'::jsonb,"
            " 'host_id', 'hx' || n % 150))).*"
            " FROM platforms AS p, generate_series(0, 2999) AS n WHERE p.id = 'p0'"))
        session.commit()
    try:
        with store.engine.connect() as conn:
            conn.execute(text("ANALYZE platforms"))
            conn.execute(text("ANALYZE hosts"))
            conn.commit()
        seen: list[tuple[str, Any]] = []

        def keep(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            seen.append((statement, parameters))

        event.listen(store.engine, "before_cursor_execute", keep)
        try:
            with store.sessions() as session:  # (each in a transaction of its own)
                whole = desired_state_of(session=session, host_id="h1", secrets=store.secrets)
            with store.sessions() as session:
                desired_state_of(session=session, host_id="h1", secrets=store.secrets,
                                 since=whole.generation)
            with store.sessions() as session:
                host = session.scalars(select(Host).where(Host.id == "h1")).one()
                mine = whole.platforms[0].id
                record_report(session=session, host=host, pace=6,
                              report=HostReport.model_validate(
                                  {"platforms": {mine: {"gen": 1, "database": "ready"}}}))
        finally:
            event.remove(store.engine, "before_cursor_execute", keep)
        assert len(whole.platforms) >= 2 and all(p.id.startswith("p") for p in whole.platforms)
        assert any("platforms" in s for s, _ in seen)
        assert _scans_of_all(store, seen, "platforms") == []
    finally:
        with store.sessions() as session:
            session.execute(text("DELETE FROM platforms WHERE id LIKE 'x%'"))
            session.execute(text("DELETE FROM hosts WHERE id LIKE 'hx%'"))
            session.commit()
