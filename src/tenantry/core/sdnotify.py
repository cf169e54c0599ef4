"""The service manager's notify protocol (systemd's `Type=notify`, `WatchdogSec=`), spoken by
`tenantry up` when it runs under one.

A service manager that gives `NOTIFY_SOCKET` is told `READY=1` once the control plane
answers, `STATUS=` with each progress line, and `STOPPING=1` when a clean stop begins. With
`WATCHDOG_USEC` as well, `up` sends `WATCHDOG=1` four times per period from a thread of its
own, for as long as its supervising loop keeps turning: a frozen `up` (stopped, or wedged
where it restarts its children) stops the pings, and the manager kills it and starts it
again, which is the one fault `up` cannot heal for itself (issue 11). The variables are
taken out of the environment so that no child of `up` speaks for it.

Without `NOTIFY_SOCKET` every call is a no-op. A send that fails (the manager went away) is
dropped: the protocol is advisory, and `up` must not stop for it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field

NOTIFY_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
PINGS_PER_PERIOD = 4  # systemd asks for at least two; four leave room for a slow turn


@dataclass
class Notifier:
    address: str | None = None  # the socket's path; a leading "@" is the abstract namespace
    watchdog_usec: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _sock: socket.socket | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """The manager's settings, taken out of `environ` (os.environ by default). The
        watchdog is ours only when WATCHDOG_PID is unset or names this process."""
        env = os.environ if environ is None else environ
        address, usec, pid = (env.pop(name, None) for name in NOTIFY_VARS)
        watchdog = None
        if address and usec and usec.isdigit() and int(usec) > 0 and \
                (pid is None or pid == str(os.getpid())):
            watchdog = int(usec)
        return cls(address or None, watchdog)

    @property
    def watchdog_every(self) -> float | None:
        """Seconds between pings, or None when no watchdog is asked for."""
        return None if self.watchdog_usec is None else \
            self.watchdog_usec / 1e6 / PINGS_PER_PERIOD

    def send(self, **fields: str) -> bool:
        """One datagram of KEY=value lines; whether it went."""
        if not self.address:
            return False
        text = "\n".join(f"{key}={value}" for key, value in fields.items())
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.setblocking(False)
                self._sock.sendto(text.encode(), target)
            except OSError:
                return False
        return True

    def ready(self, status: str) -> None:
        self.send(READY="1", STATUS=status, MAINPID=str(os.getpid()))

    def status(self, line: str) -> None:
        self.send(STATUS=line.replace("\n", " "))

    def stopping(self) -> None:
        self.send(STOPPING="1", STATUS="stopping")

    def start_watchdog(self, turned_at: Callable[[], float], stall: float) -> \
            threading.Thread | None:
        """Ping from a thread of its own while the supervising loop last turned (monotonic
        `turned_at()`) within `stall` seconds; None when no watchdog is asked for."""
        every = self.watchdog_every
        if every is None:
            return None

        def ping() -> None:
            while True:
                if time.monotonic() - turned_at() < stall:
                    self.send(WATCHDOG="1")
                time.sleep(every)

        thread = threading.Thread(target=ping, name="sd-watchdog", daemon=True)
        thread.start()
        return thread
