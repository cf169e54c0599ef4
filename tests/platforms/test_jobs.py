"""Job steps wait on the agent's reports: fake reports in, done / keep waiting / failed out."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tenantry.core.db import utcnow
from tenantry.core.jobs import StepContext, StepFailed, Waiting
from tenantry.platforms import jobs
from tenantry.platforms.contract import DesiredState, PlatformReport

DONE, WAIT = True, False

# The desired state the create job writes (gen 2: placed, then the place step's bump).
DESIRED = DesiredState.model_validate({
    "gen": 2, "db": {"port": 21000}, "releases": ["r1"],
    "slots": {"a": {"release_id": "r1", "ports": [21001], "after_migration": "m7"}},
    "route_slot": "a", "migrations": [{"id": "m7", "release_id": "r1"}], "running": True})


def report(**fields: Any) -> PlatformReport:
    return PlatformReport.model_validate({"gen": 2, **fields})


def slot(state: str = "running", healthy: bool = True, detail: str = "") -> dict[str, Any]:
    return {"state": state, "healthy": healthy, "detail": detail}


CASES: list[tuple[str, jobs.Check, PlatformReport, bool | str]] = [
    # ---- the database
    ("db: nothing yet", jobs.db_ready, report(), WAIT),
    ("db: starting", jobs.db_ready, report(database="starting"), WAIT),
    ("db: stopped", jobs.db_ready, report(database="stopped"), WAIT),
    ("db: ready", jobs.db_ready, report(database="ready"), DONE),
    ("db: error", jobs.db_ready, report(database="error: PostgreSQL exited: no space"),
     "the database could not be made: error: PostgreSQL exited: no space"),
    # ---- building the release
    ("build: not reported", jobs._release_state("r1"), report(), WAIT),
    ("build: another release built", jobs._release_state("r1"),
     report(releases={"r0": "built"}), WAIT),
    ("build: built", jobs._release_state("r1"), report(releases={"r1": "built"}), DONE),
    ("build: error", jobs._release_state("r1"), report(releases={"r1": "error: bad wheel"}),
     "building the release failed: error: bad wheel"),
    # ---- the release command
    ("migrate: none to run", jobs._migration_done(None), report(), DONE),
    ("migrate: not run yet", jobs._migration_done("m7"), report(), WAIT),
    ("migrate: ok", jobs._migration_done("m7"), report(migrations={"m7": "ok"}), DONE),
    ("migrate: an older one ok", jobs._migration_done("m7"), report(migrations={"m6": "ok"}),
     WAIT),
    ("migrate: failed", jobs._migration_done("m7"),
     report(migrations={"m7": "failed: relation exists"}),
     "the release command failed: relation exists"),
    # ---- the app processes of a slot
    ("start: slot not reported", jobs.slot_healthy("a"), report(), WAIT),
    ("start: starting", jobs.slot_healthy("a"),
     report(slots={"a": slot("starting", healthy=False)}), WAIT),
    ("start: running, not healthy yet", jobs.slot_healthy("a"),
     report(slots={"a": slot(healthy=False)}), WAIT),
    ("start: healthy", jobs.slot_healthy("a"), report(slots={"a": slot()}), DONE),
    ("start: the other slot healthy", jobs.slot_healthy("b"), report(slots={"a": slot()}),
     WAIT),
    ("start: failed", jobs.slot_healthy("a"),
     report(slots={"a": slot("failed", healthy=False, detail="ImportError: x")}),
     "the app processes did not start: ImportError: x"),
    # ---- the route
    ("route: not loaded", jobs.routed, report(), WAIT),
    ("route: other slot", jobs.routed, report(route_slot="b"), WAIT),
    ("route: loaded", jobs.routed, report(route_slot="a"), DONE),
    ("serving: routed, not healthy", jobs.serving,
     report(route_slot="a", slots={"a": slot(healthy=False)}), WAIT),
    ("serving: healthy, not routed", jobs.serving, report(slots={"a": slot()}), WAIT),
    ("serving: routed and healthy", jobs.serving,
     report(route_slot="a", slots={"a": slot()}), DONE),
    # ---- retire, stop, destroy
    ("retire: old slot still there", jobs._slot_gone("b"),
     report(slots={"a": slot(), "b": slot()}), WAIT),
    ("retire: old slot gone", jobs._slot_gone("b"), report(slots={"a": slot()}), DONE),
    ("stop: database still up", jobs.stopped, report(database="ready"), WAIT),
    ("stop: a slot still running", jobs.stopped,
     report(database="stopped", slots={"a": slot()}), WAIT),
    ("stop: all stopped", jobs.stopped,
     report(database="stopped", slots={"a": slot("stopped", healthy=False)}), DONE),
    ("destroy: still there", jobs._removed, report(absent=False), WAIT),
    ("destroy: gone", jobs._removed, report(absent=True), DONE),
]


@pytest.mark.parametrize(("check", "observed", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_a_check_reads_the_report(check: jobs.Check, observed: PlatformReport,
                                  expected: bool | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(StepFailed) as failed:
            check(observed, DESIRED)
        assert str(failed.value) == expected
    else:
        assert check(observed, DESIRED) is expected


# ---------------------------------------------------------------- the waiting loop


class _Plane:
    """Just enough of the runtime for `_wait`: one platform whose report changes per poll."""

    def __init__(self, reports: list[PlatformReport | None],
                 desired: DesiredState = DESIRED, host_states: list[str] | None = None,
                 refused: str | None = None) -> None:
        self.reports = reports
        self.desired = desired
        self.host_states = host_states or ["online"]
        self.refused = refused  # the host's agent refused its desired state, reporting now
        self.polls = 0

    @contextlib.contextmanager
    def sessions(self) -> Iterator[SimpleNamespace]:
        observed = self.reports[min(self.polls, len(self.reports) - 1)]
        state = self.host_states[min(self.polls, len(self.host_states) - 1)]
        self.polls += 1
        seen_at = utcnow() if self.refused else None
        # each poll finds the row changed (its report is the next one)
        look = (self.polls, "h1", state, seen_at, self.refused)
        platform = SimpleNamespace(observed=observed, desired=self.desired,
                                   updated_at=self.polls)
        yield SimpleNamespace(get=lambda model, key: platform,
                              execute=lambda statement, params: SimpleNamespace(
                                  one_or_none=lambda: look))


def _ctx(plane: _Plane) -> StepContext:
    return StepContext(runtime=plane, job_id=12, platform_id="p1", params={})  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "POLL", 0.001)


WAIT_CASES: list[tuple[str, list[PlatformReport | None], int | str]] = [
    ("done at once", [report(database="ready")], 1),
    ("nothing reported, then done", [None, report(database="starting"),
                                     report(database="ready")], 3),
    # A report for an older gen says nothing about what the step wrote, even a failure.
    ("an older gen is not enough", [report(gen=1, database="ready"),
                                    report(gen=1, database="error: old news"),
                                    report(database="ready")], 3),
    ("a newer gen counts", [report(gen=5, database="ready")], 1),
    ("a failure fails the step", [report(database="starting"),
                                  report(database="error: disk full")],
     "the database could not be made: error: disk full"),
    ("the timeout names the agent's error", [report(database="starting", error="pg: boom")],
     "timed out after 0 s waiting for the database (agent says: pg: boom)"),
    ("the timeout without an error", [None],
     "timed out after 0 s waiting for the database"),
]


@pytest.mark.parametrize(("reports", "expected"), [c[1:] for c in WAIT_CASES],
                         ids=[c[0] for c in WAIT_CASES])
def test_wait_polls_until_the_current_gen_says_done(reports: list[PlatformReport | None],
                                                    expected: int | str) -> None:
    plane = _Plane(reports)
    timeout = 0.05 if isinstance(expected, str) else 5.0
    if isinstance(expected, str):
        with pytest.raises(StepFailed) as failed:
            jobs.wait_observed(_ctx(plane), "the database", jobs.db_ready, timeout=timeout)
        assert str(failed.value) == expected
    else:
        jobs.wait_observed(_ctx(plane), "the database", jobs.db_ready, timeout=timeout)
        assert plane.polls == expected


def test_a_long_wait_looks_less_often(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step waits on a report at POLL for its first FAST_FOR seconds, then at SLOW_POLL: a
    backup's wait lasts hours, and looking 7 times a second all along costs the store."""
    monkeypatch.setattr(jobs, "POLL", 0.15)
    clock = SimpleNamespace(now=0.0, sleeps=[])

    def sleep(seconds: float) -> None:
        clock.sleeps.append(seconds)
        clock.now += seconds

    monkeypatch.setattr(jobs, "time", SimpleNamespace(monotonic=lambda: clock.now))
    monkeypatch.setattr(jobs.jobs, "sleep", sleep)
    plane = _Plane([report(database="starting")] * 80 + [report(database="ready")])
    jobs.wait_observed(_ctx(plane), "the database", jobs.db_ready, timeout=600)
    fast = [s for s in clock.sleeps if s == 0.15]
    assert 60 <= len(fast) <= 70  # 10 s at 0.15 s
    assert clock.sleeps[len(fast):] == [jobs.SLOW_POLL] * (80 - len(fast))
    assert plane.polls == 81


def test_a_wait_fails_at_once_when_the_agent_refuses_its_desired_state() -> None:
    """Not after the step's timeout: the agent said why, and the document will not change
    by itself (the same one comes on every fetch)."""
    plane = _Plane([report(database="starting")],
                   refused="it does not validate: platforms.0.database.port: too big")
    with pytest.raises(StepFailed) as failed:
        jobs.wait_observed(_ctx(plane), "the database", jobs.db_ready, timeout=30)
    assert str(failed.value) == ("the agent on host h1 refused its desired state: it does "
                                 "not validate: platforms.0.database.port: too big")
    assert plane.polls == 1


def test_a_wait_on_a_host_that_stays_offline_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the step's own timeout (hours for a backup): a minute of the host offline."""
    monkeypatch.setattr(jobs, "HOST_LOST_AFTER", 0.05)
    plane = _Plane([report(database="starting")], host_states=["offline"])
    with pytest.raises(StepFailed) as failed:
        jobs.wait_observed(_ctx(plane), "the database", jobs.db_ready, timeout=30)
    assert str(failed.value) == "host h1 went offline while this job waited for the database"
    # A host that comes back in time (an agent restarting) does not fail the wait.
    plane = _Plane([report(database="starting")] * 5 + [report(database="ready")],
                   host_states=["offline", "offline", "online"])
    monkeypatch.setattr(jobs, "HOST_LOST_AFTER", 5.0)
    jobs.wait_observed(_ctx(plane), "the database", jobs.db_ready, timeout=30)
    assert plane.polls == 6


def test_a_steps_first_wait_gives_its_worker_slot_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """After HOLD_FOR seconds of looking, the first wait of a step gives the slot back (the
    job goes back to the queue and the step runs again); taken up again, it looks once and
    gives it back again. A step's later waits keep the slot, as does a wait in a job's
    failure handler (no step)."""
    monkeypatch.setattr(jobs, "HOLD_FOR", 0.05)
    gave: list[tuple[dt.datetime, float]] = []

    def give_back(ctx: StepContext, since: dt.datetime, again_in: float,
                  changed: object = None) -> None:
        assert callable(changed)  # the worker asks it once the job is back in the queue
        gave.append((since, again_in))
        raise Waiting(again_in)

    monkeypatch.setattr(jobs.jobs, "give_back", give_back)
    began = utcnow()
    plane = _Plane([report(database="starting")])
    first = StepContext(runtime=plane, job_id=12, platform_id="p1", params={},  # type: ignore[arg-type]
                        step_id=3)
    with pytest.raises(Waiting):
        jobs.wait_observed(first, "the database", jobs.db_ready, timeout=60)
    assert plane.polls > 1 and gave[0][0] >= began and gave[0][1] == 1.0
    # taken up again 30 s after its wait began: one look, then the slot goes back until a
    # report wakes it, or for a quarter of how long it has waited
    since = utcnow() - dt.timedelta(seconds=30)
    plane = _Plane([report(database="starting")])
    again = StepContext(runtime=plane, job_id=12, platform_id="p1", params={},  # type: ignore[arg-type]
                        step_id=3, waiting_since=since)
    with pytest.raises(Waiting):
        jobs.wait_observed(again, "the database", jobs.db_ready, timeout=60)
    assert plane.polls == 1 and gave[1][0] == since
    assert gave[1][1] == pytest.approx(7.5, abs=0.05)
    # the same run's next wait keeps the slot: it times out instead
    with pytest.raises(StepFailed, match="timed out after 0 s"):
        jobs.wait_observed(again, "the database", jobs.db_ready, timeout=0.2)
    outside = _ctx(_Plane([report(database="starting")]))
    with pytest.raises(StepFailed, match="timed out after 0 s"):
        jobs.wait_observed(outside, "the database", jobs.db_ready, timeout=0.2)
    assert len(gave) == 2


def test_a_wait_taken_up_again_counts_its_timeout_from_its_first_start() -> None:
    """A step that gave its slot back for 3 minutes does not wait 3 more: its timeout began
    when its wait first began."""
    plane = _Plane([report(database="starting", error="pg: boom")])
    ctx = StepContext(runtime=plane, job_id=12, platform_id="p1", params={},  # type: ignore[arg-type]
                      step_id=3, waiting_since=utcnow() - dt.timedelta(seconds=200))
    with pytest.raises(StepFailed) as failed:
        jobs.wait_observed(ctx, "the database", jobs.db_ready, timeout=180)
    assert str(failed.value) == ("timed out after 180 s waiting for the database "
                                 "(agent says: pg: boom)")
    assert plane.polls == 1


def test_a_wait_on_an_offline_host_keeps_its_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """To tell, within HOST_LOST_AFTER, that the host is lost: a run of the step that gave
    its slot back would start counting again."""
    monkeypatch.setattr(jobs, "HOLD_FOR", 0.0)
    monkeypatch.setattr(jobs, "HOST_LOST_AFTER", 0.2)
    plane = _Plane([report(database="starting")], host_states=["offline"])
    ctx = StepContext(runtime=plane, job_id=12, platform_id="p1", params={},  # type: ignore[arg-type]
                      step_id=3, waiting_since=utcnow())
    with pytest.raises(StepFailed, match="host h1 went offline while this job waited"):
        jobs.wait_observed(ctx, "the database", jobs.db_ready, timeout=30)


def test_wait_moves_ports_another_program_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    moved: list[list[int]] = []
    plane = _Plane([report(conflicts=[21001]), report(database="ready")])
    monkeypatch.setattr(jobs, "_move_ports", lambda ctx, taken: moved.append(taken))
    jobs.wait_observed(_ctx(plane), "the database", jobs.db_ready, timeout=5)
    assert moved == [[21001]] and plane.polls == 2


# ---------------------------------------------------------------- whole steps, real store


@pytest.fixture(scope="module")
def store() -> Iterator[Any]:
    from tests.conftest import store_runtime

    with store_runtime("tntj-") as runtime:
        yield runtime


def _report(runtime: Any, host_id: str, platform_id: str, **fields: Any) -> None:
    from tenantry.platforms.contract import HostReport
    from tenantry.platforms.hosts import record_report
    from tenantry.platforms.models import Host

    with runtime.sessions() as session:
        host = session.get(Host, host_id)
        record_report(session=session, host=host, report=HostReport.model_validate(
            {"platforms": {platform_id: fields}}), pace=6)


@pytest.mark.slow
def test_steps_write_the_desired_state_and_wait_on_reports(store: Any) -> None:
    """place → database → build → a port conflict → destroy, in a real PostgreSQL."""
    from tenantry.platforms.hosts import desired_state
    from tenantry.platforms.models import App, Host, Isv, Platform, Region, Release
    from tenantry.platforms.placement import place

    manifest = {"name": "bodyshop", "version": "1.0.0", "processes": {"web": ["x"]},
                "release_command": ["x", "migrate"], "health_path": "/health",
                "requirements": None, "wheels": None}
    with store.sessions() as session:
        isv = Isv(id="i1", name="bms")
        app = App(id="a1", isv=isv, name="bodyshop")
        release = Release(id="r1", app=app, version="1.0.0", digest="sha256:" + "ab" * 32,
                          manifest=manifest)
        region = Region(id="g1", name="local")
        host = Host(id="h1", name="local", region=region, ingress_port=8443,
                    agent_token_hash="x" * 64, port_min=21000, port_max=21009)
        platform = Platform(id="p1", isv=isv, name="lbh", region=region, release=release,
                            db_password=store.secrets.encrypt("pw-on-the-wire", org="i1"))
        session.add_all([isv, app, release, region, host, platform])
        session.flush()
        assert platform.desired == DesiredState() and platform.observed is None
        place(session, platform)
        session.commit()
    ctx = StepContext(runtime=store, job_id=7, platform_id="p1", params={})

    jobs.step_place(ctx)
    jobs.step_place(ctx)  # idempotent: found its own write
    with store.sessions() as session:
        platform = session.get(Platform, "p1")
        assert platform is not None and platform.desired.placed_by == 7
        assert platform.desired.gen == 2 and platform.desired.route_slot == "a"
        assert platform.desired.migrations[0].id == "m7"
        assert platform.host is not None and platform.host.generation == 2
        sent = desired_state(session=session, host=platform.host, secrets=store.secrets)
        wire = sent.platforms[0]
        assert wire.database.password.get_secret_value() == "pw-on-the-wire"
        assert wire.route is not None and "PRIVATE KEY" in wire.route.key_pem.get_secret_value()
        assert "pw-on-the-wire" not in repr(sent)
        web = platform.desired.slots["a"].ports[0]

    _report(store, "h1", "p1", gen=2, database="ready", releases={"r1": "built"})
    jobs._wait_database(ctx)
    jobs.step_build(ctx)
    _report(store, "h1", "p1", gen=2, migrations={"m7": "failed: no table"})
    with pytest.raises(StepFailed, match="the release command failed: no table"):
        jobs.step_migrate(ctx)

    jobs._move_ports(ctx, [web])
    with store.sessions() as session:
        platform = session.get(Platform, "p1")
        assert platform is not None and platform.desired.gen == 3
        assert platform.desired.slots["a"].ports != [web]

    _report(store, "h1", "p1", gen=4, absent=True)
    jobs.step_teardown(ctx)
    with store.sessions() as session:
        platform = session.get(Platform, "p1")
        assert platform is not None and platform.desired.absent and not platform.desired.running
        assert platform.observed == PlatformReport(gen=4, absent=True)


@pytest.mark.slow
def _lone_platform(store: Any, n: str, *, with_host: bool) -> None:
    """ISV i<n>, its app and release r<n>, region g<n>, platform p<n> (on host h<n>)."""
    from tenantry.platforms.models import App, Host, Isv, Platform, Region, Release

    with store.sessions() as session:
        isv = Isv(id=f"i{n}", name=f"dlk{n}")
        app = App(id=f"a{n}", isv=isv, name="bodyshop")
        release = Release(id=f"r{n}", app=app, version="1.0.0",
                          digest="sha256:" + n * 64,
                          manifest={"name": "bodyshop", "version": "1.0.0",
                                    "processes": {"web": ["x"]}, "health_path": "/health"})
        region = Region(id=f"g{n}", name=f"dlk{n}")
        host = Host(id=f"h{n}", name=f"dlk{n}", region=region, ingress_port=8443,
                    agent_token_hash=n * 64) if with_host else None
        platform = Platform(id=f"p{n}", isv=isv, name="one", region=region,
                            release=release, host=host)
        session.add_all([isv, app, release, region, platform, *([host] if host else [])])
        session.commit()


def test_a_heartbeat_and_a_job_on_one_platform_do_not_deadlock(store: Any) -> None:
    """A job holds its platform's row, then bumps its host's generation; a heartbeat that
    carries that platform's report writes both rows too. Taken in opposite orders the two
    deadlock, and PostgreSQL aborts one after a second (a 503 to the agent, or a failed
    step); found by bench/fleet.py. The heartbeat waits for the job instead."""
    import threading

    from tenantry.platforms.hosts import bump
    from tenantry.platforms.models import Platform

    _lone_platform(store, "9", with_host=True)

    outcome: dict[str, object] = {}

    def heartbeat() -> None:
        try:
            _report(store, "h9", "p9", gen=1, database="ready")
            outcome["heartbeat"] = "stored"
        except Exception as exc:  # noqa: BLE001 - the outcome is what is asserted
            outcome["heartbeat"] = exc

    with store.sessions() as job:
        held = job.get(Platform, "p9", with_for_update=True)  # as load_platform does
        assert held is not None
        beat = threading.Thread(target=heartbeat)
        beat.start()
        time.sleep(0.5)  # the heartbeat has taken what it takes before it must wait
        bump(job, held)
        job.commit()
    beat.join(15)
    assert outcome == {"heartbeat": "stored"}
    with store.sessions() as session:
        stored = session.get(Platform, "p9")
        assert stored is not None and stored.observed is not None
        assert stored.observed.database == "ready" and stored.desired.gen == 1
        assert stored.host is not None and stored.host.generation == 2


def test_a_job_making_the_isvs_keys_and_a_support_grant_do_not_deadlock(store: Any) -> None:
    """A job holds its platform's row, then reads (or makes) its ISV's backup keys. A
    support grant for that platform, inserted meanwhile, takes key-share locks on the ISV's
    row, then on the platform's. With the ISV's row locked FOR UPDATE for the keys the two
    deadlocked, and PostgreSQL aborted the grant (a 503; found by the full suite). The grant
    now waits for the job, and the job never waits for the grant."""
    import datetime as dt
    import threading

    from tenantry.access.support.models import SupportGrant
    from tenantry.platforms import backing
    from tenantry.platforms.models import Platform

    _lone_platform(store, "8", with_host=False)

    outcome: dict[str, object] = {}

    def grant() -> None:
        try:
            with store.sessions() as session:
                session.add(SupportGrant(id="s8", isv_id="i8", platform_id="p8", reason="r",
                                         granted_by="x", expires_at=utcnow() +
                                         dt.timedelta(hours=1)))
                session.commit()
            outcome["grant"] = "stored"
        except Exception as exc:  # noqa: BLE001 - the outcome is what is asserted
            outcome["grant"] = exc

    keys = []
    with store.sessions() as job:
        held = job.get(Platform, "p8", with_for_update=True)  # as load_platform does
        assert held is not None
        other = threading.Thread(target=grant)
        other.start()
        time.sleep(0.5)  # the grant has taken the ISV's row and waits for the platform's
        keys = [backing.isv_key(job, store.secrets, "i8"),
                backing.isv_files_key(job, store.secrets, "i8")]
        job.commit()
    other.join(15)
    assert outcome == {"grant": "stored"}
    with store.sessions() as session:
        # made once: a second look gives the same keys
        assert [backing.isv_key(session, store.secrets, "i8"),
                backing.isv_files_key(session, store.secrets, "i8")] == keys


def test_a_report_wakes_the_job_that_waits_on_its_platform(store: Any) -> None:
    """A job that gave its slot back is made due by its platform's report, by its host's
    refusal of the desired state, and by its host going offline; another platform's job
    stays asleep, and a job not waiting for a time is left as it is."""
    from sqlalchemy import text

    from tenantry.core.jobs import JobKind, create_job
    from tenantry.platforms.hosts import mark_offline_hosts
    from tenantry.platforms.models import Host

    for n in ("5", "6"):
        _lone_platform(store, n, with_host=True)
    kind = JobKind(name="test.wait", steps=(("wait", lambda ctx: None),))
    with store.sessions() as session:
        five, six = (create_job(session, kind=kind, isv_id=None, platform_id=p).id
                     for p in ("p5", "p6"))
        session.commit()

    def asleep() -> dict[int, bool]:
        """Each job's queue row waits for a time, as after a give-back."""
        with store.sessions() as session:
            return {int(job): bool(later) for job, later in session.execute(text(
                "SELECT (args ->> 'job_id'), scheduled_at > now() FROM procrastinate_jobs"
                " WHERE args ->> 'job_id' IN (:a, :b)"), {"a": str(five), "b": str(six)})}

    def sleep_both() -> None:
        with store.sessions() as session:
            session.execute(text("UPDATE procrastinate_jobs SET scheduled_at = now()"
                                 " + interval '1 hour' WHERE lock IN ('platform:p5',"
                                 " 'platform:p6')"))
            session.commit()

    sleep_both()
    assert asleep() == {five: True, six: True}
    _report(store, "h5", "p5", gen=0, database="starting")
    assert asleep() == {five: False, six: True}

    sleep_both()
    with store.sessions() as session:  # a refusal is the host's: all its platforms' waits
        host = session.get(Host, "h6")
        from tenantry.platforms.contract import HostReport
        from tenantry.platforms.hosts import record_report
        record_report(session=session, host=host, report=HostReport(desired_error="bad"),
                      pace=6)
    assert asleep() == {five: True, six: False}

    sleep_both()
    with store.sessions() as session:
        session.execute(text("UPDATE hosts SET state = 'online', last_seen_at = now()"
                             " - interval '1 hour' WHERE id = 'h5'"))
        session.commit()
        mark_offline_hosts(session=session)
    assert asleep() == {five: False, six: True}
