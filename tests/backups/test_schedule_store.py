"""The backup schedule against a real store: what it starts, at most PER_HOST at a time on a
host, a failed job retried only after RETRY_AFTER, and the same few queries a round whether
the fleet has 3 platforms or 30."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import delete, event, select, text

from tenantry.backups import jobs as backup_jobs
from tenantry.core.jobs import ROUTINE
from tenantry.core.models import Job
from tenantry.platforms.contract import BackupReport, PlatformReport
from tenantry.platforms.models import Host, Platform
from tests.backups.seed import seeded_store

pytestmark = pytest.mark.slow


def _now() -> dt.datetime:
    """At the test's run, not at collection: a suite runs for an hour."""
    return dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def store() -> Iterator[Any]:
    with seeded_store("tnsch-") as runtime:
        yield runtime


@pytest.fixture
def fleet(store: Any) -> Iterator[Any]:
    yield store
    with store.sessions() as session:
        session.execute(delete(Job))
        session.execute(delete(Platform))
        session.execute(delete(Host))
        session.commit()


def _host(session: Any, n: int) -> None:
    session.add(Host(id=f"h{n}", name=f"h{n}", region_id="g1", ingress_port=8443,
                     agent_token_hash=f"{n:064d}"))


def _platform(session: Any, pid: str, host: str, *ages: tuple[str, dt.timedelta]) -> None:
    """A ready platform with backups of these (type, age)."""
    now = _now()
    backups = [{"label": f"{pid}-{i}", "type": kind, "started_at": (now - age).timestamp() - 5,
                "finished_at": (now - age).timestamp(), "size": 1, "stored": 1,
                "wal_start": "1", "wal_stop": "2"} for i, (kind, age) in enumerate(ages)]
    observed = PlatformReport(backup=BackupReport.model_validate(
        {"stanza": "ready", "backups": backups}))
    session.add(Platform(id=pid, isv_id="i1", name=pid, region_id="g1", release_id="r1",
                         host_id=host, state="ready", observed=observed))


def _job(session: Any, pid: str, kind: str, state: str, age: dt.timedelta) -> None:
    session.add(Job(kind="backup", isv_id="i1", platform_id=pid, state=state,
                    params={"type": kind, "scheduled": True}, created_at=_now() - age))


def _started(store: Any) -> dict[str, str]:
    with store.sessions() as session:
        return {j.platform_id: j.params["type"] for j in session.scalars(
            select(Job).where(Job.state == "queued"))}


H, D, MIN = dt.timedelta(hours=1), dt.timedelta(days=1), dt.timedelta(minutes=1)
FRESH = (("full", 2 * D), ("diff", 2 * H))  # nothing due but the checks


def test_what_is_due_starts_at_most_per_host_at_a_time(fleet: Any) -> None:
    with fleet.sessions() as session:
        for n in (1, 2):
            _host(session, n)
        session.flush()
        for pid in ("p1", "p2", "p3"):  # never backed up, all on h1
            _platform(session, pid, "h1")
        _platform(session, "p4", "h2", *FRESH)  # backed up, checks done: nothing due
        _platform(session, "p5", "h2", *FRESH)  # its verify failed a minute ago: not yet
        _platform(session, "p6", "h2", *FRESH)  # ... and 11 minutes ago: again
        session.flush()
        for pid in ("p4", "p5", "p6"):
            _job(session, pid, "restore-test", "succeeded", 2 * H)
        _job(session, "p4", "verify", "succeeded", 2 * H)
        _job(session, "p5", "verify", "failed", MIN)
        _job(session, "p6", "verify", "failed", 11 * MIN)
        session.commit()
    backup_jobs.run_schedule(fleet)
    started = _started(fleet)
    assert started == {"p1": "full", "p2": "full", "p6": "verify"}, started
    with fleet.sessions() as session:  # upkeep: a job a person asks for goes before them
        priorities = set(session.scalars(text(
            "SELECT priority FROM procrastinate_jobs WHERE (args->>'job_id')::bigint IN"
            " (SELECT id FROM jobs WHERE state = 'queued')")))
    assert priorities == {ROUTINE}, priorities
    backup_jobs.run_schedule(fleet)  # h1 still has two running: p3 waits
    assert _started(fleet) == started


def test_a_round_asks_the_store_the_same_whatever_the_fleet(fleet: Any) -> None:
    def statements(platforms: int) -> int:
        with fleet.sessions() as session:
            session.execute(delete(Job))
            session.execute(delete(Platform))
            session.execute(delete(Host))
            for n in range(platforms):
                _host(session, n)
            session.flush()
            for n in range(platforms):
                _platform(session, f"q{n}", f"h{n}", *FRESH)
            session.flush()
            for n in range(platforms):
                for kind in ("verify", "restore-test"):
                    _job(session, f"q{n}", kind, "succeeded", H)
            session.commit()
        seen: list[str] = []

        def count(*args: Any) -> None:
            seen.append(str(args[2]))

        event.listen(fleet.engine, "before_cursor_execute", count)
        try:
            backup_jobs.run_schedule(fleet)
        finally:
            event.remove(fleet.engine, "before_cursor_execute", count)
        assert _started(fleet) == {}  # nothing due anywhere
        # only each platform's list of backups is read, not its desired and observed
        # documents (validated 6,000 times a round, they were the round's cost)
        assert not [s for s in seen if "platforms.desired" in s or "platforms.observed," in s]
        return len(seen)

    assert statements(3) == statements(30)


@pytest.mark.parametrize("count", [3, 40])
def test_a_rounds_jobs_are_spread_over_the_round(fleet: Any, count: int) -> None:
    """Started together, a round's jobs and their hosts' answers filled the control plane's
    two cores for seconds every round at 1,000 simulated hosts (bench/fleet.py); a small
    round's go a GAP apart, not a third of the round."""
    with fleet.sessions() as session:
        for n in range(count):
            _host(session, n)
        session.flush()
        for n in range(count):
            _platform(session, f"s{n}", f"h{n}")  # never backed up: each due a full
        session.commit()
    began = _now()
    backup_jobs.run_schedule(fleet)
    with fleet.sessions() as session:
        starts = sorted(session.scalars(text(
            "SELECT coalesce(scheduled_at, now()) FROM procrastinate_jobs"
            " WHERE (args->>'job_id')::bigint IN (SELECT id FROM jobs WHERE state = 'queued')")))
    assert len(starts) == count, starts
    offsets = [(s - began).total_seconds() for s in starts]
    gap = min(backup_jobs.ROUND / count, backup_jobs.GAP)
    assert gap == (0.75 if count == 40 else 1.0)
    assert offsets[0] < 1.0, offsets  # the first at once
    for k, (before, after) in enumerate(zip(offsets, offsets[1:], strict=False)):
        assert abs(after - before - gap) < 0.01, (k, offsets)  # evenly
    assert offsets[-1] < backup_jobs.ROUND, offsets  # the last before the next round
