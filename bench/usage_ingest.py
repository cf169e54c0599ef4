"""Usage ingestion through the API, idempotency on: events a second.

Starts a fresh `tenantry up`, makes one platform and its usage token, and POSTs
`/api/v1/usage` from C concurrent clients in batches of 10,000 events (the API's most),
the request bodies encoded before the clock starts. Two rounds in the same run:

1. N new events;
2. N events of which half replay ids already sent (the duplicates are accepted and
   ignored: the answer counts them, nothing is stored twice).

Each round checks its answers (accepted + duplicates = sent, nothing refused) and the
stored count. Target: ≥ 50,000 events/s in both rounds.

    .venv/bin/python bench/usage_ingest.py [--events 500000] [--clients 4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from _common import (
    ISV,
    TENANT,
    append_report,
    create_platform,
    machine_facts,
    md_table,
    pct,
    setup_isv,
    short_tmp,
    start_plane,
    wait_job,
)

TARGET = 50_000
BATCH = 10_000


def bodies(ids: list[str], when: str) -> list[bytes]:
    out = []
    for start in range(0, len(ids), BATCH):
        events = [{"id": i, "tenant": TENANT, "user": f"user-{int(i[1:]) % 5000}", "time": when}
                  for i in ids[start:start + BATCH]]
        out.append(json.dumps({"events": events}).encode())
    return out


def send_all(url: str, token: str, batches: list[bytes], clients: int,
             ) -> tuple[float, list[float], dict[str, int]]:
    """Post every batch from `clients` threads; (seconds, per-request seconds, totals)."""
    totals = {"accepted": 0, "duplicates": 0, "refused": 0}
    took: list[float] = []
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    pool = [httpx.Client(base_url=f"{url}/api/v1", timeout=120, headers=headers)
            for _ in range(clients)]

    def post(i: int) -> dict[str, int]:
        start = time.perf_counter()
        r = pool[i % clients].post("/usage", content=batches[i])
        took.append(time.perf_counter() - start)
        r.raise_for_status()
        body: dict[str, int] = r.json()
        return body

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        for got in ex.map(post, range(len(batches))):
            for key in totals:
                totals[key] += got[key]
    elapsed = time.perf_counter() - started
    for c in pool:
        c.close()
    return elapsed, took, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    root = short_tmp("tnb-")
    cp = start_plane(root)
    try:
        setup_isv(cp, root)
        made = create_platform(cp, "usage")
        wait_job(cp, made["job_id"])
        token = cp.cli_json("usage", "token", f"{ISV}/usage")["token"]
        when = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        n = args.events
        fresh = [f"a{i}" for i in range(n)]
        half = [f"a{i}" for i in range(n // 2)] + [f"b{i}" for i in range(n - n // 2)]
        rows, verdicts = [], []
        for name, ids, new in (("new events", fresh, n), ("half replayed", half, n - n // 2)):
            batches = bodies(ids, when)
            elapsed, took, totals = send_all(cp.url, token, batches, args.clients)
            assert totals["refused"] == 0, totals
            assert totals["accepted"] == new and totals["accepted"] + totals["duplicates"] == n, \
                totals
            rate = n / elapsed
            ok = rate >= TARGET
            verdicts.append(ok)
            rows.append([name, n, totals["accepted"], totals["duplicates"], f"{elapsed:.2f}",
                         f"{rate:,.0f}", f"{statistics.median(took) * 1000:.0f}",
                         f"{pct(took, 99) * 1000:.0f}", "PASS" if ok else "FAIL"])
            print(f"{name}: {n} events in {elapsed:.2f} s = {rate:,.0f} events/s "
                  f"(accepted {totals['accepted']}, duplicates {totals['duplicates']})")
        stored = cp.cli("invoice", "csv", ISV, "--period", when[:7]).stdout
        body = (md_table(["round", "events", "accepted", "duplicates", "seconds", "events/s",
                          "request p50 ms", "request p99 ms", f"≥ {TARGET:,}/s"], rows)
                + f"\n\n{args.clients} concurrent clients, {BATCH:,} events a request, one "
                "usage token, through `tenantry up`'s one API process. Active users stored "
                f"afterwards (the CSV): `{stored.strip().splitlines()[-1]}`.\n")
        append_report("Usage ingestion (bench/usage_ingest.py)", machine_facts(), body)
        if not all(verdicts):
            raise SystemExit(1)
    finally:
        cp.cleanup()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
