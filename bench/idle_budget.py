"""The idle budget: what an idle platform costs, part by part, against what the target leaves it.

Issue 13 asks that 300 idle platforms keep the machine at most 10 % busy. This bench says
how much of that budget a host spends before it holds any platform, how much each idle
platform adds, and how much of that is the health probe that the alert-latency target of
docs/monitoring.md asks for every `prober.INTERVAL` seconds. On a fresh `tenantry up`:

1. No platform: the machine's busy share and its parts over `--window` seconds (density's
   CpuWindow: every process by part, the kernel's threads by name, interrupts).
2. `--count` platforms made (4 at a time), all serving, left `--settle` seconds, then the
   same window. An idle platform's cost is the growth over step 1, divided by the count.
3. One probe's cost: one platform's health path asked `--requests` times through the
   ingress on one kept connection, `--rate` a second, in another window. What Caddy and the
   platforms' own processes used beyond their step-2 rate, divided by the requests, is what
   one request costs them; the agent's probe is one such request.
4. The arithmetic: the target leaves each of 300 platforms (10 % of the cores − the host's
   fixed cost) / 300; beside it the measured cost of one, and the probes' share of it.

    .venv/bin/python bench/idle_budget.py [--count 20] [--window 120] [--settle 30]
                                          [--requests 1500] [--rate 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    append_report,
    create_many,
    machine_facts,
    md_table,
    pct,
    running_plane,
    setup_isv,
    short_tmp,
)
from density import CpuWindow, idle_cpu  # noqa: E402

from tenantry.agent.prober import INTERVAL  # noqa: E402

TARGET_PLATFORMS = 300
TARGET_SHARE = 0.10  # of all the machine's cores
PLATFORMS = "platforms (PostgreSQL + app)"
# CpuWindow's parts that are not tenantry's processes
OUTSIDE = ("kernel thread", "interrupts", "other processes")


def asked(cp: Any, host: str, requests: int,
          rate: float) -> tuple[dict[str, float], float, list[float]]:
    """The CPU window's parts over `requests` asks of `host`'s health path, paced at `rate`;
    with the seconds it lasted and each request's time."""
    took = []
    with cp.ingress_client() as client:
        cp.https(host, "/health", client=client).raise_for_status()  # the connection is kept
        window = CpuWindow(cp.data_dir)
        t0 = time.monotonic()
        for i in range(requests):
            started = time.monotonic()
            r = cp.https(host, "/health", client=client)
            took.append(time.monotonic() - started)
            if r.status_code != 200:
                raise RuntimeError(f"{host}: /health answered {r.status_code}")
            pause = t0 + (i + 1) / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        seconds = time.monotonic() - t0
        _, parts = window.close()
    return parts, seconds, took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--window", type=float, default=120.0,
                    help="seconds of each idle window")
    ap.add_argument("--settle", type=float, default=30.0,
                    help="seconds the platforms are left alone before their window")
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--rate", type=float, default=50.0, help="requests a second")
    args = ap.parse_args()
    for name in ("count", "requests"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1")
    for name in ("window", "rate"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name} must be above 0")

    facts = machine_facts()
    cores = os.cpu_count() or 1
    root = short_tmp("tnb-budget-")
    with running_plane(root, platforms=args.count) as cp:
        setup_isv(cp, root)
        time.sleep(args.settle)
        print(f"no platform: measuring {args.window:.0f} s ...", flush=True)
        empty_busy, empty = idle_cpu(cp.data_dir, args.window)
        made = create_many(cp, args.count, 4, "b")
        print(f"{args.count} made; idle {args.settle:.0f} s, then {args.window:.0f} s ...",
              flush=True)
        time.sleep(args.settle)
        full_busy, full = idle_cpu(cp.data_dir, args.window)
        print(f"{args.requests} requests at {args.rate:g}/s ...", flush=True)
        probed, probe_s, took = asked(cp, made[0]["host"], args.requests, args.rate)

    # in cores (1.0 = one core busy); busy shares are of all the cores
    fixed = empty_busy * cores
    each = (full_busy - empty_busy) * cores / args.count
    budget = TARGET_SHARE * cores
    allowed = (budget - fixed) / TARGET_PLATFORMS
    per_request = {part: (probed.get(part, 0.0) - full.get(part, 0.0)) * probe_s / args.requests
                   for part in (PLATFORMS, "Caddy")}
    probe = sum(per_request.values())  # CPU-seconds of one request
    # cores, one platform: each part's growth from step 1 to step 2
    grew = {k: (full.get(k, 0.0) - empty.get(k, 0.0)) / args.count for k in {*full, *empty}}
    ours = sum(v for k, v in grew.items() if not k.startswith(OUTSIDE))
    probes_each = probe / INTERVAL  # cores, one platform's probes

    parts = sorted({k for d in (empty, full) for k, v in d.items() if v >= 0.005},
                   key=lambda k: -max(empty.get(k, 0.0), full.get(k, 0.0)))
    by_part = md_table(
        ["idle, share of one core", "no platform", f"{args.count} platforms",
         "per platform"],
        [["the machine, % of all its cores", f"{100 * empty_busy:.1f} %",
          f"{100 * full_busy:.1f} %", ""]]
        + [[k, f"{100 * empty.get(k, 0.0):.2f} %", f"{100 * full.get(k, 0.0):.2f} %",
            f"{100 * grew[k]:.3f} %"]
           for k in parts])
    request = md_table(
        ["one request to a platform's health path, through the ingress", "ms"],
        [["CPU in Caddy", f"{1000 * per_request['Caddy']:.2f}"],
         ["CPU in the platform's own processes (app and PostgreSQL)",
          f"{1000 * per_request[PLATFORMS]:.2f}"],
         ["CPU in both", f"{1000 * probe:.2f}"],
         ["its time, p50 / p90 (the bench's client included)",
          f"{1000 * pct(took, 50):.1f} / {1000 * pct(took, 90):.1f}"]])
    verdict = "within" if fixed + TARGET_PLATFORMS * each <= budget else "over"
    sums = md_table(
        ["the budget, in % of one core", ""],
        [[f"the target: {100 * TARGET_SHARE:g} % of {cores} cores", f"{100 * budget:.1f} %"],
         ["the host with no platform (step 1)", f"{100 * fixed:.1f} %"],
         [f"left for each of {TARGET_PLATFORMS} platforms", f"{100 * allowed:.3f} %"],
         ["an idle platform costs (step 2)", f"{100 * each:.3f} %"],
         ["of which tenantry's processes (the platform's own, the agent, Caddy, "
          "Prometheus, the control plane)", f"{100 * ours:.3f} %"],
         ["of which the kernel's threads, interrupts and the machine's other processes",
          f"{100 * (each - ours):.3f} %"],
         [f"of which its probe, one request every {INTERVAL:g} s (step 3)",
          f"{100 * probes_each:.3f} %"],
         [f"{TARGET_PLATFORMS} platforms at this cost, the host's fixed cost added "
          "(linear: the measured 300 cost more)",
          f"{100 * (fixed + TARGET_PLATFORMS * each):.1f} %, {verdict} the budget"]])
    report = (f"{by_part}\n\n{request}\n\n{sums}")
    print(f"\n{report}")
    body = f"""
A fresh `tenantry up` measured idle over {args.window:.0f} s with no platform, then with
{args.count} idle platforms of size `s` (bodyshop 1.0.0, all serving, left
{args.settle:.0f} s first); then one platform's `/health` asked {args.requests} times
through the ingress on one kept connection, {args.rate:g} a second ({probe_s:.0f} s), and
what Caddy and the platforms' processes used beyond their idle rate divided by the requests.
The agent's probe of a platform is one such request every {INTERVAL:g} s (the alert-latency
target of docs/monitoring.md asks for it).

{report}
"""
    append_report("Idle budget: what an idle platform costs (bench/idle_budget.py)", facts, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
