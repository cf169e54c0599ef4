"""Density: memory of N idle small platforms on one host.

A fresh `tenantry up`, bodyshop 1.0.0 released, N platforms of size "s" created (a few at a
time), all verified to answer HTTPS 200 on /health through the ingress, left idle for a
settle period, then measured. A platform's processes are found from the agent's
supervisord (DATA_DIR/agent/services/supervisord.pid) and all its descendants; as root each
platform's processes (its PostgreSQL cluster and its app processes) run as the Unix user
`tp-<platform id>`, so they are grouped by uid (and, failing that, by the supervisord
program `<platform id>-...` they descend from). For each process RSS and PSS are read from
/proc/PID/smaps_rollup; a platform's figure is the sum over its processes. PSS shares the
pages that processes have in common (the release virtualenv, postgres binaries) fairly;
RSS counts them again in every process.

Then the machine's idle CPU is measured over `--idle-cpu` seconds (/proc/stat), and the
CPU time of each process over the same window (/proc/PID/stat), summed by part: each
platform's own processes (its PostgreSQL and app, by its Unix user), the agent, supervisord,
Caddy, the API, the worker, `up`, the store's PostgreSQL, the exporters, Prometheus and
Alertmanager, each with the time of the children it reaped in the window (a cluster's
backends, one per connection); then the kernel's threads by name, the machine's other
processes and interrupts, so that the parts account for the machine's busy time.
Target (issue 13): with 300 idle platforms, the machine ≤ 10 % of its cores.

With `--serial K`, provisioning is timed as issue 13 asks: K platforms created one at a
time on the empty host (the baseline, in the same run), then, once the host holds the
others, K more one at a time; each from the API call until it serves HTTPS; the p50 of the
full host against the empty host's (target: within 1.3x). The 2K count among `--count`.

With `--restart`, `tenantry up` is then stopped (SIGTERM, as Ctrl-C), started again until
every platform serves, and stopped again, each timed (issue 13: 300 platforms, ≤ 30 s each
way). With `--profile S`, py-spy samples the agent, the API and the worker for S seconds
after the idle window and their busiest functions are listed.

    .venv/bin/python bench/density.py [--count 40] [--concurrency 4] [--settle 30]
                                      [--idle-cpu 60] [--restart] [--profile 30]
                                      [--serial 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    append_report,
    create_platform,
    log_tail,
    machine_facts,
    md_table,
    mem_used_mib,
    other_tenantry_ups,
    setup_isv,
    short_tmp,
    start_plane,
    wait_https,
    wait_job,
)

TARGET_MIB = 80.0


def _stats() -> Iterator[tuple[int, str]]:
    """(pid, /proc/PID/stat) of every process still there when read."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                yield int(proc.name), (proc / "stat").read_text()
            except OSError:
                continue


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = defaultdict(list)
    for pid, stat in _stats():
        kids[int(stat.rsplit(")", 1)[1].split()[1])].append(pid)
    return kids


def descendants(pid: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def proc_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise OSError(f"no Uid for {pid}")


def rss_pss_kib(pid: int) -> tuple[int, int]:
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def measure(data_dir: Path, platform_ids: set[str]) -> dict[str, dict[str, Any]]:
    sup = int((data_dir / "agent" / "services" / "supervisord.pid").read_text().strip())
    kids = children_map()
    # the uid (`tp-<platform id>`) decides; the fallback for a non-root run is the
    # supervisord program (a direct child of supervisord) whose command line names the
    # platform's directory.
    per: dict[str, dict[str, Any]] = {pid: {"procs": [], "rss": 0, "pss": 0}
                                      for pid in platform_ids}
    top_owner: dict[int, str] = {}
    for top in kids.get(sup, []):
        try:
            cmd = Path(f"/proc/{top}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        for pid_ in platform_ids:
            if f"/platforms/{pid_}/" in cmd:
                top_owner[top] = pid_
    for top in kids.get(sup, []):
        for p in [top, *descendants(top, kids)]:
            try:
                uid = proc_uid(p)
                user = pwd.getpwuid(uid).pw_name
                rss, pss = rss_pss_kib(p)
                name = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0].decode()
            except (OSError, KeyError):
                continue
            owner = user[3:] if user.startswith("tp-") and user[3:] in per else top_owner.get(top)
            if owner is None:
                continue
            rec = per[owner]
            rec["procs"].append((p, user, name))
            rec["rss"] += rss
            rec["pss"] += pss
    return per


CLK_TCK = 100  # os.sysconf("SC_CLK_TCK") on Linux


def _cpu_ticks() -> dict[int, tuple[int, int, str]]:
    """pid -> (utime + stime in ticks, uid, what the process is)."""
    out: dict[int, tuple[int, int, str]] = {}
    for pid, stat in _stats():
        proc = Path(f"/proc/{pid}")
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            uid = proc.stat().st_uid
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[pid] = (int(fields[11]) + int(fields[12]), uid,
                    " ".join(a.decode(errors="replace") for a in argv))
    return out


def _part(uid: int, what: str, data_dir: Path) -> str | None:
    """Which part of the host a process is (None: not ours)."""
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = ""
    if user.startswith("tp-"):
        return "platforms (PostgreSQL + app)"
    if str(data_dir) not in what and "tenantry" not in what:
        return None
    for needle, part in (("cli.run agent", "agent"), ("supervisord", "supervisord"),
                         ("caddy", "Caddy"), ("serve-api", "API"),
                         ("serve-worker", "worker"),
                         ("node-exporter", "exporters"), ("postgres_exporter", "exporters"),
                         ("postgres-exporter", "exporters"), ("blackbox", "exporters"),
                         ("prometheus", "Prometheus"), ("alertmanager", "Alertmanager"),
                         ("postgres", "store PostgreSQL")):
        if needle in what:
            return part
    return "up, and the rest of the data dir"


def _machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


_PROM_COUNTERS = ("process_cpu_seconds_total", "prometheus_rule_evaluation_duration_seconds_sum",
                  'prometheus_tsdb_head_samples_appended_total{type="float"}',
                  "prometheus_tsdb_head_series")


def _prometheus(data_dir: Path, path: str) -> Any:
    port = json.loads((data_dir / "monitoring" / "ports.json").read_text())["prometheus"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return answer.read().decode()


def prometheus_counters(data_dir: Path) -> dict[str, float]:
    """Prometheus's own counters that say where its CPU goes (it does not scrape itself)."""
    found = {}
    for line in _prometheus(data_dir, "/metrics").splitlines():
        name, _, value = line.rpartition(" ")
        if name in _PROM_COUNTERS:
            found[name] = float(value)
    return found


def prometheus_rows(data_dir: Path, before: dict[str, float], after: dict[str, float],
                    seconds: float) -> list[tuple[str, str]]:
    """Prometheus over the idle window: its CPU, its rules' evaluation time, what it
    ingests, and the samples each scrape job brings."""
    def rate(name: str) -> float:
        return (after.get(name, 0.0) - before.get(name, 0.0)) / seconds

    rows = [("Prometheus CPU, share of one core (its own counter)",
             f"{100 * rate(_PROM_COUNTERS[0]):.1f} %"),
            ("its rules' evaluation, wall seconds per second",
             f"{rate(_PROM_COUNTERS[1]):.3f}"),
            ("samples appended per second", f"{rate(_PROM_COUNTERS[2]):.0f}"),
            ("series in the head block", f"{after.get(_PROM_COUNTERS[3], 0):.0f}")]
    query = quote("sum by (job) (scrape_samples_post_metric_relabeling)")
    result = json.loads(_prometheus(data_dir, f"/api/v1/query?query={query}"))
    for r in sorted(result["data"]["result"], key=lambda r: r["metric"].get("job", "")):
        rows.append((f"samples per round of scrapes, job {r['metric'].get('job')}",
                     r["value"][1]))
    return rows + scrape_rows(data_dir, seconds)


def scrape_rows(data_dir: Path, seconds: float) -> list[tuple[str, str]]:
    """Each job's scrapes over the window: how long they took (mean, max) and the share
    that answered within the timeout. A failed scrape of the agent is half a false "host
    silent"."""
    window = f"{max(1, int(seconds))}s"
    asks = {"mean": f"avg by (job) (avg_over_time(scrape_duration_seconds[{window}]))",
            "max": f"max by (job) (max_over_time(scrape_duration_seconds[{window}]))",
            "up": f"avg by (job) (avg_over_time(up[{window}]))"}
    found: dict[str, dict[str, float]] = defaultdict(dict)
    try:
        for key, ask in asks.items():
            answer = json.loads(_prometheus(data_dir, f"/api/v1/query?query={quote(ask)}"))
            for r in answer["data"]["result"]:
                found[r["metric"].get("job", "?")][key] = float(r["value"][1])
    except (OSError, ValueError, KeyError) as exc:  # the figures above stand without these
        return [("scrape durations", f"not read: {type(exc).__name__}: {exc}")]
    return [(f"job {job}: scrape mean / max, answered",
             f"{1000 * f.get('mean', 0):.0f} ms / {1000 * f.get('max', 0):.0f} ms, "
             f"{100 * f.get('up', 0):.1f} %") for job, f in sorted(found.items())]


def _reaped_and_comm() -> dict[int, tuple[int, str]]:
    """pid -> (CPU ticks of its children it has reaped, its comm): a postmaster's backends
    (one per connection) and a program's short-lived helpers end before a window does, and
    their time shows only there; kernel threads have no command line, only a comm."""
    out: dict[int, tuple[int, str]] = {}
    for pid, stat in _stats():
        fields = stat.rsplit(")", 1)[1].split()
        out[pid] = (int(fields[13]) + int(fields[14]), stat[stat.index("(") + 1:stat.rindex(")")])
    return out


def _interrupts() -> int:
    """Jiffies of all cores in hard and soft interrupts since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[5] + values[6]


def idle_cpu(data_dir: Path, seconds: float) -> tuple[float, dict[str, float]]:
    """The machine's busy share of all cores over `seconds`, and each part's share of one
    core over the same window (see CpuWindow)."""
    window = CpuWindow(data_dir)
    time.sleep(seconds)
    return window.close()


class CpuWindow:
    """CPU by part from its making to `close`: each part's processes' CPU time, with what
    they reaped of their children's (a platform's backends, say; all of it for a process
    born in the window); then the kernel's threads by name, the other processes on the
    machine, and interrupts, so that the parts add up to the machine."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.started = time.monotonic()
        self.before, self.machine, self.kids, self.irq = (
            _cpu_ticks(), _machine_busy(), _reaped_and_comm(), _interrupts())

    def close(self) -> tuple[float, dict[str, float]]:
        """The machine's busy share of all cores, and each part's share of one core."""
        seconds = time.monotonic() - self.started
        after, (b1, t1), kids1, irq1 = _cpu_ticks(), _machine_busy(), _reaped_and_comm(), \
            _interrupts()
        (b0, t0), kids0, before = self.machine, self.kids, self.before
        parts: dict[str, float] = defaultdict(float)
        for pid, (ticks, uid, what) in after.items():
            part = _part(uid, what, self.data_dir)
            used = ticks - before[pid][0] if pid in before else ticks
            if pid in kids1 and (pid in kids0 or pid not in before):
                used += kids1[pid][0] - (kids0[pid][0] if pid in kids0 else 0)
            if part is None:
                comm = kids1.get(pid, (0, ""))[1]
                part = (f"kernel thread {comm.split('/')[0]}" if not what.strip()
                        else "other processes on the machine")
            parts[part] += used / CLK_TCK / seconds
        parts["interrupts (hard and soft)"] = (irq1 - self.irq) / CLK_TCK / seconds
        shown = {k: v for k, v in parts.items()
                 if v >= 0.001 or not k.startswith("kernel thread")}
        rest = sum(v for k, v in parts.items() if k not in shown)
        if rest:
            shown["kernel threads, each under 0.1 %"] = rest
        return (b1 - b0) / max(1, t1 - t0), shown


def cpu_table(windows: list[tuple[float, dict[str, float]]],
              title: str = "the start's CPU, share of one core") -> str:
    """CpuWindow results side by side, one column each: the machine's busy share of all
    cores, then the parts at 1 % of a core or more in any of them, largest first."""
    parts = sorted({k for _, p in windows for k, v in p.items() if v >= 0.01},
                   key=lambda k: -max(p.get(k, 0.0) for _, p in windows))
    head = [title] + (["from start to all serving"] if len(windows) == 1 else
                      [f"run {i}" for i in range(1, len(windows) + 1)])
    rows = [["the machine, % of all its cores"] + [f"{100 * b:.1f} %" for b, _ in windows]]
    rows += [[k] + [f"{100 * p.get(k, 0.0):.1f} %" for _, p in windows] for k in parts]
    return md_table(head, rows)


@dataclass
class Restart:
    figures: dict[str, float]  # what was timed, seconds
    said: list[str]  # each stop's own account of its steps
    start_busy: float  # the machine's busy share of all cores over the start
    start_parts: dict[str, float]  # each part's share of one core over the start


def timed_restart(cp: Any, hosts: list[str]) -> Restart:
    """SIGTERM (Ctrl-C's stop), start again until every platform serves, SIGTERM again; with
    the line each stop said about where its time went, and who used the CPU in the start."""
    from startup import all_serving, spawn, wait_api

    said = []
    t = time.monotonic()
    said.append(stop_said(cp))
    first_stop = time.monotonic() - t
    print(f"stopped in {first_stop:.1f} s; starting again\n  {said[-1]}", flush=True)
    window = CpuWindow(cp.data_dir)
    t0 = spawn(cp)
    api = wait_api(cp, timeout=300) - t0
    last, _ = all_serving(cp, hosts, timeout=600)
    busy, parts = window.close()
    print(f"API after {api:.1f} s, all {len(hosts)} serving after {last - t0:.1f} s; the "
          f"machine {100 * busy:.0f} % busy meanwhile", flush=True)
    time.sleep(1)
    t = time.monotonic()
    said.append(stop_said(cp))
    again = time.monotonic() - t
    print(f"stopped again in {again:.1f} s\n  {said[-1]}", flush=True)
    return Restart({"stop (SIGTERM) → exited": first_stop, "start → API /health 200": api,
                    f"start → all {len(hosts)} platforms serving": last - t0,
                    "stop again (SIGTERM) → exited": again}, said, busy, parts)


STOP_LINES = {  # what each log says of a stop's steps
    "up": ("tenantry: stopped in",),
    "agent": ("supervisord stopped in", "the agent's last steps:"),
}


def stop_said(cp: Any) -> str:
    """Stop `up` and return its own account of the stop (`tenantry: stopped in ...`), with
    the agent's (how long supervisord's waves and its last steps took)."""
    logs = {"up": cp.log, "agent": cp.data_dir / "logs" / "agent.log"}
    before = {k: p.stat().st_size if p.exists() else 0 for k, p in logs.items()}
    cp.stop(timeout=300)
    said = []
    for k, path in logs.items():
        with contextlib.suppress(OSError), path.open("rb") as f:
            f.seek(before[k])
            text = f.read().decode(errors="replace")
            said += [line.split(": ", 1)[1] if k == "agent" else line
                     for line in text.splitlines()
                     if any(m in line for m in STOP_LINES[k])]
    return "; ".join(said) or "(up said nothing of its stop)"


def profile(data_dir: Path, seconds: float) -> dict[str, list[tuple[str, float]]]:
    """py-spy on the agent, the API and the worker at once: their top functions by own time."""
    spy = os.environ.get("PY_SPY", "py-spy")
    procs = {}
    for pid, (_, uid, what) in _cpu_ticks().items():
        part = _part(uid, what, data_dir)
        if part in ("agent", "API", "worker") and "py-spy" not in what:
            procs[pid] = part
    outs = {}
    running = []
    for pid in procs:
        out = Path(tempfile.mkstemp(prefix=f"spy-{pid}-", suffix=".txt")[1])
        outs[pid] = out
        running.append(subprocess.Popen(
            [spy, "record", "--nonblocking", "--rate", "50", "--format", "raw", "-d",
             str(int(seconds)), "-p", str(pid), "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for proc in running:
        proc.wait(seconds + 60)
    result = {}
    for pid, out in outs.items():
        own: dict[str, int] = defaultdict(int)
        total = 0
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frame = stack.rsplit(";", 1)[-1]
            if "(threading.py" in frame or "select" in frame or "wait" in frame.split(" ")[0]:
                continue  # idle threads waiting are not work
            own[frame] += int(count)
            total += int(count)
        out.unlink()
        top = sorted(own.items(), key=lambda x: -x[1])[:8]
        result[f"{procs[pid]} (pid {pid}, {total} busy samples)"] = [
            (f, 100 * c / max(1, total)) for f, c in top]
    return result


def _create_serially(cp: Any, names: list[str], created: dict[str, dict[str, Any]],
                     failures: list[str]) -> list[float]:
    """Create `names` one at a time; each one's seconds from the API call until it serves."""
    took = []
    for name in names:
        try:
            rec = create_platform(cp, name)
            rec["t_https"] = wait_https(cp, rec["host"], timeout=300) - rec["t0"]
            rec["state"] = wait_job(cp, rec["job_id"], timeout=300)["state"]
            created[name] = rec
            took.append(rec["t_https"])
            print(f"{name} ({rec['id']}) serving after {rec['t_https']:.1f} s (serial, "
                  f"{len(created)} on the host)", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported
            failures.append(f"{name}: {exc}")
            print(f"{name} FAILED: {exc}", flush=True)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--settle", type=float, default=30.0,
                    help="seconds to leave the platforms idle before measuring")
    ap.add_argument("--idle-cpu", type=float, default=60.0,
                    help="seconds over which the idle CPU is measured (0: not measured)")
    ap.add_argument("--restart", action="store_true",
                    help="then time a stop (SIGTERM, as Ctrl-C), a start until every platform "
                         "serves again, and a second stop")
    ap.add_argument("--profile", type=float, default=0.0,
                    help="seconds of py-spy on the agent, API and worker after the idle "
                         "window (py-spy from $PY_SPY, default `py-spy` on PATH)")
    ap.add_argument("--serial", type=int, default=0,
                    help="time K creations one at a time on the empty host and K on the full "
                         "host (issue 13: p50 within 1.3x)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    facts = machine_facts()
    root = short_tmp("tnb-dens-")
    cp = None
    notes: list[str] = []
    restart: Restart | None = None
    restart_failed = False
    profiles: dict[str, list[tuple[str, float]]] = {}
    try:
        used_before_up = mem_used_mib()
        cp = start_plane(root, platforms=args.count)
        others = other_tenantry_ups([cp.process.pid] if cp.process else [])
        if others:
            notes.append(f"{len(others)} other `tenantry up` process(es) were running on the "
                         "machine at the same time (other people's work): the machine-wide "
                         "memory figures include whatever they did meanwhile")
        setup_isv(cp, root)
        # warm-up platform builds the release virtualenv; it is measured like the others
        time.sleep(5)
        used_idle_plane = mem_used_mib()

        names = [f"d{i:03d}" for i in range(args.count)]
        created: dict[str, dict[str, Any]] = {}
        failures: list[str] = []
        lock = threading.Lock()
        # the first builds the release's virtualenv: it is not part of the baseline
        first = args.serial + 1 if args.serial else 0
        serial_empty = _create_serially(cp, names[:first], created, failures)[1:]
        queue = names[first:len(names) - args.serial]
        t_start = time.monotonic()

        def worker() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    name = queue.pop(0)
                try:
                    rec = create_platform(cp, name)
                    rec["t_https"] = wait_https(cp, rec["host"], timeout=300) - rec["t0"]
                    j = wait_job(cp, rec["job_id"], timeout=300)
                    rec["state"] = j["state"]
                    with lock:
                        created[name] = rec
                    print(f"{name} ({rec['id']}) serving after {rec['t_https']:.1f} s, "
                          f"job {j['state']}  [{len(created)}/{args.count}]", flush=True)
                except Exception as exc:  # noqa: BLE001 - reported
                    with lock:
                        failures.append(f"{name}: {exc}")
                    print(f"{name} FAILED: {exc}", flush=True)

        threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        t_create = time.monotonic() - t_start
        print(f"{len(created)} platforms created in {t_create:.1f} s; {len(failures)} failed")
        serial_full = _create_serially(cp, names[len(names) - args.serial:] if args.serial
                                       else [], created, failures)

        print(f"idle for {args.settle:.0f} s ...")
        time.sleep(args.settle)

        # every platform must serve
        serving = 0
        not_serving = []
        for name, rec in sorted(created.items()):
            try:
                r = cp.https(rec["host"], "/health")
                if r.status_code == 200:
                    serving += 1
                else:
                    not_serving.append(f"{name}: HTTP {r.status_code}")
            except Exception as exc:  # noqa: BLE001
                not_serving.append(f"{name}: {type(exc).__name__}: {exc}")
        print(f"serving HTTPS 200: {serving}/{args.count}")

        cpu = ""
        machine_busy = None
        if args.idle_cpu > 0:
            print(f"measuring idle CPU over {args.idle_cpu:.0f} s ...", flush=True)
            prom_before = prometheus_counters(cp.data_dir)
            machine_busy, parts = idle_cpu(cp.data_dir, args.idle_cpu)
            prom_rows = prometheus_rows(cp.data_dir, prom_before,
                                        prometheus_counters(cp.data_dir), args.idle_cpu)
            cpu_rows = [(part, f"{100 * share:.1f} %")
                        for part, share in sorted(parts.items(), key=lambda x: -x[1])]
            per_platform = parts.get("platforms (PostgreSQL + app)", 0.0) / max(1, len(created))
            cpu_rows.append(("one platform's own processes, mean", f"{100 * per_platform:.2f} %"))
            cpu = (md_table(["idle CPU, share of one core", "over the window"], cpu_rows)
                   + "\n\n" + md_table(["Prometheus over the same window", ""], prom_rows))
            # printed now: a later phase that fails must not take these figures with it
            print(cpu)
            print(f"machine busy: {100 * machine_busy:.1f} % of all cores (target with 300: "
                  "≤ 10 %)", flush=True)
        used_all = mem_used_mib()
        per = measure(cp.data_dir, {rec["id"] for rec in created.values()})
        rows = []
        for name, rec in sorted(created.items()):
            m = per[rec["id"]]
            rows.append((name, rec["id"], len(m["procs"]), m["rss"] / 1024, m["pss"] / 1024))
        example = per[created[sorted(created)[0]]["id"]]["procs"] if created else []
        profiles = profile(cp.data_dir, args.profile) if args.profile > 0 else {}
        if args.restart:
            try:
                restart = timed_restart(cp, [rec["host"] for rec in created.values()])
            except Exception as exc:  # noqa: BLE001 - reported with the figures above
                print(log_tail(cp), file=sys.stderr)
                notes.append(f"the stop and start again failed: {type(exc).__name__}: {exc}")
                restart_failed = True
    except Exception:
        if cp is not None:
            print(log_tail(cp), file=sys.stderr)
        raise
    finally:
        if cp is not None:
            cp.stop(timeout=300)
            cp.cleanup()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    rss = [r[3] for r in rows]
    pss = [r[4] for r in rows]
    nproc = [r[2] for r in rows]
    delta = (used_all - used_idle_plane) / max(1, len(rows))
    pss_ok = bool(pss) and max(pss) <= TARGET_MIB
    rss_ok = bool(rss) and max(rss) <= TARGET_MIB
    verdict = pss_ok and serving == args.count and not restart_failed

    table = md_table(
        ["per platform (MiB)", "mean", "max", "min", f"vs target ≤ {TARGET_MIB:g} MiB"],
        [["PSS sum of its processes", f"{statistics.fmean(pss):.1f}", f"{max(pss):.1f}",
          f"{min(pss):.1f}", "PASS" if pss_ok else "FAIL"],
         ["RSS sum of its processes", f"{statistics.fmean(rss):.1f}", f"{max(rss):.1f}",
          f"{min(rss):.1f}", "PASS" if rss_ok else "FAIL (RSS double-counts shared pages)"],
         ["machine used-memory growth / platform", f"{delta:.1f}", "", "", ""]])
    machine = md_table(
        ["machine memory used (MemTotal − MemAvailable)", "MiB"],
        [["before `tenantry up`", f"{used_before_up:.0f}"],
         ["control plane idle, release uploaded, no platform", f"{used_idle_plane:.0f}"],
         [f"with {len(rows)} idle platforms", f"{used_all:.0f}"],
         ["total platforms' PSS", f"{sum(pss):.0f}"]])
    procs = ", ".join(sorted({n.rsplit('/', 1)[-1] for _, _, n in example}))
    print()
    print(table)
    print()
    print(machine)
    print(f"\nprocesses per platform: {min(nproc)}–{max(nproc)} ({procs})")
    print(f"serving: {serving}/{args.count}; density vs target: {'PASS' if verdict else 'FAIL'}")
    for line in not_serving + failures:
        print("  " + line)

    cpu_text = "" if machine_busy is None else (
        f"Idle CPU over {args.idle_cpu:.0f} s, the platforms left alone: the machine was busy "
        f"**{100 * machine_busy:.1f} % of all its cores**; by part (share of one core):\n\n"
        + cpu)
    body = f"""
{args.count} platforms of size `s` (bodyshop 1.0.0, one tenant each) created on a fresh
`tenantry up`, {args.concurrency} at a time ({t_create:.0f} s for all), then left idle
{args.settle:.0f} s. **{serving}/{args.count} answered HTTPS 200 on `/health` through the
ingress** at measurement time. Per platform: sum over its processes (found under the agent's
supervisord, grouped by the platform's Unix user `tp-<id>`) of RSS and PSS from
`/proc/PID/smaps_rollup`; {min(nproc)}–{max(nproc)} processes per platform ({procs}).
Caddy, supervisord, the agent and the control plane are not counted per platform.

{table}

{machine}

{cpu_text}

Verdict (max PSS per platform ≤ {TARGET_MIB:g} MiB and all serving, and back after `--restart`):
**{'PASS' if verdict else 'FAIL'}**
"""
    if args.serial and serial_empty and serial_full:
        empty_p50, full_p50 = statistics.median(serial_empty), statistics.median(serial_full)
        ratio = full_p50 / empty_p50
        table_s = md_table(
            ["created one at a time, until it serves", "p50 s", "max s", "n"],
            [["on the empty host (after the first, which builds the release)",
              f"{empty_p50:.2f}",
              f"{max(serial_empty):.2f}", str(len(serial_empty))],
             [f"on the host holding {args.count - args.serial}", f"{full_p50:.2f}",
              f"{max(serial_full):.2f}", str(len(serial_full))],
             ["full / empty (target ≤ 1.3)", f"{ratio:.2f}", "",
              "PASS" if ratio <= 1.3 else "FAIL"]])
        print()
        print(table_s)
        body += f"\nProvisioning, one platform at a time:\n\n{table_s}\n"
    if restart is not None:
        limit = 30.0  # issue 13, for 300 platforms
        rows_r = [[k, f"{v:.2f}", "PASS" if v <= limit else "FAIL"]
                  for k, v in restart.figures.items()]
        table_r = md_table(["stop and start again", "s", f"vs ≤ {limit:g} s"], rows_r)
        table_c = cpu_table([(restart.start_busy, restart.start_parts)])
        print()
        print(table_r)
        print(table_c)
        body += (f"\nThen `tenantry up` stopped with SIGTERM (what Ctrl-C does), started again "
                 f"and stopped again; every platform's `/health` through the ingress polled "
                 f"by 4 threads, each platform at most every 0.5 s on a kept connection:"
                 f"\n\n{table_r}\n\nWhat `up` and its agent said of each stop:\n\n"
                 + "".join(f"- `{line}`\n" for line in restart.said)
                 + f"\nThe machine was {100 * restart.start_busy:.1f} % busy from the start to "
                 f"the last platform serving; parts at 1 % of a core or more:\n\n{table_c}\n")
    for part, top in profiles.items():
        lines = "\n".join(f"| {share:.1f} % | `{frame}` |" for frame, share in top)
        print(f"\n{part}:\n{lines}")
        body += (f"\npy-spy, {args.profile:.0f} s of the {part} after the idle window (own "
                 f"time by function, share of its samples):\n\n| share | function |\n"
                 f"|---|---|\n{lines}\n")
    if failures or not_serving:
        notes += [f"not created: {f}" for f in failures]
        notes += [f"not serving: {f}" for f in not_serving]
    if notes:
        body += "\nNotes:\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    append_report("Density: idle small platforms (bench/density.py)", facts, body)
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
