"""Exits of `up`'s own processes, told as `PROCESS_RESTARTED` events (issue 11: every
unexpected exit or restart is an event), as the agent tells those of its host's programs.

`up` restarts the API, the worker, the agent and the monitoring programs when they die or
freeze, and the store's PostgreSQL; a service manager restarts `up` itself (the next `up`
finds that the last one ended without a clean stop: `run/up.running` is still there). Each
is told on `up`'s own host (its local agent's), program `tenantry-<name>`. The store may be
the one that died, and the host may not be enrolled yet: exits are kept in memory and told
from a thread of their own once both are there, so `watch` never waits on the store.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from tenantry.core.config import Settings
from tenantry.core.runtime import Runtime
from tenantry.platforms.contract import ProcessExit

log = logging.getLogger(__name__)

MAX_KEPT = 200  # exits kept while the store is away; the oldest go first
TRY_EVERY = 1.0  # seconds between attempts to tell what is kept


def how_it_ended(returncode: int | None) -> str:
    """As supervisord tells it: `exit status N` or `terminated by SIGNAME`."""
    import signal

    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"terminated by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"terminated by signal {-returncode}"
    return f"exit status {returncode}"


class ExitTeller:
    def __init__(self, settings: Settings, host_name: str) -> None:
        self.settings, self.host_name = settings, host_name
        self._lock = threading.Lock()
        self._kept: list[ProcessExit] = []
        self._runtime: Runtime | None = None

    @property
    def kept(self) -> list[ProcessExit]:
        with self._lock:
            return list(self._kept)

    def tell(self, name: str, how: str) -> None:
        with self._lock:
            self._kept = (self._kept + [ProcessExit(program=f"tenantry-{name}", how=how,
                                                    at=time.time())])[-MAX_KEPT:]

    def unclean_end(self, marker: Path) -> None:
        """At start: `marker` left by the last `up` means it ended without a clean stop
        (killed, crashed, or ended by its service manager's watchdog); it is made anew."""
        if marker.exists():
            self.tell("up", "ended without a clean stop (killed, crashed or ended by its "
                            "watchdog)")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("running\n")

    def run(self, stopping: threading.Event) -> None:
        while not stopping.wait(TRY_EVERY):
            self.flush()
        self.flush()
        if self._runtime is not None:
            self._runtime.engine.dispose()

    def flush(self) -> bool:
        """Tell what is kept; whether it was (or there was nothing)."""
        from tenantry.core.runtime import make_runtime
        from tenantry.platforms import hosts

        exits = self.kept
        if not exits:
            return True
        try:
            if self._runtime is None:
                self._runtime = make_runtime(self.settings, pool_size=1)
            with self._runtime.sessions() as session:
                if not hosts.record_exits(session=session, host_name=self.host_name,
                                          exits=exits):
                    return False  # the host is not enrolled yet
        except Exception as exc:  # the store is away: kept for the next attempt
            log.debug("exits not told yet: %s", exc)
            return False
        with self._lock:
            self._kept = self._kept[len(exits):]
        return True
