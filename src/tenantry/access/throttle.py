"""Login throttling per client address: a sliding window kept in the process.

Account lockout (see service.authenticate_password) stops guessing one account's password;
this stops one client from trying many accounts, or hammering one, faster than a person
types. Each API process keeps its own window, which is enough to turn 100 tries a second
into a handful.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

from tenantry.core.errors import NotAllowed

WINDOW = 10.0  # seconds
ATTEMPTS = 30  # per client address and window: a person never needs 3 a second


class TooManyAttempts(NotAllowed):
    code, status = "too_many_attempts", 429


class LoginThrottle:
    def __init__(self, attempts: int = ATTEMPTS, window: float = WINDOW) -> None:
        self.attempts, self.window = attempts, window
        self._seen: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Count an attempt; refuse it when the client made too many lately."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen[client]
            while seen and now - seen[0] > self.window:
                seen.popleft()
            if len(seen) >= self.attempts:
                raise TooManyAttempts(f"too many login attempts; wait {int(self.window)} s")
            seen.append(now)
            if len(self._seen) > 10_000:  # forget idle clients
                for key in [k for k, v in self._seen.items() if not v]:
                    del self._seen[key]


LOGINS = LoginThrottle()
