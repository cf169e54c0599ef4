"""Fleet: one control plane and many simulated hosts, each carrying many platforms.

A real `tenantry up` (its API, worker and store; monitoring off) on this machine, and N
simulated hosts (default 1,000) in this process. Each host enrolls through the API with a
one-time token, like an agent, then behaves as an idle agent does (tenantry.agent.main):
it long-polls `GET /agent/desired` with the generation it holds (`If-None-Match`, held
44-55 s, drawn each time), fetches the whole document every 180-300 s, and posts a
heartbeat carrying only the reports that changed (all of them every 180-300 s): at its next
2-second pass when it has one to send, else at 80-100 % of the pace the control plane's
answer to its last heartbeat gave (6 s up to 300 hosts, longer in a larger fleet). The
first of each of these periods puts the host anywhere in it, as in a fleet whose agents
started at unrelated times (the agent's drawn periods bring agents that started together
there within minutes). It converges instantly: every platform of a
new document is reported at once as its desired state asks (database ready, releases
built, release commands run, slots healthy, route switched, backups taken), and an HTTPS
listener on the host's own loopback address answers the control plane's probes with the
certificate of each platform's route (SNI), as Caddy would.

The hosts' platforms (default 20 each) are written straight into the store, copies of one
platform created for real on the local host, each with its own name, hostname, certificate
and ports, and backups and checks as a platform that has run for a while has them
(finished at spread-out times, so the backup schedule sees them due at the fleet's steady
rate). Creating 20,000 platforms through jobs would take hours.

Then changes arrive at `--rate` per second, through the API, somewhere in the fleet: a
platform created, upgraded (to the other release), or failing (its host reports its app
unhealthy for 10 s). Measured over `--seconds`: the CPU and memory of the control plane
(API, worker, store), the latency (p50/p99) of the heartbeats and of the whole-document
fetches, the overhead of a long poll that found nothing, and the time from a change's API
call to the first document its host receives that holds it (through the worker: a job
writes the desired state). Targets (issue 13): the control plane ≤ 1 core, p99 ≤ 100 ms,
a change at its host ≤ 1 s.

    .venv/bin/python bench/fleet.py [--hosts 1000] [--platforms 20] [--rate 1] [--seconds 120]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import resource
import signal
import ssl
import statistics
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    APP,
    ISV,
    TENANT,
    append_report,
    build_bodyshop,
    create_platform,
    log_tail,
    machine_facts,
    md_table,
    pct,
    setup_isv,
    short_tmp,
    wait_job,
)
from density import _cpu_ticks, _part  # noqa: E402
from tests.conftest import ControlPlaneProcess, free_port  # noqa: E402

from tenantry.agent import main as agent_main  # noqa: E402
from tenantry.platforms.contract import PACE_HEADER, quiet_pace  # noqa: E402

REGION = "sim"
# as tenantry.agent.main: a pass every IDLE_WAIT s, a long poll held POLL_WAIT s, a heartbeat
# at the next pass when it carries a report, else at the quiet pace (QUIET_HEARTBEAT s, or
# what the control plane's answer to the last heartbeat said, PACE_HEADER); the whole
# document and every report at least every few minutes (DESIRED_REFRESH, FULL_REPORT), each
# after a random 60-100 % of that (SPREAD)
IDLE_WAIT, POLL_WAIT, QUIET_HEARTBEAT = agent_main.IDLE_WAIT, agent_main.POLL_WAIT, \
    agent_main.QUIET_HEARTBEAT
FULL_EVERY, SPREAD, JITTER = agent_main.DESIRED_REFRESH, agent_main.SPREAD, \
    agent_main.JITTER
WHOLE = (f"whole desired state (every {FULL_EVERY * SPREAD[0]:g}-{FULL_EVERY * SPREAD[1]:g} "
         "s)")
UNWELL_FOR = 10.0
# s between the last host's first document and the measured window: longer than a long
# poll, so that none measured began in the start's burst (1,000 whole documents and full
# reports in a few seconds; with 30 s, the first polls began then and ended in the window,
# 0.25 s late at the median, as their token's check had waited then)
WARM_UP = POLL_WAIT + 5
UPGRADE_TO = "bodyshop@1.1.0"
PLANE_PARTS = ("API", "worker", "store PostgreSQL", "up, and the rest of the data dir")


# ---------------------------------------------------------------- a small HTTP/1.1 client

class Conn:
    """One keep-alive HTTP/1.1 connection: the simulated hosts make about a thousand
    requests a second, and a full client library would need the CPUs being measured."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {token}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.headers: dict[str, str] = {}  # the last answer's, by lower-case name

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: str = "") -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                return await self._once(method, path, body, headers)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _once(self, method: str, path: str, body: bytes,
                    headers: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.auth}"
             f"{headers}Content-Length: {len(body)}\r\n\r\n").encode() + body)
        first = await self.reader.readline()
        if not first:  # the server closed the kept-alive connection: a new one
            raise ConnectionResetError("closed by the server")
        status = int(first.split()[1])
        length, close = 0, False
        self.headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            self.headers[name] = value.strip()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# ---------------------------------------------------------------- what a platform reports

def _spread(pid: str, what: str, period: float) -> float:
    """How long ago, within `period`, the platform's last `what` ended: spread by its id."""
    return zlib.crc32(f"{pid}:{what}".encode()) % int(period) + 60


def backups_of(pid: str, t0: float) -> list[dict[str, Any]]:
    """A platform's backups as the fleet starts, as a platform that has run for a while has
    them: a full within the last week, a differential within the last day and an
    incremental within the last 4 hours, at times spread by its id (the seed's observed
    state and the simulated host's reports agree). The backup schedule then sees them due at
    the fleet's steady rate, not all at once."""
    full = t0 - _spread(pid, "full", 7 * 86400)
    diff = max(full + 60, t0 - _spread(pid, "diff", 86400))
    incr = max(diff + 60, t0 - _spread(pid, "incr", 4 * 3600))
    return [_backup(f"{pid}-full", "full", full), _backup(f"{pid}-full-diff", "diff", diff),
            _backup(f"{pid}-full-incr", "incr", incr)]


def checks_of(pid: str, isv_id: str, t0: float) -> list[Any]:
    """The platform's last verify (daily) and restore test (weekly), ended well, as job rows
    (the schedule reads when each last succeeded from the jobs)."""
    from tenantry.core.models import Job

    out = []
    for check, period in (("verify", 86400), ("restore-test", 7 * 86400)):
        at = dt.datetime.fromtimestamp(t0 - _spread(pid, check, period), dt.UTC)
        out.append(Job(kind="backup", state="succeeded", isv_id=isv_id, platform_id=pid,
                       params={"type": check, "scheduled": True}, created_at=at,
                       started_at=at, ended_at=at))
    return out


def _backup(label: str, kind: str, finished: float) -> dict[str, Any]:
    return {"label": label, "type": kind, "started_at": finished - 5, "finished_at": finished,
            "size": 30_000_000, "stored": 4_000_000, "wal_start": "000000010000000000000002",
            "wal_stop": "000000010000000000000003"}


class Fleet:
    def __init__(self, args: argparse.Namespace, api: tuple[str, int], t0: float) -> None:
        self.args, self.api, self.t0 = args, api, t0
        self.stopping = False
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.lat_at: dict[str, list[float]] = defaultdict(list)  # when each call began
        self.errors: dict[str, int] = defaultdict(int)
        self.first_said: dict[str, str] = {}  # an error's first answer, for the report
        self.deltas: dict[str, int] = defaultdict(int)  # documents sent as a change
        self.paces: dict[int, int] = defaultdict(int)  # quiet pace told (s) → heartbeats
        self.waiting: dict[tuple[str, int], float] = {}  # (platform, gen) → when asked
        self.waiting_new: dict[str, float] = {}  # platform id → when its create was asked
        self.arrivals: dict[str, list[float]] = defaultdict(list)  # kind → seconds
        # platform → (its change's job, when asked), and each arrived change as (kind, job,
        # asked, arrived), wall clock: split at the job's write (`split_changes`)
        self.job_of: dict[str, tuple[int, float]] = {}
        self.arrived_changes: list[tuple[str, int, float, float]] = []
        self.kind_of: dict[str, str] = {}
        self.hosts: list[SimHost] = []
        self.routes: dict[str, tuple[str, str, str, bool]] = {}  # hostname → (pid, cert, key, ok)
        self.unwell_until: dict[str, float] = {}
        self.counting = False

    def error(self, what: str, body: bytes) -> None:
        self.errors[what] += 1
        self.first_said.setdefault(what, body[:300].decode("utf-8", "replace"))

    def record(self, what: str, seconds: float) -> None:
        if self.counting:
            self.lat[what].append(seconds)
            self.lat_at[what].append(time.monotonic() - seconds)

    def arrived(self, pid: str, gen: int) -> None:
        now = time.monotonic()
        asked = self.waiting_new.pop(pid, None)
        if asked is not None:
            self.arrivals["create"].append(now - asked)
            self._arrived_job("create", pid)
        for (wpid, wgen), at in list(self.waiting.items()):
            if wpid == pid and gen >= wgen:
                del self.waiting[(wpid, wgen)]
                self.arrivals[self.kind_of.get(pid, "upgrade")].append(now - at)
                self._arrived_job(self.kind_of.get(pid, "upgrade"), pid)

    def _arrived_job(self, kind: str, pid: str) -> None:
        job = self.job_of.pop(pid, None)
        if job is not None:
            self.arrived_changes.append((kind, job[0], job[1], time.time()))


def report_of(p: dict[str, Any], fleet: Fleet) -> dict[str, Any]:
    """Instant convergence: what a real agent reports once it made `p` true."""
    if p["absent"]:
        return {"gen": p["gen"], "absent": True}
    running, pid = p["running"], p["id"]
    unwell = fleet.unwell_until.get(pid, 0) > time.monotonic()
    slots = {name: {"state": "running" if running and s["running"] else "stopped",
                    "healthy": running and s["running"] and not unwell}
             for name, s in p["slots"].items()}
    report: dict[str, Any] = {
        "gen": p["gen"], "database": "ready" if running else "stopped",
        "releases": {r["id"]: "built" for r in p["releases"]},
        "migrations": {m["id"]: "ok" for m in p["migrations"]},
        "slots": slots, "route_slot": p["route"]["slot"] if p["route"] else None}
    backup = p.get("backup")
    if backup is not None:
        done = backups_of(pid, fleet.t0)
        tasks = {}
        for task in backup["tasks"]:
            if task["type"] in ("full", "diff", "incr"):
                label = f"{pid}-{task['id']}"
                done.append(_backup(label, task["type"], time.time()))
                tasks[task["id"]] = f"ok: {label}"
            else:
                tasks[task["id"]] = "ok"
        report["backup"] = {"stanza": "ready", "tasks": tasks, "backups": done,
                            "archived_at": time.time()}
    if p["route"]:
        fleet.routes[p["route"]["hostname"]] = (pid, p["route"]["cert_pem"],
                                                p["route"]["key_pem"],
                                                running and not unwell)
    return report


class SimHost:
    def __init__(self, fleet: Fleet, host_id: str, token: str, address: str) -> None:
        self.fleet, self.id, self.token, self.address = fleet, host_id, token, address
        self.gen = 0
        self.reports: dict[str, dict[str, Any]] = {}
        self.gens: dict[str, int] = {}
        self.unsent: set[str] = set()
        self.full_at = 0.0
        self.full_every = FULL_EVERY
        self.report_at = 0.0
        self.report_every = FULL_EVERY
        self.beat_at = 0.0
        self.quiet = QUIET_HEARTBEAT  # until the control plane says otherwise
        self.quiet_for = QUIET_HEARTBEAT  # the pace less a random part (the agent's JITTER)
        self.polled = self.paced = False

    @staticmethod
    def _spread(last: float) -> tuple[float, float]:
        """The share of the period to the next whole fetch or full report. The first puts the
        host anywhere in its period: a fleet's hosts started at unrelated times, not all in
        the bench's first seconds."""
        return SPREAD if last else (0.0, SPREAD[1])

    async def run(self) -> None:
        host, port = self.fleet.api
        poll, beat = Conn(host, port, self.token), Conn(host, port, self.token)
        # agents do not start in step: a fleet's hosts started at unrelated times
        await asyncio.sleep(random.random() * QUIET_HEARTBEAT)
        beating = asyncio.create_task(self._beat(beat))
        try:
            while not self.fleet.stopping:
                await self._fetch(poll)
        finally:
            beating.cancel()
            poll.close()
            beat.close()

    async def _fetch(self, conn: Conn) -> None:
        full = time.monotonic() - self.full_at >= self.full_every
        wait = 0.0
        t0 = time.monotonic()
        try:
            if full:
                status, body = await conn.request("GET", "/api/v1/agent/desired?generation=0")
            else:
                # as the agent: a change to the whole document it holds (`since`), held for
                # a wait drawn each time; the first anywhere in the period
                wait = round(agent_main.jittered(POLL_WAIT) if self.polled
                             else random.uniform(1, POLL_WAIT), 3)
                self.polled = True
                status, body = await conn.request(
                    "GET", f"/api/v1/agent/desired?generation={self.gen}&wait={wait:g}"
                    f"&since={self.gen}", headers=f'If-None-Match: "{self.gen}"\r\n')
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.fleet.errors["desired: connection"] += 1
            await asyncio.sleep(1)
            return
        took = time.monotonic() - t0
        if status == 304:
            self.fleet.record("long poll, nothing changed: time past its wait", took - wait)
            return
        if status != 200:
            self.fleet.error(f"desired: HTTP {status}", body)
            await asyncio.sleep(1)
            return
        if full:
            self.full_every = FULL_EVERY * random.uniform(*self._spread(self.full_at))
            self.full_at = time.monotonic()
            self.fleet.record(WHOLE, took)
        doc = json.loads(body)
        if doc.get("since") is not None:
            self.fleet.deltas["changes to a held document"] += 1
            self.fleet.deltas["platforms in them"] += len(doc["platforms"])
            if doc["since"] != self.gen:
                self.fleet.errors["desired: a change to a document not held"] += 1
                return
            kept = {p["id"]: p for p in self.doc["platforms"]}
            new = {p["id"] for p in doc["platforms"]}
            doc["platforms"] = [kept[i] for i in doc["unchanged"]
                                if i in kept and i not in new] + doc["platforms"]
        self._apply(doc)

    def _apply(self, doc: dict[str, Any]) -> None:
        seen = set()
        for p in doc["platforms"]:
            pid = p["id"]
            seen.add(pid)
            if self.gens.get(pid) != p["gen"]:
                self.gens[pid] = p["gen"]
                self.reports[pid] = report_of(p, self.fleet)
                self.unsent.add(pid)
                self.fleet.arrived(pid, p["gen"])
        for pid in set(self.reports) - seen:
            del self.reports[pid]
            self.gens.pop(pid, None)
        self.gen = doc["generation"]
        self.doc = doc

    def refresh(self, pid: str) -> None:
        """A platform's health changed here (the `fail` change): report it again."""
        for p in getattr(self, "doc", {}).get("platforms", []):
            if p["id"] == pid:
                self.reports[pid] = report_of(p, self.fleet)
                self.unsent.add(pid)

    async def _beat(self, conn: Conn) -> None:
        while True:
            await asyncio.sleep(IDLE_WAIT)
            now = time.monotonic()
            for pid, until in list(self.fleet.unwell_until.items()):
                if until <= now and pid in self.reports:  # well again: say so
                    del self.fleet.unwell_until[pid]
                    self.refresh(pid)
            full = now - self.report_at >= self.report_every
            ids = set(self.reports) if full else set(self.unsent)
            ids |= {pid for pid in self.reports
                    if self.fleet.unwell_until.get(pid, 0) > now}
            if not ids and now - self.beat_at < self.quiet_for:
                continue  # nothing to say yet
            self.beat_at = now
            sent = set(self.unsent)
            body = json.dumps({"agent_time": time.time(),
                               "platforms": {pid: self.reports[pid] for pid in ids}}).encode()
            t0 = time.monotonic()
            try:
                status, said = await conn.request("POST", "/api/v1/agent/report", body,
                                               "Content-Type: application/json\r\n")
            except (OSError, asyncio.IncompleteReadError, ValueError):
                self.fleet.errors["report: connection"] += 1
                continue
            self.fleet.record("heartbeat (report)", time.monotonic() - t0)
            if status == 204:
                # as the agent: the quiet pace the control plane asks for, within the range
                pace = quiet_pace(conn.headers.get(PACE_HEADER.lower()))
                self.quiet = float(pace or QUIET_HEARTBEAT)
                # the next quiet one at the agent's drawn pace; the first anywhere in it
                self.quiet_for = agent_main.jittered(self.quiet) if self.paced \
                    else random.uniform(IDLE_WAIT, self.quiet)
                self.paced = True
                self.fleet.paces[int(self.quiet)] += 1
                self.unsent -= sent
                if full:
                    self.report_every = FULL_EVERY * random.uniform(*self._spread(self.report_at))
                    self.report_at = now
            else:
                self.fleet.error(f"report: HTTP {status}", said)


# ---------------------------------------------------------------- the hosts' ingress

class Ingress:
    """What Caddy answers the control plane's probe: 200 from a platform whose route is
    there and whose app is well, with that platform's certificate (by SNI)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.dir = Path(tempfile.mkdtemp(prefix="fleet-certs-"))
        self.contexts: dict[str, ssl.SSLContext] = {}
        self.base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.base.sni_callback = self._sni  # type: ignore[assignment]
        # a context needs a certificate before SNI picks the real one: any platform's
        self.servers: list[asyncio.AbstractServer] = []

    def _context(self, hostname: str) -> ssl.SSLContext | None:
        route = self.fleet.routes.get(hostname)
        if route is None:
            return None
        ctx = self.contexts.get(hostname)
        if ctx is None:
            cert, key = self.dir / f"{hostname}.crt", self.dir / f"{hostname}.key"
            cert.write_text(route[1])
            key.write_text(route[2])
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.contexts[hostname] = ctx
        return ctx

    def _sni(self, sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> int | None:
        ctx = self._context(name or "")
        if ctx is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sock.context = ctx
        return None

    async def serve(self, addresses: list[str], port: int, any_cert: tuple[str, str]) -> None:
        cert, key = self.dir / "any.crt", self.dir / "any.key"
        cert.write_text(any_cert[0])
        key.write_text(any_cert[1])
        self.base.load_cert_chain(cert, key)
        for address in addresses:
            self.servers.append(await asyncio.start_server(self._answer, address, port,
                                                           ssl=self.base))

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            host = ""
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "host":
                    host = value.strip().split(":")[0]
            route = self.fleet.routes.get(host)
            ok = route is not None and route[3]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                         if ok else b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
            await writer.drain()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


# ---------------------------------------------------------------- set-up

def address_of(i: int) -> str:
    return f"127.31.{i // 250}.{i % 250 + 1}"


def seed(cp: ControlPlaneProcess, template_id: str, hosts: list[tuple[str, str]],
         per_host: int, t0: float) -> dict[str, str]:
    """`per_host` copies of the template platform on each host, straight into the store;
    returns platform id → name."""
    from tenantry.core.config import load_settings
    from tenantry.core.names import new_id
    from tenantry.core.runtime import make_runtime
    from tenantry.platforms.contract import PlatformReport, StoredCert
    from tenantry.platforms.models import Host, Platform, PortAllocation

    runtime = make_runtime(load_settings(data_dir=cp.data_dir), pool_size=2)
    names: dict[str, str] = {}
    domain = runtime.settings.domain
    with runtime.sessions() as session:
        template = session.get(Platform, template_id)
        assert template is not None and template.desired.db is not None
        tenants = list(template.tenants)
        for n, (host_id, _) in enumerate(hosts):
            host = session.get(Host, host_id)
            assert host is not None
            ports: list[PortAllocation] = []
            for j in range(per_host):
                pid, name = new_id("p"), f"f{n:04d}x{j:02d}"
                hostname = f"{name}.{ISV}.{domain}"
                issued = runtime.ca.issue_server_cert([hostname])
                want = template.desired.model_copy(deep=True)
                db_port, web_port = 20000 + 2 * j, 20001 + 2 * j
                assert want.db is not None
                want.db.port = db_port
                want.slots = {name_: slot.model_copy(update={"ports": [web_port]})
                              for name_, slot in want.slots.items()}
                want.hostname = hostname
                want.cert = StoredCert(cert_pem=issued.cert_pem, not_after=issued.not_after,
                                       key=runtime.secrets.encrypt(issued.key_pem,
                                                                   org=template.isv_id))
                want.backup_tasks, want.gen = [], 1
                observed = PlatformReport.model_validate({
                    "gen": 1, "database": "ready",
                    "backup": {"stanza": "ready", "backups": backups_of(pid, t0),
                               "archived_at": t0}})
                platform = Platform(id=pid, isv_id=template.isv_id, name=name, size="s",
                                    state="ready", region_id=host.region_id, host_id=host.id,
                                    release_id=template.release_id,
                                    db_password=template.db_password, desired=want,
                                    observed=observed,
                                    desired_at=host.generation + 1)  # as hosts.bump stamps
                platform.tenants.extend(tenants)
                session.add(platform)
                session.add_all(checks_of(pid, template.isv_id, t0))
                ports += [PortAllocation(address=host.address, port=db_port, platform_id=pid,
                                         purpose="database"),
                          PortAllocation(address=host.address, port=web_port, platform_id=pid,
                                         purpose="slot a")]
                names[pid] = name
            session.flush()  # the platforms before the ports that refer to them
            session.add_all(ports)
            host.generation += 1
            session.commit()
            if (n + 1) % 100 == 0:
                print(f"seeded {n + 1}/{len(hosts)} hosts", flush=True)
    runtime.engine.dispose()
    return names


def enroll_all(cp: ControlPlaneProcess, count: int, ingress_port: int) -> list[tuple[str, str]]:
    """(host id, agent token) of `count` hosts enrolled through the API."""
    out = []
    with cp.api() as api:
        for i in range(count):
            token = api.post("/hosts/enroll-tokens").json()["token"]
            r = api.post("/agent/enroll", json={
                "token": token, "name": f"sim{i:04d}", "region": REGION,
                "address": address_of(i), "ingress_port": ingress_port,
                "port_min": 20000, "port_max": 29999})
            r.raise_for_status()
            out.append((r.json()["host_id"], r.json()["agent_token"]))
            if (i + 1) % 200 == 0:
                print(f"enrolled {i + 1}/{count} hosts", flush=True)
    return out


# ---------------------------------------------------------------- the run

async def changes(fleet: Fleet, cp: ControlPlaneProcess, names: dict[str, str],
                  host_of: dict[str, SimHost], log: dict[str, int]) -> None:
    """A change somewhere every 1/rate s: a create, an upgrade, or a platform failing."""
    import httpx

    rng = random.Random(7)
    upgraded: dict[str, str] = {}
    created = 0
    async with httpx.AsyncClient(base_url=f"{cp.url}/api/v1", timeout=60,
                                 headers={"Authorization": f"Bearer {cp.token}"}) as api:
        while not fleet.stopping:
            await asyncio.sleep(1 / fleet.args.rate)
            kind = rng.choice(("create", "upgrade", "fail"))
            pid = rng.choice(list(names))
            asked = time.time()
            try:
                if kind == "create":
                    created += 1
                    r = await api.post(f"/isvs/{ISV}/platforms", json={
                        "tenants": [TENANT], "app": APP, "name": f"new{created:04d}",
                        "region": REGION})
                    if r.status_code == 202:
                        new = r.json()
                        fleet.waiting_new[new["platform"]["id"]] = time.monotonic()
                        fleet.job_of[new["platform"]["id"]] = (new["job_id"], asked)
                elif kind == "upgrade":
                    to = APP if upgraded.get(pid) == UPGRADE_TO else UPGRADE_TO
                    r = await api.post(f"/platforms/{ISV}/{names[pid]}/upgrade",
                                       json={"app": to})
                    if r.status_code == 202:
                        fleet.job_of[pid] = (r.json()["job_id"], asked)
                        upgraded[pid] = to
                        gen = host_of[pid].gens.get(pid, 0) if pid in host_of else 0
                        fleet.waiting[(pid, gen + 1)] = time.monotonic()
                        fleet.kind_of[pid] = "upgrade"
                else:
                    fleet.unwell_until[pid] = time.monotonic() + UNWELL_FOR
                    host = host_of.get(pid)
                    if host is not None:
                        host.refresh(pid)
                    r = None
                if r is not None:  # the API's answer to a person's call, beside the agents'
                    fleet.record(f"{kind} (a person's call, through the API)",
                                 time.time() - asked)
                outcome = "ok" if r is None or r.status_code == 202 else f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            log[f"{kind}: {outcome}"] += 1


async def run_fleet(fleet: Fleet, cp: ControlPlaneProcess, enrolled: list[tuple[str, str]],
                    names: dict[str, str], ingress: Ingress, ingress_port: int,
                    any_cert: tuple[str, str]) -> dict[str, Any]:
    fleet.hosts = [SimHost(fleet, hid, tok, address_of(i))
                   for i, (hid, tok) in enumerate(enrolled)]
    await ingress.serve([h.address for h in fleet.hosts], ingress_port, any_cert)
    tasks = [asyncio.create_task(h.run()) for h in fleet.hosts]
    # every host holds its document before the measurement starts
    deadline = time.monotonic() + 600
    while sum(1 for h in fleet.hosts if h.gen) < len(fleet.hosts):
        if time.monotonic() > deadline:
            raise TimeoutError("hosts without a desired state after 600 s")
        await asyncio.sleep(1)
    host_of = {pid: h for h in fleet.hosts for pid in h.reports}
    print(f"{len(fleet.hosts)} hosts hold their desired state; warming up", flush=True)
    await asyncio.sleep(WARM_UP)
    log: dict[str, int] = defaultdict(int)
    changer = asyncio.create_task(changes(fleet, cp, names, host_of, log))
    lateness = asyncio.create_task(_lateness(fleet))
    fleet.counting = True
    started = dt.datetime.now(dt.UTC)
    before = _cpu_ticks()
    t0 = time.monotonic()
    print(f"measuring over {fleet.args.seconds:.0f} s ...", flush=True)
    await asyncio.sleep(fleet.args.seconds)
    window = time.monotonic() - t0
    after = _cpu_ticks()
    fleet.counting = False
    changer.cancel()
    lateness.cancel()
    jobs = await drain(cp, started)  # the hosts answer until the changes' jobs ended
    jobs["split"] = await split_changes(cp, fleet.arrived_changes)
    fleet.stopping = True
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, changer, return_exceptions=True)
    parts: dict[str, float] = defaultdict(float)
    own = os.getpid()
    for pid, (ticks, uid, what) in after.items():
        part = "the simulated hosts (this process)" if pid == own else _part(uid, what,
                                                                             cp.data_dir)
        if part is None:
            continue
        used = ticks - before[pid][0] if pid in before else ticks
        parts[part] += used / os.sysconf("SC_CLK_TCK") / window
    return {"parts": dict(parts), "window": window, "changes": dict(log), "jobs": jobs}


async def _lateness(fleet: Fleet, every: float = 0.05) -> None:
    """How late this process's own event loop wakes: the calls' latencies are measured
    here, so a stall of the simulated hosts would show in them as the API's."""
    while True:
        asked = time.monotonic()
        await asyncio.sleep(every)
        fleet.record("the bench's own event loop: lateness of a 50 ms sleep",
                     time.monotonic() - asked - every)


async def drain(cp: ControlPlaneProcess, since: dt.datetime,
                timeout: float = 120) -> dict[str, Any]:
    """Wait (up to `timeout`) until no job is queued or running; then the jobs created
    since `since`, counted by kind and outcome, with a few of the failures' reasons."""
    import httpx

    async with httpx.AsyncClient(base_url=f"{cp.url}/api/v1", timeout=60,
                                 headers={"Authorization": f"Bearer {cp.token}"}) as api:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = [j for state in ("queued", "running")
                    for j in (await api.get("/jobs", params={"state": state})).json()]
            if not busy:
                break
            await asyncio.sleep(2)
        recent = (await api.get("/jobs", params={"limit": 500})).json()
        stuck = [(await api.get(f"/jobs/{j['id']}")).json() for j in [
            j for j in recent if j["state"] in ("queued", "running")][:3]]
    counts: dict[str, int] = defaultdict(int)
    failures: list[str] = []
    for j in recent:
        created = dt.datetime.fromisoformat(j["created_at"])
        if (created if created.tzinfo else created.replace(tzinfo=dt.UTC)) < since:
            continue
        counts[f"{j['kind']} {j['state']}"] += 1
        if j["state"] == "failed" and len(failures) < 3:
            failures.append(f"{j['kind']} of {j['platform']}: {j['error']}")
    for j in stuck:
        failures.append(f"still {j['state']}: {j['kind']} of {j['platform']}: "
                        f"{json.dumps({k: v for k, v in j.items() if 'step' in k})}")
    return {"counts": dict(counts), "failures": failures}


async def split_changes(cp: ControlPlaneProcess, arrived: list[tuple[str, int, float, float]]
                        ) -> dict[str, dict[str, list[float]]]:
    """Each arrived change's time, split where its job started (as the store recorded it):
    before, the wait for a worker's slot; after, the job's first write (a create's `place`,
    an upgrade's restore point or `prepare`), the long poll's wake and the document.
    Seconds, by kind."""
    import httpx

    split: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    async with httpx.AsyncClient(base_url=f"{cp.url}/api/v1", timeout=60,
                                 headers={"Authorization": f"Bearer {cp.token}"}) as api:
        for kind, job_id, asked, at_host in arrived:
            started = (await api.get(f"/jobs/{job_id}")).json().get("started_at")
            if started is None:
                continue
            at = dt.datetime.fromisoformat(started)
            started_at = (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).timestamp()
            split[kind]["slot"].append(started_at - asked)
            split[kind]["after"].append(at_host - started_at)
    return {kind: dict(parts) for kind, parts in split.items()}


def rss_mib(data_dir: Path) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for pid, (_, uid, what) in _cpu_ticks().items():
        part = _part(uid, what, data_dir)
        if part in PLANE_PARTS:
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        out[part] += int(line.split()[1]) / 1024
            except OSError:
                continue
    return dict(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--platforms", type=int, default=20, help="per host")
    ap.add_argument("--rate", type=float, default=1.0, help="changes a second")
    ap.add_argument("--seconds", type=float, default=120.0, help="the measured window")
    ap.add_argument("--api-processes", type=int, default=1,
                    help="the control plane's API processes (up --api-processes)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--no-report", action="store_true", help="append nothing to the report")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the plane on the way out
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

    facts = machine_facts()
    root = short_tmp("tnb-fleet-")
    cp = ControlPlaneProcess(data_dir=root / "data", listen_port=free_port(),
                             ingress_port=free_port(),
                             extra_env={"TENANTRY_MONITORING": "false",
                                        "TENANTRY_API_PROCESSES": str(args.api_processes)})
    t0 = time.time()
    try:
        cp.start(timeout=180)
        setup_isv(cp, root)
        cp.cli("app", "release", ISV, str(build_bodyshop(UPGRADE_TO.split("@")[1], root)))
        rec = create_platform(cp, "template")
        job = wait_job(cp, rec["job_id"], timeout=300)
        if job["state"] != "succeeded":
            raise RuntimeError(f"the template platform: {job}")
        ingress_port = free_port()
        enrolled = enroll_all(cp, args.hosts, ingress_port)
        t = time.monotonic()
        names = seed(cp, rec["id"], enrolled, args.platforms, t0)
        print(f"seeded {len(names)} platforms in {time.monotonic() - t:.0f} s", flush=True)
        any_cert = _any_cert(cp)
        fleet = Fleet(args, ("127.0.0.1", cp.listen_port), t0)
        ingress = Ingress(fleet)
        result = asyncio.run(run_fleet(fleet, cp, enrolled, names, ingress, ingress_port,
                                       any_cert))
        memory = rss_mib(cp.data_dir)
    except Exception:
        print(log_tail(cp, 40), file=sys.stderr)
        raise
    finally:
        cp.stop(timeout=300)
        cp.cleanup()
        if not args.keep:
            import shutil
            shutil.rmtree(root, ignore_errors=True)

    parts = result["parts"]
    plane = sum(v for k, v in parts.items() if k in PLANE_PARTS)
    cpu_rows = [[k, f"{100 * v:.1f} %"] for k, v in sorted(parts.items(), key=lambda x: -x[1])]
    cpu_rows.append(["**the control plane (API, worker, store, up)**", f"**{100 * plane:.1f} %**"])
    lat_rows = []
    for what, values in sorted(fleet.lat.items()):
        ms = [1000 * v for v in values]
        lat_rows.append([what, str(len(ms)), f"{statistics.median(ms):.1f}",
                         f"{pct(ms, 99):.1f}", f"{max(ms):.1f}"])
    arrival_rows = []
    for kind, values in sorted(fleet.arrivals.items()):
        arrival_rows.append([kind, str(len(values)), f"{statistics.median(values):.2f}",
                             f"{pct(values, 99):.2f}", f"{max(values):.2f}"])
    pending = len(fleet.waiting) + len(fleet.waiting_new)
    split_rows = []
    for kind, split in sorted(result["jobs"]["split"].items()):
        for part, label in (("slot", "to the job's start (a worker's free slot)"),
                            ("after", "from its start to the host (write, long poll)")):
            values = split.get(part, [])
            if values:
                split_rows.append([kind, label, str(len(values)),
                                   f"{statistics.median(values):.2f}",
                                   f"{pct(values, 99):.2f}", f"{max(values):.2f}"])
    body = f"""
One `tenantry up` ({args.api_processes} API process(es), a worker, the store; monitoring off;
`--api-processes {args.api_processes}`) and {args.hosts} simulated hosts of
{args.platforms} platforms each ({args.hosts * args.platforms} platforms, seeded in the
store), every host an idle agent's traffic (a long poll with `If-None-Match` held
{POLL_WAIT * JITTER[0]:g}-{POLL_WAIT:g} s, drawn each time, the whole document every
{FULL_EVERY * SPREAD[0]:g}-{FULL_EVERY:g} s, a heartbeat at the next {IDLE_WAIT:g} s pass
when a report changed and else at {100 * JITTER[0]:g}-100 % of the control plane's pace,
all reports every {FULL_EVERY * SPREAD[0]:g}-{FULL_EVERY:g} s; the first of each period
anywhere in it);
changes through the API at {args.rate:g}/s, a create, an upgrade or a platform failing, at
random. Measured over {result['window']:.0f} s.

CPU, share of one core (the machine has {os.cpu_count()}):

{md_table(["part", "CPU"], cpu_rows)}

Memory (PSS) of the control plane at the end: {', '.join(f'{k} {v:.0f} MiB'
                                                       for k, v in memory.items())}.

Latency of the agents' calls, and of the changes asked through the API (ms):

{md_table(["call", "n", "p50", "p99", "max"], lat_rows)}

From a change's API call to the first desired state its host received that holds it (s;
a create's and an upgrade's go through the worker, whose job writes the desired state):

{md_table(["change", "n", "p50", "p99", "max"], arrival_rows)}

The same, split where the change's job started (as the store recorded it; the part before
holds the API's answer to the call, above); an upgrade's first write asks for its restore
point's backup (s):

{md_table(["change", "part", "n", "p50", "p99", "max"], split_rows)}

Changes asked: {', '.join(f'{k} {v}' for k, v in sorted(result['changes'].items()))};
{pending} not at their host by the end. Errors: {dict(fleet.errors) or 'none'}.
{''.join(f"{k}, the first answer: {v!r}. " for k, v in fleet.first_said.items())}
Desired states sent as a change to the one held: {dict(fleet.deltas) or 'none'}.
Quiet heartbeat pace the control plane's answers gave (s → heartbeats, the whole run):
{dict(sorted(fleet.paces.items())) or 'none'}.
Jobs created in the window, by outcome (the hosts kept answering until they ended, up to
2 min): {', '.join(f'{k} {v}' for k, v in sorted(result['jobs']['counts'].items()))}.
"""
    if result["jobs"]["failures"]:
        body += "\nFailed jobs (first 3), and jobs not ended:\n\n" + "\n".join(
            f"- {f}" for f in result["jobs"]["failures"]) + "\n"
    print(body)
    if args.json:
        args.json.write_text(json.dumps({
            "parts": parts, "control_plane": plane, "memory_mib": memory,
            "latency_ms": {k: [1000 * v for v in vs] for k, vs in fleet.lat.items()},
            "latency_began": fleet.lat_at,
            "arrivals": fleet.arrivals, "not_arrived": pending, "errors": fleet.errors,
            "changes": result["changes"], "jobs": result["jobs"]}))
    if not args.no_report:
        append_report(f"Fleet: {args.hosts} hosts × {args.platforms} platforms "
                      "(bench/fleet.py)", facts, body)
    return 0


def _any_cert(cp: ControlPlaneProcess) -> tuple[str, str]:
    """A certificate for the listeners to start with (SNI then picks the platform's)."""
    from tenantry.core.config import load_settings
    from tenantry.core.runtime import make_runtime

    runtime = make_runtime(load_settings(data_dir=cp.data_dir), pool_size=1)
    issued = runtime.ca.issue_server_cert(["fleet.invalid"])
    runtime.engine.dispose()
    return issued.cert_pem, issued.key_pem.get_secret_value() \
        if hasattr(issued.key_pem, "get_secret_value") else str(issued.key_pem)


if __name__ == "__main__":
    sys.exit(main())
