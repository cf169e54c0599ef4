"""Shared bits of the benchmarks: a real `tenantry up`, platform helpers, and the report.

The control plane itself is driven exactly like the test suite does it
(`tests/conftest.py: ControlPlaneProcess`): a fresh data dir under /tmp, free ports,
the CLI through `python -m tenantry.cli.run`, HTTPS through the ingress with SNI.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform as pyplatform
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import tests.conftest as _conftest  # noqa: E402
from tests.conftest import (  # noqa: E402
    PORT_BLOCK,
    ControlPlaneProcess,
    build_bodyshop,
    curl_health,
    free_port,
    left_running,
    port_block,
    processes_mentioning,
    short_tmp,
)

TENANTRY_CMD = _conftest.TENANTRY

__all__ = ["TENANTRY_CMD", "ControlPlaneProcess", "build_bodyshop", "curl_health", "free_port",
           "port_block", "left_running", "processes_mentioning", "short_tmp"]

REPORT = REPO / "docs" / "benchmarks.md"
ISV = "bms"
TENANT = "lbh"
APP = "bodyshop@1.0.0"

INTRO = """# Benchmarks

Figures measured by the scripts in `bench/` against a real `tenantry up` (private
control-plane PostgreSQL, supervisord, Caddy ingress, local agent) on one machine. Each
script appends a dated section below with the machine it ran on, the exact command and
its results; nothing here is estimated. Run them with the project virtualenv, e.g.
`.venv/bin/python bench/provision.py`.
"""


# ---------------------------------------------------------------- machine and report

def machine_facts() -> dict[str, str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = meminfo()
    return {
        "uname -srm": subprocess.run(["uname", "-srm"], capture_output=True,
                                     text=True).stdout.strip(),
        "CPU": cpu,
        "nproc": str(os.cpu_count()),
        "memory": f"{mem['MemTotal'] / 1024:.0f} MiB total, "
                  f"{mem['MemAvailable'] / 1024:.0f} MiB available at start",
        "python": pyplatform.python_version(),
        "git": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip(),
    }


def meminfo() -> dict[str, int]:
    """/proc/meminfo in KiB."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0])
    return out


def mem_used_mib() -> float:
    m = meminfo()
    return (m["MemTotal"] - m["MemAvailable"]) / 1024


def other_tenantry_ups(own_pids: Iterable[int] = ()) -> list[str]:
    """Other `tenantry up` processes on the machine (other people's runs skew the figures)."""
    own = set(own_pids)
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in own:
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [c.decode(errors="replace") for c in cmd if c]
        if "up" in words and any("tenantry" in w for w in words) \
                and any(w.endswith("python3") or w.endswith("python") for w in words[:1]):
            found.append(f"pid {proc.name}: {' '.join(words)[:120]}")
    return found


def command_line() -> str:
    return ".venv/bin/python " + " ".join(shlex.quote(a) for a in
                                          [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def append_report(title: str, facts: dict[str, str], body: str) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    if not REPORT.exists():
        REPORT.write_text(INTRO)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    fact_lines = "\n".join(f"- {k}: {v}" for k, v in facts.items())
    section = (f"\n## {title} — {now}\n\n{fact_lines}\n- command: `{command_line()}`\n\n"
               f"{body.strip()}\n")
    with REPORT.open("a") as f:
        f.write(section)
    print(f"\nappended to {REPORT.relative_to(REPO)}")


# ---------------------------------------------------------------- statistics

def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); with few samples p95 is the max."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"n": len(values), "p50": statistics.median(values), "p95": pct(values, 95),
            "max": max(values), "min": min(values), "mean": statistics.fmean(values)}


# ---------------------------------------------------------------- control plane

def start_plane(root: Path, timeout: float = 120, env: dict[str, str] | None = None,
                platforms: int = 150) -> ControlPlaneProcess:
    # The platform ports come from a block no other control plane on the machine uses
    # (tests.conftest.port_block), so parallel runs never collide: two ports a platform.
    cp = ControlPlaneProcess(data_dir=root / "data", listen_port=free_port(),
                             ingress_port=free_port(), extra_env=dict(env or {}),
                             port_range=port_block(blocks=-(-(2 * platforms + 50) // PORT_BLOCK)))
    cp.start(timeout=timeout)
    return cp


@contextlib.contextmanager
def running_plane(root: Path, **start: Any) -> Iterator[ControlPlaneProcess]:
    """A started `tenantry up` under `root` (`start_plane`'s arguments). On the way out it
    is stopped and `root` removed; if the body failed, the end of its logs is printed
    first."""
    try:
        cp = start_plane(root, **start)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield cp
    except BaseException:
        print(log_tail(cp), file=sys.stderr)
        raise
    finally:
        cp.stop(timeout=300)
        cp.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def setup_isv(cp: ControlPlaneProcess, root: Path) -> None:
    bundle = build_bodyshop("1.0.0", root)
    cp.cli("isv", "create", ISV)
    cp.cli("tenant", "create", ISV, TENANT)
    cp.cli("app", "release", ISV, str(bundle))


def hostname_of(url: str) -> str:
    return urlsplit(url).hostname or url


def create_platform(cp: ControlPlaneProcess, name: str, app: str = APP) -> dict[str, Any]:
    """POST the create; returns {"t0", "id", "host", "job_id"} (t0 = monotonic before the call)."""
    t0 = time.monotonic()
    with cp.api() as api:
        r = api.post(f"/isvs/{ISV}/platforms",
                     json={"tenants": [TENANT], "app": app, "name": name})
    if r.status_code != 202:
        raise RuntimeError(f"create {name}: {r.status_code} {r.text}")
    body = r.json()
    return {"t0": t0, "name": name, "id": body["platform"]["id"],
            "host": hostname_of(body["platform"]["url"]), "job_id": body["job_id"]}


def wait_https(cp: ControlPlaneProcess, host: str, timeout: float = 180,
               interval: float = 0.05) -> float:
    """Poll https://host/health through the ingress until 200; returns monotonic time of it.

    One client for the whole wait (its TLS context made once, its connection kept): a new
    one each poll cost the bench about 40 ms of CPU a poll, and four waits at once took a
    quarter of the machine from the platforms being measured."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    with cp.ingress_client() as client:
        while time.monotonic() < deadline:
            try:
                r = cp.https(host, "/health", client=client)
                if r.status_code == 200:
                    return time.monotonic()
                last = f"HTTP {r.status_code}"
            except Exception as exc:  # noqa: BLE001 - any failure just means "not yet"
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(interval)
    raise TimeoutError(f"{host}: no HTTPS 200 on /health within {timeout:.0f} s ({last})")


def create_many(cp: ControlPlaneProcess, count: int, concurrency: int,
                prefix: str) -> list[dict[str, Any]]:
    """`count` platforms named PREFIX000..., `concurrency` at a time, each waited for until it
    serves and its create job succeeded; their `create_platform` records. The first failure
    stops the rest from starting, and all failures are raised together."""
    queue = [f"{prefix}{i:03d}" for i in range(count)]
    made: list[dict[str, Any]] = []
    failures: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not queue or failures:
                    return
                name = queue.pop(0)
            try:
                rec = create_platform(cp, name)
                wait_https(cp, rec["host"], timeout=300)
                state = wait_job(cp, rec["job_id"], timeout=300)["state"]
                if state != "succeeded":
                    raise RuntimeError(f"create job {state}")
                with lock:
                    made.append(rec)
                print(f"  {name} ({rec['id']}) serving [{len(made)}/{count}]", flush=True)
            except Exception as exc:  # noqa: BLE001 - raised below with the others
                with lock:
                    failures.append(f"{name}: {exc}")

    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if failures:
        raise RuntimeError("platforms not created: " + "; ".join(failures))
    return made


def job(cp: ControlPlaneProcess, job_id: int) -> dict[str, Any]:
    with cp.api() as api:
        r = api.get(f"/jobs/{job_id}")
    r.raise_for_status()
    return dict(r.json())


def wait_job(cp: ControlPlaneProcess, job_id: int, timeout: float = 300,
             interval: float = 0.1) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = job(cp, job_id)
        if j["state"] in ("succeeded", "failed"):
            return j
        time.sleep(interval)
    raise TimeoutError(f"job {job_id} not finished within {timeout:.0f} s")


def step_durations(j: dict[str, Any]) -> dict[str, float]:
    out = {}
    for step in j.get("steps", []):
        if step.get("started_at") and step.get("ended_at"):
            a = dt.datetime.fromisoformat(step["started_at"])
            b = dt.datetime.fromisoformat(step["ended_at"])
            out[step["name"]] = (b - a).total_seconds()
    return out


def destroy_platform(cp: ControlPlaneProcess, name: str) -> int:
    with cp.api() as api:
        r = api.delete(f"/platforms/{ISV}/{name}")
    if r.status_code != 202:
        raise RuntimeError(f"destroy {name}: {r.status_code} {r.text}")
    return int(r.json()["job_id"])


def list_platforms(cp: ControlPlaneProcess) -> list[dict[str, Any]]:
    return list(json.loads(cp.cli("platform", "list", "--json").stdout))


def log_tail(cp: ControlPlaneProcess, lines: int = 15) -> str:
    out = []
    paths = [cp.log, *sorted((cp.data_dir / "logs").glob("*.log"))]
    for path in paths:
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"==> {path} <==\n" + "\n".join(tail))
    return "\n".join(out)


def fmt(seconds: float) -> str:
    return f"{seconds:.2f}"
