"""systemd's side of `Type=notify` with `WatchdogSec=`, for tests and benchmarks on machines
without systemd (this one has none as PID 1): the notify socket a service is given, what it
said, and, once it said READY=1, whether its watchdog pings stopped for longer than the
unit's WatchdogSec. The unit's settings are read from the shipped unit file, so a test
exercises what an operator installs.

What systemd does then is `expire` here: WatchdogSignal (SIGABRT) and SIGCONT to the main
process, SIGKILL after TimeoutAbortSec (KillMode=process: the main process only).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

UNIT = Path(__file__).resolve().parents[1] / "deploy" / "systemd" / "tenantry.service"


def unit_seconds(key: str, unit: Path = UNIT) -> float:
    """A time setting of the unit file's [Service] (`2`, `2s`, `100ms`), in seconds."""
    for line in unit.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == key:
            value = value.strip()
            if value.endswith("ms"):
                return float(value[:-2]) / 1000
            return float(value.removesuffix("s"))
    raise KeyError(f"{key} is not set in {unit}")


@dataclass
class NotifyManager:
    socket_path: Path
    watchdog_sec: float = field(default_factory=lambda: unit_seconds("WatchdogSec"))
    abort_sec: float = field(default_factory=lambda: unit_seconds("TimeoutAbortSec"))
    messages: list[dict[str, str]] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    last_ping: float = 0.0
    pings: int = 0
    _sock: socket.socket | None = None
    _closed: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.socket_path))
        self._sock.settimeout(0.2)
        threading.Thread(target=self._receive, name="notify-socket", daemon=True).start()

    @property
    def env(self) -> dict[str, str]:
        """What the service is started with."""
        return {"NOTIFY_SOCKET": str(self.socket_path),
                "WATCHDOG_USEC": str(int(self.watchdog_sec * 1e6))}

    def _receive(self) -> None:
        assert self._sock is not None
        while not self._closed.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.partition("=")[::2] for line in data.decode().splitlines())
            self.messages.append(fields)
            if fields.get("WATCHDOG") == "1":
                self.pings += 1
                self.last_ping = time.monotonic()
            if fields.get("READY") == "1":
                self.last_ping = time.monotonic()  # the watchdog counts from the start
                self.ready.set()

    def restarted(self) -> None:
        """A new instance of the service is starting: READY=1 is awaited again."""
        self.ready.clear()

    def expired(self) -> bool:
        return self.ready.is_set() and time.monotonic() - self.last_ping > self.watchdog_sec

    def expire(self, process: subprocess.Popen[bytes]) -> None:
        """What systemd does at a watchdog timeout: SIGABRT and SIGCONT to the main process,
        SIGKILL after TimeoutAbortSec; returns once it is gone."""
        self.ready.clear()
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGABRT)
            os.kill(process.pid, signal.SIGCONT)
        try:
            process.wait(self.abort_sec)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        self._closed.set()
        if self._sock is not None:
            self._sock.close()
        self.socket_path.unlink(missing_ok=True)
