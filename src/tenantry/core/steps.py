"""How long each step of a sequence took, said in one line (a stop's account of itself)."""

from __future__ import annotations

import time


class Steps:
    """Started when made; `done(what)` closes the step that ran since the last one.
    `str()` gives `worker 0.3 s, api 0.2 s`, `total()` the seconds since the start."""

    def __init__(self) -> None:
        self._begun = self._last = time.monotonic()
        self._took: list[tuple[str, float]] = []

    def done(self, what: str) -> None:
        now = time.monotonic()
        self._took.append((what, now - self._last))
        self._last = now

    def total(self) -> float:
        return time.monotonic() - self._begun

    def __str__(self) -> str:
        return ", ".join(f"{what} {s:.1f} s" for what, s in self._took)
