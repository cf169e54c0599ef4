"""The API's one watch over host generations: however many agents wait, one look per poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from tenantry.platforms.generations import GenerationWatch


class Store:
    def __init__(self, hosts: int) -> None:
        self.generations = {f"h{i}": 1 for i in range(hosts)}
        self.reads: list[int] = []

    def read(self, held: Mapping[str, int]) -> dict[str, int]:
        self.reads.append(len(held))
        return {h: g for h, want in held.items() if (g := self.generations[h]) != want}


def test_a_thousand_waiting_agents_cost_one_look_per_poll_and_a_change_wakes_its_own() -> None:
    store = Store(1000)
    watch = GenerationWatch(store.read, poll=0.05)

    async def scenario() -> tuple[list[int], float, int]:
        waits = [asyncio.create_task(watch.wait(h, 1, 30)) for h in store.generations]
        # every agent waits, then the watch looks a few times
        deadline = time.monotonic() + 20
        while watch.waiting() < 1000 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert watch.waiting() == 1000
        await asyncio.sleep(0.2)
        before = len(store.reads)
        started = time.monotonic()
        store.generations["h7"] = 2
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        took = time.monotonic() - started
        woken = [w.result() for w in done]
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        return woken, took, len(store.reads) - before

    woken, took, looks = asyncio.run(scenario())
    assert woken == [2], "only the changed host's agent wakes, with its new generation"
    assert took < 2.0  # a poll is 0.05 s; 2 s leaves room for a loaded machine
    # no waiter looks on its own: each look covers every host still waiting, all thousand,
    # then (if the watch looks again before the test ends the waits) the 999 left once h7's
    # agent has woken
    polls = store.reads
    assert polls and polls == sorted(polls, reverse=True), polls
    assert set(polls) <= {1000, 999}, polls
    assert looks <= 3
    assert watch.waiting() == 0


def test_a_waiter_behind_returns_at_the_next_look_and_an_idle_one_after_its_wait() -> None:
    store = Store(1)
    store.generations["h0"] = 5
    watch = GenerationWatch(store.read, poll=0.05)
    started = time.monotonic()
    assert asyncio.run(watch.wait("h0", 4, 30)) == 5
    assert time.monotonic() - started < 2, "a poll is 0.05 s"
    assert store.reads == [1], "one look, the watch's"
    assert asyncio.run(watch.wait("h0", 4, 0)) == 5, "no wait: a look of its own"
    started = time.monotonic()
    assert asyncio.run(watch.wait("h0", 5, 0.3)) == 5
    assert 0.3 <= time.monotonic() - started < 2
    assert watch.waiting() == 0


def test_a_store_that_fails_a_look_does_not_end_the_watch() -> None:
    store = Store(1)
    failures = [RuntimeError("store away")] * 2

    def flaky(held: Mapping[str, int]) -> dict[str, int]:
        if len(store.reads) >= 1 and failures:
            raise failures.pop()
        return store.read(held)

    watch = GenerationWatch(flaky, poll=0.05)

    async def scenario() -> int:
        waiting = asyncio.create_task(watch.wait("h0", 1, 5))
        await asyncio.sleep(0.1)
        store.generations["h0"] = 2
        return await waiting

    assert asyncio.run(scenario()) == 2


def test_a_stopping_server_answers_every_waiting_agent_at_once() -> None:
    """A long poll holds up to 30 s; a stopping API process must not wait for its waiters
    (uvicorn waits for requests in flight before it exits): they get what they hold, and
    a new one does not wait."""
    store = Store(3)
    closing = False
    watch = GenerationWatch(store.read, poll=0.05, closing=lambda: closing)

    async def scenario() -> tuple[list[int], float, float]:
        nonlocal closing
        waits = [asyncio.create_task(watch.wait(h, 1, 30)) for h in store.generations]
        deadline = time.monotonic() + 20
        while watch.waiting() < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert watch.waiting() == 3
        closing = True
        started = time.monotonic()
        answers = await asyncio.gather(*waits)
        took = time.monotonic() - started
        started = time.monotonic()
        await watch.wait("h0", 1, 30)
        return answers, took, time.monotonic() - started

    answers, took, late = asyncio.run(scenario())
    assert answers == [1, 1, 1]  # what they hold: each gets 304 Not Modified
    assert took < 2.0 and late < 2.0
