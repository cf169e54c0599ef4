"""The agent's desired state comes from a long poll on a thread of its own: held long while
nothing changes (an idle host asks about twice a minute, not on every pass), answered at
once when something does, and asked again at once, without a wait, after a failure."""

from __future__ import annotations

import threading
import time

import httpx

from tenantry.agent.feed import DesiredFeed
from tenantry.platforms.contract import DesiredHost
from tests.platforms.test_contract import WIRE_DOC


def doc(generation: int) -> DesiredHost:
    return DesiredHost.model_validate({**WIRE_DOC, "generation": generation})


class Plane:
    """fetch(generation, wait) as the agent's fetch_desired: the document once its generation
    differs from the one held, else after `wait` (scaled down) the one held."""

    def __init__(self) -> None:
        self.generation = 1
        self.asked: list[tuple[int, float]] = []
        self.down = False
        self.changed = threading.Event()

    def fetch(self, generation: int, wait: float) -> DesiredHost | None:
        self.asked.append((generation, wait))
        if self.down:
            raise httpx.ConnectError("connection refused")
        if generation == self.generation:
            self.changed.wait(wait / 100)
            self.changed.clear()
        return doc(self.generation)


def test_the_feed_holds_its_poll_and_wakes_the_loop_with_a_change() -> None:
    plane, stopping = Plane(), threading.Event()
    feed = DesiredFeed(plane.fetch, stopping, wait=lambda: 25.0, backoff=lambda: 0.2).start()
    try:
        first = feed.next(5)
        assert first is not None and first.error is None and not first.refused
        assert feed.latest is not None and feed.latest.generation == 1
        assert plane.asked[0] == (0, 0.0), "the first document at once"

        time.sleep(0.5)
        assert all(asked == (1, 25.0) for asked in plane.asked[1:]), plane.asked
        assert len(plane.asked) <= 4, "held 0.25 s each here (25 s in life), not every pass"

        plane.generation = 2
        plane.changed.set()
        started = time.monotonic()
        got = feed.next(5)
        while got is not None and feed.latest is not None and feed.latest.generation != 2:
            got = feed.next(5)
        assert got is not None and feed.latest is not None and feed.latest.generation == 2
        assert time.monotonic() - started < 2

        plane.down = True  # the control plane goes away ...
        got = feed.next(5)
        while got is not None and got.error is None:
            got = feed.next(5)
        assert got is not None and isinstance(got.error, httpx.ConnectError)
        assert feed.latest is not None and feed.latest.generation == 2, "the last one kept"
        plane.down = False  # ... and comes back: asked without a wait, answered at once
        got = feed.next(5)
        while got is not None and got.error is not None:
            got = feed.next(5)
        assert got is not None and got.error is None
        after_down = [w for g, w in plane.asked if g == 2]
        assert 0.0 in after_down
    finally:
        stopping.set()
        feed.wake()


def test_a_refused_document_is_told_and_asked_for_again_after_a_pause() -> None:
    stopping = threading.Event()
    calls: list[float] = []

    def refusing(generation: int, wait: float) -> DesiredHost | None:
        calls.append(time.monotonic())
        return None  # fetch_desired's answer to a document that does not validate

    feed = DesiredFeed(refusing, stopping, wait=lambda: 25.0, backoff=lambda: 0.4).start()
    try:
        got = feed.next(5)
        assert got is not None and got.refused and feed.latest is None
        time.sleep(1.2)
        gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
        assert gaps and all(g >= 0.2 for g in gaps), gaps  # paced: 0.5, then at most 0.4
    finally:
        stopping.set()
        feed.wake()
