"""An invoice run at a provider's size, and one ISV's month so far.

Starts a fresh `tenantry up` and seeds its store directly (through its PostgreSQL socket):
I ISVs, each with a subscription to the issue's "standard" plan, P platforms in billing's
ledger spread over them, and E usage events in last month plus E in this month so far
(each ISV's events over its platforms, two tenants, 1,000 user strings each). Then, through
the API:

- `POST /invoices/run` for last month, timed (target ≤ 30 s for 200 ISVs, 1,000
  platforms, 5 million events), and run again (nothing new, same answer);
- `GET /isvs/{isv}/projection` (this month's usage and projected invoice of one ISV) R
  times: p50 and p99 (target p99 ≤ 100 ms).

    .venv/bin/python bench/invoice_run.py [--isvs 200] [--platforms 1000] [--events 5000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import time

import httpx
import psycopg
from _common import (
    append_report,
    machine_facts,
    md_table,
    pct,
    short_tmp,
    start_plane,
)

RUN_TARGET = 30.0
PROJECTION_TARGET_MS = 100.0
PLAN = {
    "name": "standard", "currency": "GBP", "platform_fee": "50.00",
    "users": {"model": "graduated", "tiers": [
        {"up_to": 3, "price": "30.00"}, {"up_to": 30, "price": "25.00"},
        {"up_to": 300, "price": "20.00"}, {"price": "15.00"}]},
    "terms": {"1m": "0", "3m": "5", "12m": "15", "36m": "25"},
}

SEED = """
INSERT INTO isvs (id, name, created_at)
  SELECT 'bi' || i, 'isv' || i, now() FROM generate_series(0, %(isvs)s - 1) AS i;
INSERT INTO billing_platforms (platform_id, isv_id, name, created_at)
  SELECT 'bp' || p, 'bi' || (p %% %(isvs)s), 'isv' || (p %% %(isvs)s) || '/p' || p,
         %(long_ago)s
  FROM generate_series(0, %(platforms)s - 1) AS p;
INSERT INTO billing_subscriptions (id, isv_id, plan_id, term, min_users, tax_rate, start, "end",
                                   created_at, created_by)
  SELECT 'bs' || i, 'bi' || i, %(plan)s, '12m', 50, '20', %(start)s, %(end)s, now(), 'bench'
  FROM generate_series(0, %(isvs)s - 1) AS i;
"""
EVENTS = """
INSERT INTO billing_usage_events (platform_id, event_id, isv_id, tenant, user_hash, time,
                                  received_at)
SELECT 'bp' || p, %(tag)s || e, 'bi' || (p %% %(isvs)s),
       't' || ((e / %(platforms)s / 1000) %% 2),
       decode(md5((p %% %(isvs)s) || '/' || ((e / %(platforms)s) %% 1000)), 'hex'),
       %(from)s + (e %% 86400) * %(step)s * interval '1 second', %(received)s
FROM generate_series(0, %(n)s - 1) AS e, LATERAL (SELECT e %% %(platforms)s AS p) AS x
"""


def seed(cp_dir: str, args: argparse.Namespace, plan_id: str) -> float:
    now = dt.datetime.now(dt.UTC)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (this_month - dt.timedelta(days=1)).replace(day=1)
    started = time.monotonic()
    with psycopg.connect(host=cp_dir, user="tenantry", dbname="tenantry",
                         autocommit=True) as conn:
        params = {"isvs": args.isvs, "platforms": args.platforms, "plan": plan_id,
                  "long_ago": last_month - dt.timedelta(days=90),
                  "start": (last_month - dt.timedelta(days=60)).date(),
                  "end": (last_month + dt.timedelta(days=700)).date()}
        for statement in filter(str.strip, SEED.split(";")):
            conn.execute(statement, params)
        # last month: spread over its days; this month: over the hours so far
        so_far = max(60.0, (now - this_month).total_seconds() - 60)
        for tag, start, span in (("l", last_month, 28 * 86400.0), ("c", this_month, so_far)):
            conn.execute(EVENTS, {"tag": tag, "isvs": args.isvs, "platforms": args.platforms,
                                  "n": args.events, "from": start, "step": span / 86400,
                                  "received": now})
        conn.execute("VACUUM ANALYZE billing_usage_events")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--isvs", type=int, default=200)
    parser.add_argument("--platforms", type=int, default=1000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    root = short_tmp("tnb-")
    cp = start_plane(root)
    try:
        with cp.api() as api:
            plan = api.post("/plans", json=PLAN)
            plan.raise_for_status()
        with psycopg.connect(host=str(cp.data_dir / "controlplane" / "run"), user="tenantry",
                             dbname="tenantry") as conn:
            row = conn.execute("SELECT id FROM billing_plans WHERE name = 'standard'").fetchone()
        assert row is not None
        seeded = seed(str(cp.data_dir / "controlplane" / "run"), args, row[0])
        print(f"seeded {args.isvs} ISVs, {args.platforms} platforms, 2 x {args.events:,} "
              f"events in {seeded:.0f} s")
        now = dt.datetime.now(dt.UTC)
        period = (now.replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
        with httpx.Client(base_url=f"{cp.url}/api/v1", timeout=600,
                          headers={"Authorization": f"Bearer {cp.token}"}) as api:
            started = time.perf_counter()
            first = api.post("/invoices/run", json={"period": period})
            run_s = time.perf_counter() - started
            first.raise_for_status()
            invoices = first.json()
            assert len(invoices) == args.isvs, len(invoices)
            started = time.perf_counter()
            again = api.post("/invoices/run", json={"period": period})
            rerun_s = time.perf_counter() - started
            assert again.json() == invoices, "issued once"
            users = sorted(i["active_users"] for i in invoices)
            print(f"invoice run {period}: {len(invoices)} invoices in {run_s:.2f} s "
                  f"(again: {rerun_s:.2f} s); active users per ISV {users[0]}..{users[-1]}")
            took = []
            for i in range(args.repeat):
                started = time.perf_counter()
                r = api.get(f"/isvs/isv{i % args.isvs}/projection")
                took.append((time.perf_counter() - started) * 1000)
                r.raise_for_status()
            p50, p99 = statistics.median(took), pct(took, 99)
            print(f"projection of one ISV's month so far: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        ok_run, ok_proj = run_s <= RUN_TARGET, p99 <= PROJECTION_TARGET_MS
        rows = [
            [f"`POST /invoices/run` {period}", f"{run_s:.2f} s", f"≤ {RUN_TARGET:.0f} s",
             "PASS" if ok_run else "FAIL"],
            ["the same run again (returns the issued invoices)", f"{rerun_s:.2f} s", "", ""],
            [f"`GET /isvs/ISV/projection` x {args.repeat}, p50", f"{p50:.1f} ms", "", ""],
            ["... p99", f"{p99:.1f} ms", f"≤ {PROJECTION_TARGET_MS:.0f} ms",
             "PASS" if ok_proj else "FAIL"],
        ]
        body = (md_table(["what", "took", "target", ""], rows)
                + f"\n\nSeeded in the store directly ({seeded:.0f} s): {args.isvs} ISVs each "
                f"subscribed (12m, 50 users minimum, 20 % tax), {args.platforms} platforms in "
                f"billing's ledger, {args.events:,} usage events in {period} and "
                f"{args.events:,} more this month, 2,000 users per ISV. Each invoice: "
                f"{len(invoices[0]['lines'])} lines; active users per ISV {users[0]}-"
                f"{users[-1]}.\n")
        append_report("Invoice run and projection (bench/invoice_run.py)", machine_facts(), body)
        if not (ok_run and ok_proj):
            raise SystemExit(1)
    finally:
        cp.cleanup()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
