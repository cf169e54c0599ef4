"""Audit log: append rate with the chain and MAC, and verify time of a large chain.

Runs against a private control-plane PostgreSQL (the same `ControlPlaneDatabase` that
`tenantry up` runs, migrated the same way) in a fresh data dir, with the real derived keys.
Measures, in this one Python process (one core):

- `record()`, one entry per transaction (lock, read tail, insert, commit), one caller;
- the group appender with 32 threads each appending one entry at a time: what concurrent
  API requests pay (the audit middleware appends through it);
- `append_many()` in batches of 100 and 1,000 entries per transaction;
- filling the chain up to `--entries` (default 1,000,000) in batches, then `verify()` of
  the whole chain (streamed, server-side cursor), against a just-shipped head.

Targets: append ≥ 2,000 events/s, verify of 1 M entries ≤ 60 s.

    .venv/bin/python bench/audit.py [--entries 1000000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import append_report, machine_facts, md_table, short_tmp  # noqa: E402

from tenantry.access.audit import service  # noqa: E402
from tenantry.access.audit.store import MemoryObjectStore  # noqa: E402
from tenantry.core.config import load_settings  # noqa: E402
from tenantry.core.migrate import upgrade  # noqa: E402
from tenantry.core.pgserver import ControlPlaneDatabase  # noqa: E402
from tenantry.core.runtime import Runtime, make_runtime  # noqa: E402

APPEND_TARGET = 2000.0
VERIFY_TARGET = 60.0


def event(i: int) -> dict[str, object]:
    return {"actor": f"user{i % 50}", "actor_id": f"u_{i % 50:08d}", "org": f"isv{i % 7}",
            "source": "api", "action": "POST /api/v1/isvs/{isv}/platforms",
            "target": f"/isvs/isv{i % 7}/platforms/p{i}", "outcome": "202",
            "ip": "127.0.0.1", "detail": {"name": f"p{i}", "size": "s"}}


def one_per_transaction(rt: Runtime, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        with rt.sessions() as session:
            service.record(session, **event(i))  # type: ignore[arg-type]
            session.commit()
    return n / (time.perf_counter() - t0)


def grouped(rt: Runtime, n: int, threads: int) -> float:
    from concurrent.futures import ThreadPoolExecutor

    appender = service.GroupAppender(rt)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: appender.append(event(i)), range(n)))
    return n / (time.perf_counter() - t0)


def batched(rt: Runtime, n: int, batch: int) -> float:
    keys = service.keys_of(rt)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        with rt.sessions() as session:
            service.append_many(session, [event(i) for i in range(start, start + batch)],
                                keys=keys)
            session.commit()
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--single", type=int, default=5_000)
    args = parser.parse_args()
    facts = machine_facts()
    root = short_tmp("tntb-")
    data_dir = root / "data"
    data_dir.mkdir()
    db = ControlPlaneDatabase(data_dir)
    db.initialize()
    db.start()
    try:
        rt = make_runtime(load_settings(data_dir=data_dir), pool_size=2)
        upgrade(rt.engine)
        service.keys_of(rt)
        rates = [("record(), 1 entry per transaction", args.single,
                  one_per_transaction(rt, args.single)),
                 ("group appender, 32 threads of single entries", 20_000,
                  grouped(rt, 20_000, 32))]
        for batch in (100, 1000):
            rates.append((f"append_many(), {batch} per transaction", 20_000,
                          batched(rt, 20_000, batch)))
        with rt.sessions() as session:
            done = int(service.current_head(session, service.keys_of(rt)).last_id)
        t0 = time.perf_counter()
        fill = max(0, args.entries - done)
        fill_rate = batched(rt, fill - fill % 5000, 5000) if fill >= 5000 else 0.0
        fill_s = time.perf_counter() - t0
        store = MemoryObjectStore()
        with rt.sessions() as session:
            head = service.ship_head(session=session, keys=service.keys_of(rt), store=store)
        t0 = time.perf_counter()
        report = service.verify(engine=rt.engine, keys=service.keys_of(rt),
                                head=service.latest_head(store))
        verify_s = time.perf_counter() - t0
        assert report.ok, report
        rt.engine.dispose()
    finally:
        db.stop()
        shutil.rmtree(root, ignore_errors=True)

    rows = [(what, f"{n:,}", f"{rate:,.0f}", "yes" if rate >= APPEND_TARGET else "no")
            for what, n, rate in rates]
    body = ("Appends (HMAC-SHA256 chain, advisory lock, PostgreSQL on a Unix socket, "
            f"target ≥ {APPEND_TARGET:,.0f} events/s):\n\n"
            + md_table(["how", "entries", "events/s", "meets target"], rows)
            + f"\n\nFilled to {head.last_id:,} entries in batches of 5,000 "
              f"({fill_rate:,.0f} events/s, {fill_s:.0f} s).\n\n"
            + md_table(["verify", "entries", "seconds", f"≤ {VERIFY_TARGET:.0f} s"],
                       [("whole chain + shipped head", f"{report.checked:,}",
                         f"{verify_s:.1f}", "yes" if verify_s <= VERIFY_TARGET else "no")]))
    print(body)
    append_report("Audit log: append and verify (bench/audit.py)", facts, body)


if __name__ == "__main__":
    main()
