"""The README's first command, as a newcomer meets it, run N times from empty data dirs.

Each run starts exactly `tenantry up --demo` (the venv's `tenantry` script) on a new, empty
data dir (free ports from the environment, as `tests/cli/test_up.py` does), and
times, from just before the process is spawned:

- until both demo platforms answer `curl --cacert DATA_DIR/ca.pem https://T.bms.localhost:P/health`
  with 200 (the limit is 180 s; a run that does not get there is a failure),
- until Ctrl-C (SIGINT) has stopped it, and checks that no process of the data dir is left:
  none naming it, none in its cgroup, none started by its supervisord, right after the exit
  and again 3 s later (a late start would show then).

Ctrl-C goes to `up`'s whole process group, as a terminal sends it (`--ctrl-c up`: to `up`
alone, as `kill -INT` does). It comes once both serve, or with `--stop-at random` at a random
moment 1-25 s after the start, while the demo is still being made (`--stop-at S`: at S s).
`--load N` runs N busy processes (one per core makes a loaded machine) for the whole run.
Target: 10 runs out of 10 serve (or stop cleanly, when stopped early), quiet and loaded.

    .venv/bin/python bench/first_command.py [--runs 10] [--load 2] [--stop-at random]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ControlPlaneProcess,
    append_report,
    curl_health,
    free_port,
    left_running,
    machine_facts,
    md_table,
    other_tenantry_ups,
    port_block,
    short_tmp,
    summary,
)

TENANTRY_SCRIPT = Path(sys.executable).parent / "tenantry"
LIMIT = 180.0


def _burn() -> None:
    while True:
        pass


def one_run(ports: tuple[int, int], *, stop_at: float | None = None,
            group: bool = True) -> dict[str, object]:
    root = short_tmp("tnt-first-")
    cp = ControlPlaneProcess(data_dir=root / "data", listen_port=free_port(),
                             ingress_port=free_port(), port_range=ports)
    env = {**cp.env, "TENANTRY_LISTEN": f"127.0.0.1:{cp.listen_port}",
           "TENANTRY_INGRESS_PORT": str(cp.ingress_port),
           "TENANTRY_PORT_RANGE": "{}-{}".format(*cp.port_range)}
    result: dict[str, object] = {"served": None, "stop": None, "left": 0, "error": ""}
    try:
        with cp.log.open("ab") as out:
            t0 = time.monotonic()
            cp.process = subprocess.Popen([str(TENANTRY_SCRIPT), "up", "--demo"], stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env, start_new_session=True)
        while time.monotonic() - t0 < (LIMIT if stop_at is None else stop_at):
            if cp.process.poll() is not None:
                result["error"] = f"exited {cp.process.returncode}"
                break
            if stop_at is None and all(curl_health(cp, f"{t}.bms.localhost")
                                       for t in ("lbh", "dlg")):
                result["served"] = time.monotonic() - t0
                break
            time.sleep(0.25)
        else:
            if stop_at is None:
                result["error"] = f"not serving after {LIMIT:.0f} s"
        if result["error"]:
            log = cp.log.read_text(errors="replace").strip().splitlines()
            result["error"] = f"{result['error']}: {' | '.join(log[-3:])}"[:300]
        t1 = time.monotonic()
        if group:
            os.killpg(cp.process.pid, signal.SIGINT)
        else:
            cp.process.send_signal(signal.SIGINT)
        try:
            cp.process.wait(120)
        except subprocess.TimeoutExpired:
            result["error"] = "still running 120 s after Ctrl-C"
        result["stop"] = time.monotonic() - t1
        if cp.process.returncode not in (0, None) and not result["error"]:
            result["error"] = f"Ctrl-C: exited {cp.process.returncode}"
        left = set(left_running(cp.data_dir))
        time.sleep(3)
        left |= set(left_running(cp.data_dir))
        result["left"] = len(left)
        if left:
            result["error"] = f"{result['error']} left: {'; '.join(sorted(left))}"[:600]
    finally:
        cp.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--load", type=int, default=0, help="busy processes during the runs")
    parser.add_argument("--stop-at", default="served",
                        help="when Ctrl-C comes: served (both demo platforms serve), random "
                             "(1-25 s after the start) or a number of seconds")
    parser.add_argument("--ctrl-c", choices=("group", "up"), default="group",
                        help="to up's process group (a terminal) or to up alone (kill -INT)")
    args = parser.parse_args()
    if args.stop_at not in ("served", "random"):
        try:
            if not 0 <= float(args.stop_at) <= LIMIT:
                raise ValueError
        except ValueError:
            parser.error(f"--stop-at: served, random or seconds from 0 to {LIMIT:.0f}, "
                         f"not {args.stop_at!r}")
    facts = machine_facts()
    others = other_tenantry_ups()
    facts["other tenantry up processes at start"] = str(len(others)) if others else "none"
    burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(args.load)]
    for b in burners:
        b.start()
    facts["load"] = (f"{args.load} busy process(es) for the whole run" if args.load
                     else "none added")
    facts["Ctrl-C"] = (f"to {'the process group' if args.ctrl_c == 'group' else 'up alone'}, "
                       + ("once both serve" if args.stop_at == "served" else
                          "1-25 s after the start" if args.stop_at == "random" else
                          f"{args.stop_at} s after the start"))
    rows, served, stops = [], [], []
    ports = port_block()  # one block for every run: each run stops before the next starts
    try:
        for i in range(1, args.runs + 1):
            stop_at = (None if args.stop_at == "served" else random.uniform(1, 25)
                       if args.stop_at == "random" else float(args.stop_at))
            r = one_run(ports, stop_at=stop_at, group=args.ctrl_c == "group")
            if stop_at is not None:
                r["stop_at"] = round(stop_at, 1)
            ok = (r["served"] is not None or stop_at is not None) and r["left"] == 0 \
                and not r["error"]
            print(f"run {i}: {r}", flush=True)
            if r["served"] is not None:
                served.append(float(r["served"]))  # type: ignore[arg-type]
            if r["stop"] is not None:
                stops.append(float(r["stop"]))  # type: ignore[arg-type]
            rows.append((i, f"{r['served']:.1f}" if r["served"] else
                         f"stopped at {r['stop_at']}" if "stop_at" in r else "-",
                         f"{r['stop']:.1f}" if r["stop"] else "-", r["left"],
                         "yes" if ok else f"no: {r['error']}"))
    finally:
        for b in burners:
            b.kill()
    ok_runs = sum(1 for row in rows if row[4] == "yes")
    body = [f"`tenantry up --demo` from an empty data dir, {args.runs} runs, "
            f"{ok_runs} of {args.runs} " + ("served both demo platforms over HTTPS and "
                                             if args.stop_at == "served" else "") +
            "left nothing running after Ctrl-C (target: all).", "",
            md_table(["run", "both serving (s)", "Ctrl-C to exit (s)", "left running", "ok"],
                     rows)]
    if served:
        s = summary(served)
        body += ["", f"Serving: p50 {s['p50']:.1f} s, max {s['max']:.1f} s."]
    if stops:
        body += [f"Stopping: p50 {summary(stops)['p50']:.1f} s, max {max(stops):.1f} s."]
    title = "The README's first command (bench/first_command.py)"
    append_report(title + (f", under load {args.load}" if args.load else ""), facts,
                  "\n".join(body))
    print("\n".join(body))
    if ok_runs != args.runs:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
