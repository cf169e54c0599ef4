"""Job steps wait on the agent's reports: fake reports in, done / keep waiting / failed out."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tenantry.core.jobs import StepContext, StepFailed
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
    ("db: nothing yet", jobs._db_ready, report(), WAIT),
    ("db: starting", jobs._db_ready, report(database="starting"), WAIT),
    ("db: stopped", jobs._db_ready, report(database="stopped"), WAIT),
    ("db: ready", jobs._db_ready, report(database="ready"), DONE),
    ("db: error", jobs._db_ready, report(database="error: PostgreSQL exited: no space"),
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
    ("start: slot not reported", jobs._slot_healthy("a"), report(), WAIT),
    ("start: starting", jobs._slot_healthy("a"),
     report(slots={"a": slot("starting", healthy=False)}), WAIT),
    ("start: running, not healthy yet", jobs._slot_healthy("a"),
     report(slots={"a": slot(healthy=False)}), WAIT),
    ("start: healthy", jobs._slot_healthy("a"), report(slots={"a": slot()}), DONE),
    ("start: the other slot healthy", jobs._slot_healthy("b"), report(slots={"a": slot()}),
     WAIT),
    ("start: failed", jobs._slot_healthy("a"),
     report(slots={"a": slot("failed", healthy=False, detail="ImportError: x")}),
     "the app processes did not start: ImportError: x"),
    # ---- the route
    ("route: not loaded", jobs._routed, report(), WAIT),
    ("route: other slot", jobs._routed, report(route_slot="b"), WAIT),
    ("route: loaded", jobs._routed, report(route_slot="a"), DONE),
    ("serving: routed, not healthy", jobs._serving,
     report(route_slot="a", slots={"a": slot(healthy=False)}), WAIT),
    ("serving: healthy, not routed", jobs._serving, report(slots={"a": slot()}), WAIT),
    ("serving: routed and healthy", jobs._serving,
     report(route_slot="a", slots={"a": slot()}), DONE),
    # ---- retire, stop, destroy
    ("retire: old slot still there", jobs._slot_gone("b"),
     report(slots={"a": slot(), "b": slot()}), WAIT),
    ("retire: old slot gone", jobs._slot_gone("b"), report(slots={"a": slot()}), DONE),
    ("stop: database still up", jobs._stopped, report(database="ready"), WAIT),
    ("stop: a slot still running", jobs._stopped,
     report(database="stopped", slots={"a": slot()}), WAIT),
    ("stop: all stopped", jobs._stopped,
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
                 desired: DesiredState = DESIRED) -> None:
        self.reports = reports
        self.desired = desired
        self.polls = 0

    @contextlib.contextmanager
    def sessions(self) -> Iterator[SimpleNamespace]:
        observed = self.reports[min(self.polls, len(self.reports) - 1)]
        self.polls += 1
        platform = SimpleNamespace(observed=observed, desired=self.desired)
        yield SimpleNamespace(get=lambda model, key: platform)


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
            jobs._wait(_ctx(plane), "the database", jobs._db_ready, timeout=timeout)
        assert str(failed.value) == expected
    else:
        jobs._wait(_ctx(plane), "the database", jobs._db_ready, timeout=timeout)
        assert plane.polls == expected


def test_wait_moves_ports_another_program_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    moved: list[list[int]] = []
    plane = _Plane([report(conflicts=[21001]), report(database="ready")])
    monkeypatch.setattr(jobs, "_move_ports", lambda ctx, taken: moved.append(taken))
    jobs._wait(_ctx(plane), "the database", jobs._db_ready, timeout=5)
    assert moved == [[21001]] and plane.polls == 2
