"""The chain and its verifier against a real PostgreSQL: every kind of tampering is caught."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from tenantry.access.audit import service
from tenantry.access.audit.store import MemoryObjectStore
from tenantry.core.errors import Conflict
from tenantry.core.runtime import Runtime
from tests.conftest import store_runtime

pytestmark = pytest.mark.slow

N = 20


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    with store_runtime("tnta-") as rt:
        service.keys_of(rt)
        yield rt


def sql(rt: Runtime, statement: str, **params: Any) -> None:
    with rt.engine.begin() as conn:
        conn.execute(text(statement), params)


@pytest.fixture
def chain(runtime: Runtime) -> Runtime:
    """A fresh chain of N entries (1..N), no head shipped."""
    sql(runtime, "DELETE FROM audit_entries")
    with runtime.sessions() as session:
        for i in range(N):
            service.record(session, actor=f"user{i % 3}", action="POST /api/v1/isvs",
                           target=f"/isvs/acme{i}", source="api", outcome="201",
                           org=None if i % 2 else "isv1", detail={"n": i, "z": [1.5, "é"]})
        session.commit()
    return runtime


def check(rt: Runtime, store: MemoryObjectStore | None = None) -> tuple[bool, int | None, str]:
    keys = service.keys_of(rt)
    report = (service.verify_with_store(engine=rt.engine, keys=keys, store=store) if store
              else service.verify(engine=rt.engine, keys=keys, head=None))
    bad = report.first_bad
    return report.ok, bad.id if bad else None, bad.reason if bad else ""


def test_untampered_chain_verifies(chain: Runtime) -> None:
    store = MemoryObjectStore()
    with chain.sessions() as session:
        head = service.ship_head(session=session, keys=service.keys_of(chain), store=store)
    assert (head.last_id, head.count) == (N, N)
    assert check(chain, store) == (True, None, "")


def test_record_is_in_the_callers_transaction(chain: Runtime) -> None:
    with chain.sessions() as session:
        service.record(session, actor="x", action="a", target="t", source="cli")
        session.rollback()
    assert check(chain)[0]
    with chain.sessions() as session:
        assert session.scalar(text("SELECT max(id) FROM audit_entries")) == N


@pytest.mark.parametrize(("tamper", "first_bad", "why"), [
    ("UPDATE audit_entries SET actor = 'mallory' WHERE id = 7", 7, "modified"),
    ("UPDATE audit_entries SET detail = '{\"n\": 99}' WHERE id = 3", 3, "modified"),
    ("UPDATE audit_entries SET time = time + interval '1 second' WHERE id = 12", 12, "modified"),
    ("DELETE FROM audit_entries WHERE id = 9", 9, "deleted"),
    ("DELETE FROM audit_entries WHERE id = 1", 1, "deleted"),
])
def test_modification_and_deletion(chain: Runtime, tamper: str, first_bad: int,
                                   why: str) -> None:
    sql(chain, tamper)
    ok, bad, reason = check(chain)
    assert (ok, bad) == (False, first_bad)
    assert why in reason


def test_insertion_of_a_forged_entry(chain: Runtime) -> None:
    # Make room at 11 by renumbering the rest, then forge an entry chained on 10's MAC.
    sql(chain, "UPDATE audit_entries SET id = id + 1000 WHERE id > 10")
    sql(chain, "UPDATE audit_entries SET id = id - 999 WHERE id > 1000")
    sql(chain, "INSERT INTO audit_entries SELECT 11, now(), 'mallory', NULL, NULL, 'api', "
               "'POST /x', '', '200', NULL, NULL, mac, repeat('a', 64) "
               "FROM audit_entries WHERE id = 10")
    assert check(chain)[:2] == (False, 11)


def test_forged_entry_at_the_end(chain: Runtime) -> None:
    sql(chain, f"INSERT INTO audit_entries SELECT {N + 1}, now(), 'mallory', NULL, NULL, "
               "'api', 'POST /x', '', '200', NULL, NULL, mac, repeat('b', 64) "
               f"FROM audit_entries WHERE id = {N}")
    assert check(chain)[:2] == (False, N + 1)


def test_reordering_two_entries(chain: Runtime) -> None:
    sql(chain, "UPDATE audit_entries SET id = -5 WHERE id = 5")
    sql(chain, "UPDATE audit_entries SET id = 5 WHERE id = 6")
    sql(chain, "UPDATE audit_entries SET id = 6 WHERE id = -5")
    ok, bad, reason = check(chain)
    assert (ok, bad) == (False, 5)
    assert "reordered" in reason


def test_swapping_two_entries_content(chain: Runtime) -> None:
    cols = "time, actor, actor_id, org, source, action, target, outcome, ip, detail"
    sql(chain, f"UPDATE audit_entries a SET ({cols}) = (SELECT {cols} FROM audit_entries b "
               "WHERE b.id = CASE a.id WHEN 4 THEN 15 ELSE 4 END) WHERE a.id IN (4, 15)")
    assert check(chain)[:2] == (False, 4)


def test_truncated_tail_against_shipped_head(chain: Runtime) -> None:
    store = MemoryObjectStore()
    with chain.sessions() as session:
        service.ship_head(session=session, keys=service.keys_of(chain), store=store)
    sql(chain, f"DELETE FROM audit_entries WHERE id > {N - 4}")
    assert check(chain)[0] is True  # without the head, a truncated chain looks fine
    ok, bad, reason = check(chain, store)
    assert (ok, bad) == (False, N - 3)
    assert "truncated" in reason
    # ... and the shipper refuses to ship a head that goes backwards.
    with chain.sessions() as session, pytest.raises(Conflict):
        service.ship_head(session=session, keys=service.keys_of(chain), store=store)
    assert check(chain, store)[:2] == (False, N - 3)


def test_rolled_back_pointer_does_not_hide_a_truncation(chain: Runtime) -> None:
    """The latest pointer is the one rewritable key: put an older head there (as whoever
    holds the store's key could), truncate, and the newest dated copy still tells."""
    store = MemoryObjectStore()
    keys = service.keys_of(chain)
    sql(chain, f"DELETE FROM audit_entries WHERE id > {N - 5}")  # hold the last 5 back
    with chain.sessions() as session:
        old = service.ship_head(session=session, keys=keys, store=store)
    assert old.last_id == N - 5
    with chain.sessions() as session:  # five more entries, and a newer head shipped
        for i in range(5):
            service.record(session, actor="late", action="a", target=f"t{i}", source="cli")
        session.commit()
        newer = service.ship_head(session=session, keys=keys, store=store)
    sql(chain, f"DELETE FROM audit_entries WHERE id > {old.last_id}")
    store.objects[service.HEAD_KEY] = old.model_dump_json().encode()  # the pointer, rolled back
    ok, bad, reason = check(chain, store)
    assert (ok, bad) == (False, old.last_id + 1) and "truncated" in reason
    assert service.latest_head(store) == newer


def test_rewritten_tail_against_shipped_head(chain: Runtime) -> None:
    store = MemoryObjectStore()
    with chain.sessions() as session:
        service.ship_head(session=session, keys=service.keys_of(chain), store=store)
    sql(chain, f"DELETE FROM audit_entries WHERE id > {N - 4}")
    with chain.sessions() as session:  # new, valid entries take the deleted ids
        for _ in range(6):
            service.record(session, actor="system", action="x", target="", source="cli")
        session.commit()
    ok, bad, reason = check(chain, store)
    assert (ok, bad) == (False, N)
    assert "rewritten" in reason


def test_forged_head_is_rejected(chain: Runtime) -> None:
    store = MemoryObjectStore()
    with chain.sessions() as session:
        head = service.ship_head(session=session, keys=service.keys_of(chain), store=store)
    store.put(service.HEAD_KEY, head.model_copy(update={"last_id": 5}).model_dump_json()
              .encode())
    ok, bad, reason = check(chain, store)
    assert not ok and "signature" in reason


def test_ship_if_due_ships_at_most_every_period(runtime: Runtime) -> None:
    assert service.ship_head_if_due(runtime) is not None or True
    assert service.ship_head_if_due(runtime, every=3600) is None
    assert service.ship_head_if_due(runtime, every=0) is not None


def test_direct_psycopg_update_is_caught(chain: Runtime) -> None:
    """The way an intruder with the store's socket would do it."""
    run = chain.settings.data_dir / "controlplane" / "run"
    with psycopg.connect(host=str(run), user="tenantry", dbname="tenantry",
                         autocommit=True) as conn:
        conn.execute("UPDATE audit_entries SET outcome = '200' WHERE id = 2")
    assert check(chain)[:2] == (False, 2)


def test_group_appender_under_concurrency(chain: Runtime) -> None:
    """16 threads appending one entry at a time: every entry lands once, in one unbroken
    chain, many to a commit; a bad entry fails alone."""
    from concurrent.futures import ThreadPoolExecutor

    appender = service.GroupAppender(chain)

    def one(i: int) -> int | str:
        event: dict[str, Any] = {"actor": f"t{i}", "action": "a", "target": f"x{i}",
                                 "source": "api", "detail": {"i": i}}
        if i == 77:
            event["actor"] = None  # NOT NULL: this one insert fails
        try:
            return appender.append(event)
        except Exception as exc:  # noqa: BLE001
            return type(exc).__name__

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(400)))
    ids = [r for r in results if isinstance(r, int)]
    assert len(ids) == 399 and len(set(ids)) == 399
    assert isinstance(results[77], str)
    assert check(chain) == (True, None, "")
    with chain.sessions() as session:
        actors = dict(session.execute(text(
            "SELECT id, actor FROM audit_entries WHERE id > :n"), {"n": N}).all())
    assert all(actors[r] == f"t{i}" for i, r in enumerate(results) if isinstance(r, int))
    assert len(actors) == 399
