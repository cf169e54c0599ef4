"""Waiting for a host's desired state to change, for every waiting agent at the cost of one.

Each agent long-polls `GET /agent/desired` with the generation it holds. Asking the store
for each waiter every 100 ms costs a query per agent ten times a second (10,000 a second
for 1,000 hosts) and holds a connection per waiter. Here an API process asks once per
POLL which of the hosts whose agents wait have a generation other than the one held (the
store sends back only those), and wakes their waiters; a waiter holds no connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

POLL = 0.1  # s between two looks at the store while an agent waits: a change's latency


class GenerationWatch:
    """`read({host_id: generation held})` returns {host_id: generation} of those hosts whose
    generation is another now (run in a thread: it queries).
    `closing()` says the server is stopping: waiters are answered at once with what they
    hold (a long poll must not hold the server's stop), and new ones do not wait."""

    def __init__(self, read: Callable[[Mapping[str, int]], dict[str, int]],
                 poll: float = POLL, closing: Callable[[], bool] = lambda: False) -> None:
        self._read = read
        self._poll = poll
        self._closing = closing
        self._waiters: dict[str, list[tuple[int, asyncio.Future[int]]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.looks = 0  # queries made, for tests and benchmarks

    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    async def wait(self, host_id: str, generation: int, timeout: float) -> int:
        """The host's generation once it differs from `generation`, or after `timeout`
        seconds whatever it is then.

        A waiter does not look on its own: the watch's next look (within a POLL) answers one
        that is behind already. A look of its own for each long poll was a thread and a
        query per agent every POLL_WAIT s, and under load the thread came late: at 1,000
        hosts a tenth of the long polls came back seconds after their wait."""
        if timeout <= 0 or self._closing():
            return (await self._look({host_id: generation})).get(host_id, generation)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        entry = (generation, future)
        self._waiters.setdefault(host_id, []).append(entry)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch(), name="generation-watch")
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return generation
        finally:
            entries = self._waiters.get(host_id, [])
            if entry in entries:
                entries.remove(entry)
            if not entries:
                self._waiters.pop(host_id, None)

    async def _look(self, held: Mapping[str, int]) -> dict[str, int]:
        self.looks += 1
        return await asyncio.to_thread(self._read, held)

    async def _watch(self) -> None:
        while self._waiters:
            await asyncio.sleep(self._poll)
            if not self._waiters:
                break
            if self._closing():
                for waiters in self._waiters.values():
                    for want, future in waiters:
                        if not future.done():
                            future.set_result(want)
                continue
            try:
                # a host whose waiters hold different generations (an agent's earlier
                # poll still open) is asked with none it can have: its generation comes back
                held = {host_id: waiters[0][0] if all(w == waiters[0][0] for w, _ in waiters)
                        else -1 for host_id, waiters in self._waiters.items()}
                generations = await self._look(held)
            except Exception as exc:  # the store away: waiters time out, agents ask again
                log.warning("cannot read the hosts' generations: %s", exc)
                continue
            for host_id, now in generations.items():
                for want, future in self._waiters.get(host_id, []):
                    if now != want and not future.done():
                        future.set_result(now)
