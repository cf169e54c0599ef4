"""The agent asks each of its platforms for its health path through the host's ingress, as
the platform's users reach it, and /metrics tells what it found.

Why here and not blackbox_exporter: blackbox made a new TLS connection for every probe, so a
probe every 3 s cost the machine about 7.5 ms of CPU (blackbox's handshake, Caddy's, a new
upstream request, Prometheus's scrape of blackbox); on a 2-core host of 100 idle platforms
that was 40 % of all its idle CPU. Here connections to Caddy stay open between probes, so a
probe is one request on a kept connection.

- **What a probe checks**: HTTPS to the local Caddy with the platform's name as Host, and a
  2xx answer to the release's health path within `TIMEOUT`; and that Caddy serves exactly
  the certificate the control plane issued for the name (pinned: its bytes, not a chain),
  on a connection opened with the name as SNI.
- **Connections are shared** (`_Pool`): a probe takes any kept connection, whichever name
  opened it, since Caddy routes a request by its Host. Each Caddy load (every new platform
  on the host) closes every kept connection; with one connection per platform, the next
  round of probes made a TLS handshake for each of them, about 0.6-1.0 CPU-s at 300
  platforms, landing on the next platform being made. Shared, a load costs as many
  handshakes as probes were in flight at once, a handful.
- **The certificate is pinned** on a connection of the platform's own: at its first probe,
  after its certificate changed, whenever a probe of it has to open a new connection anyway,
  and at the latest every `PIN_EVERY` s (each name at its own phase, so that the pins of a
  host's platforms do not come at once). A certificate that is not the one issued fails the
  probe, and the next probe pins again. A probe that times out or fails closes its
  connection.
- **When**: every `INTERVAL`, timed by the scrapes. Prometheus scrapes /metrics every
  `INTERVAL` at a steady phase; a probe starts just after a scrape, so that even one that
  hangs has its answer (its timeout) before the next scrape. A hung platform is then told as
  soon as blackbox told it, where probes at random phases would wait up to one more scrape.
  The starts are spread over `SPREAD` s by the platform's name.
- **Only what should answer**: a platform is reported once it answered a probe, or once its
  web processes have run for `ARM_AFTER` s (`arm`): a platform being made, whose app does
  not run yet, raises no "not responding", but one that never came up after an agent restart
  still does.
- A result older than `STALE` s while scrapes go on (the prober stuck) is told as a failure:
  stale success must never hide a platform down. Nobody scraping for `idle_after` s pauses
  the probes and closes the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import h11

from tenantry.agent.metrics import Family
from tenantry.monitoring.prometheus import FAST_JOBS, PROBE_TIMEOUT, seconds

log = logging.getLogger("tenantry.agent")


INTERVAL = seconds(FAST_JOBS["agent"][0])  # s: Prometheus scrapes the agent this often
TIMEOUT = seconds(PROBE_TIMEOUT)  # s: slower than this is as good as down to a user
LEAD = 0.1  # s: a timed-out probe's answer is in before the scrape
SPREAD = INTERVAL - TIMEOUT - LEAD  # s over which the starts after a scrape are spread
STALE = 2 * INTERVAL + TIMEOUT
ARM_AFTER = 30.0  # s of the web processes running that arm a platform that never answered
PIN_EVERY = 300.0  # s: each name's certificate is checked again at least this often
KEEP = 32  # idle connections kept at most (the probes in flight at once are fewer)
USER_AGENT = "tenantry-agent-probe"


@dataclass(frozen=True)
class ProbeTarget:
    platform_id: str
    isv: str
    platform: str  # ISV/NAME
    hostname: str
    path: str
    cert_der: bytes  # what the ingress must serve under `hostname`
    not_after: float  # Unix time that certificate expires

    def __repr__(self) -> str:
        return f"ProbeTarget({self.platform!r}, {self.hostname!r}, {self.path!r})"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    duration: float  # s: the request, and the connection when it made one
    ended: float  # monotonic
    error: str = ""


class _Refused(Exception):
    """The ingress did not serve the platform as it should (a wrong certificate)."""


class _Unanswered(EOFError):
    """The connection was closed before any byte of an answer."""


class Prober:
    def __init__(self, *, interval: float = INTERVAL, timeout: float = TIMEOUT,
                 spread: float = SPREAD, stale: float = STALE, idle_after: float = 60.0,
                 pin_every: float = PIN_EVERY) -> None:
        self.interval = interval
        self.timeout = timeout
        self.spread = spread
        self.stale = stale
        self.idle_after = idle_after
        self.pin_every = pin_every
        self._lock = threading.Lock()
        self._address: tuple[str, int] | None = None
        self._targets: dict[str, ProbeTarget] = {}
        self._results: dict[str, ProbeResult] = {}
        self._armed: set[str] = set()
        self._scraped_at = -math.inf  # monotonic: the last scrape
        self._scraping_since = math.inf  # monotonic: scrapes without an idle spell since
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: dict[str, tuple[ProbeTarget, asyncio.Task[None]]] = {}
        self._awake: asyncio.Event | None = None
        self._pool: _Pool | None = None  # on the loop
        self._pinned: dict[str, tuple[bytes, float]] = {}  # on the loop: id -> (cert, when)
        self._closed = False
        # Pinned, not verified by a chain: Caddy must serve the very certificate issued for
        # the name, which says more than "some certificate our CA signed".
        self._tls = ssl.create_default_context()
        self._tls.check_hostname = False
        self._tls.verify_mode = ssl.CERT_NONE

    # ------------------------------------------------------------ from the agent

    def use(self, address: tuple[str, int], targets: Iterable[ProbeTarget]) -> None:
        """Probe `targets` through the ingress at `address` from now on."""
        wanted = {t.platform_id: t for t in targets}
        with self._lock:
            if address == self._address and wanted == self._targets:
                return
            self._address = address
            self._targets = wanted
            for gone in set(self._results) - set(wanted):
                del self._results[gone]
            self._armed &= set(wanted)
            loop = None if self._closed else self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._apply)

    def arm(self, platform_id: str) -> None:
        """Report this platform from now on, answered or not (its app runs)."""
        with self._lock:
            if platform_id in self._targets:
                self._armed.add(platform_id)

    def unarmed(self) -> set[str]:
        """Platforms probed but not reported yet (none answered, and not armed)."""
        with self._lock:
            return set(self._targets) - self._armed

    def scraped(self) -> None:
        """A scrape of /metrics came: it times the probes and keeps them going."""
        now = time.monotonic()
        with self._lock:
            idle = now - self._scraped_at >= self.idle_after
            if idle:
                self._scraping_since = now
            self._scraped_at = now
            if self._closed:
                return
            if self._thread is None:
                self._start()
            loop, awake = self._loop, self._awake
        if idle and loop is not None and awake is not None:
            loop.call_soon_threadsafe(awake.set)

    def families(self) -> list[Family]:
        """What the probes found, as of now: rendered at each scrape (see the module)."""
        now = time.monotonic()
        with self._lock:
            targets = sorted(self._targets.values(), key=lambda t: t.platform)
            results = dict(self._results)
            armed = set(self._armed)
            scraping_for = now - self._scraping_since
        success, duration = [], []
        for t in targets:
            labels = {"isv": t.isv, "platform": t.platform}
            r = results.get(t.platform_id)
            if t.platform_id not in armed and not (r is not None and r.ok):
                continue
            if r is None or now - r.ended > self.stale:
                if scraping_for > self.stale:  # not a pause just ended: the prober is stuck
                    success.append((labels, 0.0))
                continue
            success.append((labels, float(r.ok)))
            if r.ok:
                duration.append((labels, r.duration))
        expiry = [({"isv": t.isv, "platform": t.platform}, t.not_after) for t in targets]
        return [
            Family("tenantry_probe_success",
                   "1 when the platform's health path answered 2xx through the ingress, "
                   "with its own certificate, within the timeout; 0 when it did not.",
                   "gauge", success),
            Family("tenantry_probe_duration_seconds",
                   "How long the platform's last successful probe took.", "gauge", duration),
            Family("tenantry_probe_cert_expiry_timestamp_seconds",
                   "Unix time the certificate the ingress serves for the platform expires.",
                   "gauge", expiry),
        ]

    def results(self) -> Mapping[str, ProbeResult]:
        with self._lock:
            return dict(self._results)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is not None:
            loop.call_soon_threadsafe(self._stop_all)
        if thread is not None:
            thread.join(timeout=5)

    # ------------------------------------------------------------ the probes' thread

    def _start(self) -> None:  # holding _lock
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._awake = asyncio.Event()
            self._awake.set()
            loop.call_soon(self._apply)
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="prober", daemon=True)
        self._thread.start()
        ready.wait()

    def _apply(self) -> None:
        """On the loop: one task per target; a changed target's task starts over."""
        with self._lock:
            wanted = dict(self._targets)
            address = self._address
        for pid in list(self._tasks):
            target, task = self._tasks[pid]
            if wanted.get(pid) != target:
                task.cancel()
                del self._tasks[pid]
        for pid in set(self._pinned) - set(wanted):
            del self._pinned[pid]
        if self._pool is not None and self._pool.address != address:
            self._pool.close()
            self._pool = None
        if address is None:
            return
        if self._pool is None:
            self._pool = _Pool(address, self._tls)
        for pid, target in wanted.items():
            if pid not in self._tasks:
                task = asyncio.get_running_loop().create_task(self._watch(target))
                self._tasks[pid] = (target, task)

    def _stop_all(self) -> None:
        for _, task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        if self._pool is not None:
            self._pool.close()
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, loop.stop)  # the cancelled tasks close their connections

    def _offset(self, target: ProbeTarget) -> float:
        return _phase(target) * self.spread

    def _next_start(self, target: ProbeTarget, last: float) -> float:
        """Monotonic time of the next probe: just after the next scrape, or, with no recent
        scrape to go by, an interval after the last."""
        with self._lock:
            scraped = self._scraped_at
        now = time.monotonic()
        if now - scraped > 2 * self.interval:
            return max(now, last + self.interval)
        start = scraped + self._offset(target)
        while start < last + self.interval / 2:
            start += self.interval
        return start

    async def _watch(self, target: ProbeTarget) -> None:
        last = -math.inf
        while True:
            assert self._awake is not None
            if time.monotonic() - self._scraped_at >= self.idle_after:
                if self._pool is not None:
                    self._pool.close()  # nobody asks: keep nothing open
                self._awake.clear()
                await self._awake.wait()
                last = -math.inf
            start = self._next_start(target, last)
            await asyncio.sleep(max(0.0, start - time.monotonic()))
            last = time.monotonic()
            result = await self._probe(target)
            with self._lock:
                if self._targets.get(target.platform_id) == target:
                    self._results[target.platform_id] = result
                    if result.ok:
                        self._armed.add(target.platform_id)

    def _pin_due(self, target: ProbeTarget, now: float) -> bool:
        """Whether this probe must check the certificate Caddy serves under the name."""
        pinned = self._pinned.get(target.platform_id)
        if pinned is None or pinned[0] != target.cert_der:
            return True
        # 0.75-1.25 of pin_every by the name: pins made at once (an agent's start) drift
        # apart instead of all coming again together.
        return now - pinned[1] >= self.pin_every * (0.75 + 0.5 * _phase(target))

    async def _probe(self, target: ProbeTarget) -> ProbeResult:
        started = time.monotonic()
        error = ""
        try:
            async with asyncio.timeout(self.timeout):
                status = await self._ask(target, started)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except TimeoutError:
            error = f"no answer within {self.timeout:g} s"
        except (OSError, EOFError, ssl.SSLError, h11.ProtocolError, _Refused) as exc:
            error = str(exc) or type(exc).__name__
        ended = time.monotonic()
        return ProbeResult(ok=not error, duration=ended - started, ended=ended, error=error)

    async def _ask(self, target: ProbeTarget, now: float) -> int:
        """The health path's status, on a kept connection when the name's pin is not due,
        else (or when none is kept) on a new one opened under the name. The connection goes
        back to the pool when it can carry another request, and is closed otherwise."""
        pool = self._pool
        assert pool is not None
        conn = None if self._pin_due(target, now) else pool.take()
        try:
            while conn is not None:
                try:
                    status = await conn.get(target.path, target.hostname)
                    break
                except _Unanswered:
                    # Closed while kept (Caddy closes its idle connections when it loads a
                    # new config): as any HTTP client, ask again on another.
                    conn.close()
                    conn = pool.take()
            if conn is None:
                conn = await pool.open(target)
                self._pinned[target.platform_id] = (target.cert_der, time.monotonic())
                status = await conn.get(target.path, target.hostname)
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        if 200 <= status < 300 and conn.reusable:
            pool.give(conn)
        else:
            conn.close()
        return status


def _phase(target: ProbeTarget) -> float:
    """0-1, fixed by the name: where in a spread this platform's work falls."""
    return (zlib.crc32(target.hostname.encode()) % 1000) / 1000


class _Pool:
    """Kept connections to the ingress at `address`, any of them good for any platform:
    Caddy routes a request by its Host, whichever name the connection was opened under."""

    def __init__(self, address: tuple[str, int], tls: ssl.SSLContext, keep: int = KEEP) -> None:
        self.address = address
        self._tls = tls
        self._keep = keep
        self._idle: list[_Connection] = []  # the last given back on top

    def take(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.alive:
                return conn
            conn.close()
        return None

    def give(self, conn: _Connection) -> None:
        if len(self._idle) < self._keep:
            self._idle.append(conn)
        else:
            conn.close()

    async def open(self, target: ProbeTarget) -> _Connection:
        """A new connection under the target's name, refused unless Caddy serves it the
        certificate issued for the name."""
        return await _Connection.open(self.address, target, self._tls)

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


class _Connection:
    """One kept-open HTTPS/1.1 connection to the ingress (h11 speaks the protocol: lengths,
    chunks, keep-alive)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, address: tuple[str, int], target: ProbeTarget,
                   tls: ssl.SSLContext) -> _Connection:
        reader, writer = await asyncio.open_connection(
            address[0], address[1], ssl=tls, server_hostname=target.hostname)
        tls_object = writer.get_extra_info("ssl_object")
        served = tls_object.getpeercert(binary_form=True) if tls_object else None
        if served != target.cert_der:
            writer.close()
            raise _Refused(f"the ingress serves another certificate for {target.hostname}")
        return cls(reader, writer)

    @property
    def alive(self) -> bool:
        """Not known to be closed: the ingress's close, once read, ends a kept connection
        without a request spent on it."""
        return not self.reader.at_eof() and not self.writer.is_closing()

    @property
    def reusable(self) -> bool:
        return bool(self.h11.our_state is h11.IDLE and self.h11.their_state is h11.IDLE)

    async def get(self, path: str, hostname: str) -> int:
        """GET `path`; its status once the whole answer is read (the body is dropped)."""
        request = h11.Request(method="GET", target=path, headers=[
            ("Host", hostname), ("User-Agent", USER_AGENT), ("Accept", "*/*")])
        self.writer.write(self.h11.send(request) + self.h11.send(h11.EndOfMessage()))
        status = 0
        answered = False
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await self.reader.read(65536)
                except (ConnectionResetError, BrokenPipeError) as exc:
                    if answered:
                        raise
                    raise _Unanswered("the ingress closed the kept connection") from exc
                if not data and not answered:
                    raise _Unanswered("the ingress closed the kept connection")
                answered = True
                self.h11.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise EOFError("the ingress closed the connection")
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        return status

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
