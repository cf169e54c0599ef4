"""Provisioning latency: from the create API call to the first HTTPS 200 on /health.

A fresh `tenantry up`, one ISV with bodyshop 1.0.0 released, one warm-up platform (so the
release's virtualenv is already built on the host and the series measure provisioning, not
the one-off build), then N platforms one after another and M at once (threads). Each is
timed from just before `POST /api/v1/isvs/{isv}/platforms` until the first 200 from
`https://NAME.ISV.localhost:INGRESS/health` through Caddy (SNI + CA-verified); the job's
own end (`ready`) and its step durations are recorded too. Finally every platform is
destroyed (also timed) and `tenantry up` is stopped with SIGTERM.

    .venv/bin/python bench/provision.py [--serial 10] [--parallel 5] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    append_report,
    create_platform,
    destroy_platform,
    fmt,
    log_tail,
    machine_facts,
    md_table,
    other_tenantry_ups,
    setup_isv,
    short_tmp,
    start_plane,
    step_durations,
    summary,
    wait_https,
    wait_job,
)

P50_TARGET = 5.0
P95_TARGET = 10.0


def provision_one(cp: Any, name: str) -> dict[str, Any]:
    rec = create_platform(cp, name)
    rec["t_https"] = wait_https(cp, rec["host"]) - rec["t0"]
    j = wait_job(cp, rec["job_id"])
    rec["t_job"] = time.monotonic() - rec["t0"]
    rec["job_state"] = j["state"]
    rec["job_error"] = j.get("error")
    rec["steps"] = step_durations(j)
    return rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serial", type=int, default=10)
    ap.add_argument("--parallel", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the data dir afterwards")
    args = ap.parse_args()

    facts = machine_facts()
    root = short_tmp("tnb-prov-")
    cp = None
    results: dict[str, list[dict[str, Any]]] = {}
    destroy_times: list[float] = []
    notes: list[str] = []
    try:
        t = time.monotonic()
        cp = start_plane(root)
        t_up = time.monotonic() - t
        print(f"tenantry up ready in {t_up:.2f} s (data dir {cp.data_dir})")
        others = other_tenantry_ups([cp.process.pid] if cp.process else [])
        if others:
            notes.append(f"{len(others)} other `tenantry up` process(es) were running on the "
                         "machine at the same time (other people's work), sharing the CPUs")
        setup_isv(cp, root)

        warm = provision_one(cp, "warmup")
        print(f"warm-up (builds the release virtualenv): https {warm['t_https']:.2f} s, "
              f"job {warm['t_job']:.2f} s, steps {warm['steps']}")
        results["warm-up"] = [warm]

        serial = []
        for i in range(args.serial):
            rec = provision_one(cp, f"s{i:02d}")
            serial.append(rec)
            print(f"serial {rec['name']}: https {rec['t_https']:.2f} s  job {rec['t_job']:.2f} s"
                  f"  {rec['job_state']}")
        results["serial"] = serial

        parallel: list[dict[str, Any]] = []
        errors: list[str] = []
        lock = threading.Lock()

        def worker(name: str) -> None:
            try:
                rec = provision_one(cp, name)
                with lock:
                    parallel.append(rec)
            except Exception as exc:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(f"{name}: {exc}")

        threads = [threading.Thread(target=worker, args=(f"c{i:02d}",))
                   for i in range(args.parallel)]
        t = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.monotonic() - t
        for rec in sorted(parallel, key=lambda r: r["name"]):
            print(f"parallel {rec['name']}: https {rec['t_https']:.2f} s  job {rec['t_job']:.2f} s"
                  f"  {rec['job_state']}")
        print(f"parallel batch wall time {wall:.2f} s")
        if errors:
            raise RuntimeError("parallel provisioning failed: " + "; ".join(errors))
        results["parallel"] = parallel

        names = ["warmup", *(r["name"] for r in serial), *(r["name"] for r in parallel)]
        for name in names:
            t = time.monotonic()
            j = wait_job(cp, destroy_platform(cp, name))
            destroy_times.append(time.monotonic() - t)
            if j["state"] != "succeeded":
                notes.append(f"destroy {name}: job {j['state']} {j.get('error')}")
        print(f"destroyed {len(names)} platforms one after another: "
              f"median {statistics.median(destroy_times):.2f} s, max {max(destroy_times):.2f} s")
    except Exception:
        if cp is not None:
            print(log_tail(cp), file=sys.stderr)
        raise
    finally:
        if cp is not None:
            t = time.monotonic()
            cp.stop()
            print(f"tenantry up stopped in {time.monotonic() - t:.2f} s")
            cp.cleanup()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    # ------------------------------------------------------------ report
    series = {"serial": results["serial"], "parallel": results["parallel"]}
    series["overall"] = results["serial"] + results["parallel"]
    rows = []
    verdict = True
    for label, recs in series.items():
        s = summary([r["t_https"] for r in recs])
        sj = summary([r["t_job"] for r in recs])
        ok = s["p50"] <= P50_TARGET and s["p95"] <= P95_TARGET
        verdict &= ok
        rows.append([label, s["n"], fmt(s["p50"]), fmt(s["p95"]), fmt(s["max"]),
                     fmt(sj["p50"]), fmt(sj["max"]), "PASS" if ok else "FAIL"])
    header = ["series", "n", "p50 s", "p95 s", "max s", "job ready p50 s", "job ready max s",
              f"vs p50 ≤ {P50_TARGET:g} s, p95 ≤ {P95_TARGET:g} s"]
    table = md_table(header, rows)

    warm = results["warm-up"][0]
    steps_by_name: dict[str, list[float]] = defaultdict(list)
    for rec in series["overall"]:
        for k, v in rec["steps"].items():
            steps_by_name[k].append(v)
    step_rows = [[k, fmt(warm["steps"].get(k, float("nan"))),
                  fmt(statistics.median(series_vals)), fmt(max(series_vals))]
                 for k, series_vals in steps_by_name.items()]
    step_table = md_table(["job step", "warm-up s", "median s (serial+parallel)", "max s"],
                          step_rows)
    ds = summary(destroy_times)
    destroy_table = md_table(["destroy (API call → job succeeded)", "n", "p50 s", "p95 s",
                              "max s"],
                             [["one after another", ds["n"], fmt(ds["p50"]), fmt(ds["p95"]),
                               fmt(ds["max"])]])
    print()
    print(table)
    print()
    print(step_table)
    print()
    print(destroy_table)
    print(f"\nprovisioning vs target: {'PASS' if verdict else 'FAIL'}")

    body = f"""
Fresh data dir; `tenantry up` was ready (a host online) in {t_up:.2f} s. One ISV, one tenant,
bodyshop 1.0.0 released. **One warm-up platform was created first, so the release
virtualenv was already built on the host** for all measured platforms (the warm-up took
{warm['t_https']:.2f} s to its first HTTPS 200, job ready at {warm['t_job']:.2f} s; not counted
below). Then {len(results['serial'])} platforms one after another, then {len(results['parallel'])}
at once (threads; the batch took {wall:.2f} s wall). Time = from just before
`POST /api/v1/isvs/bms/platforms` to the first HTTPS 200 on `/health` through the ingress
(SNI, CA-verified, polled every 50 ms); "job ready" = until the create job reported
`succeeded`. Percentiles are nearest-rank (with 5 samples, p95 = max).

{table}

Overall vs target (p50 ≤ {P50_TARGET:g} s, p95 ≤ {P95_TARGET:g} s):
**{'PASS' if verdict else 'FAIL'}**

Where the time goes (create job steps, from the job's step timestamps):

{step_table}

{destroy_table}
"""
    if notes:
        body += "\nNotes:\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    append_report("Provisioning latency (bench/provision.py)", facts, body)
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
