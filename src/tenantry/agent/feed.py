"""The desired state, long-polled on a thread of its own.

The agent's passes (health rechecks, heartbeats) run every IDLE_WAIT seconds; the long poll
that brings a new desired state is held far longer (POLL_WAIT), so an idle host asks the
control plane for its document about once a minute instead of on every pass. A new document
answers the poll at once, and the loop waiting in `next` wakes with it.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from tenantry.core.errors import Unavailable
from tenantry.platforms.contract import DesiredHost

log = logging.getLogger("tenantry.agent")


@dataclass(frozen=True)
class Fetched:
    """One answer: the control plane answered (`refused`: with a document the agent refused,
    see its desired_error), or `error` kept it from answering."""

    refused: bool = False
    error: Exception | None = None


class DesiredFeed:
    """`fetch(generation, wait)` is the agent's fetch_desired; it runs on the feed's thread,
    one call after the other, with the generation of the newest document it accepted
    (`latest`)."""

    def __init__(self, fetch: Callable[[int, float], DesiredHost | None],
                 stopping: threading.Event, *, wait: Callable[[], float],
                 backoff: Callable[[], float]) -> None:
        self._fetch, self._stopping, self._wait, self._backoff = fetch, stopping, wait, backoff
        self._ready = threading.Condition()
        self._next: Fetched | None = None
        self.latest: DesiredHost | None = None
        self._thread = threading.Thread(target=self._run, name="desired-feed", daemon=True)

    def start(self) -> DesiredFeed:
        self._thread.start()
        return self

    def next(self, timeout: float) -> Fetched | None:
        """The newest answer since the last call, waiting up to `timeout` s for one; None
        when none came."""
        with self._ready:
            self._ready.wait_for(lambda: self._next is not None or self._stopping.is_set(),
                                 timeout)
            got, self._next = self._next, None
            return got

    def wake(self) -> None:
        """Let a waiting `next` return (the agent is stopping)."""
        with self._ready:
            self._ready.notify_all()

    def _put(self, fetched: Fetched, desired: DesiredHost | None = None) -> None:
        with self._ready:
            if desired is not None:
                self.latest = desired
            self._next = fetched
            self._ready.notify_all()

    def _run(self) -> None:
        generation, wait, delay = 0, 0.0, 0.5
        while not self._stopping.is_set():
            try:
                got = self._fetch(generation, wait)
            except (httpx.HTTPError, Unavailable) as exc:
                self._put(Fetched(error=exc))
            else:
                self._put(Fetched(refused=got is None), got)
                if got is not None:
                    generation, wait, delay = got.generation, self._wait(), 0.5
                    continue
            # Refused or unreachable: ask again after a growing pause, and without waiting
            # on the control plane's side, so that its answer comes as soon as it can give it.
            # The pause is cut by a random part of it: a fleet's agents, all cut off by the
            # control plane's restart, then come back spread out and stay so, not in step.
            wait = 0.0
            self._stopping.wait(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._backoff())
