"""One small contract for service managers (supervisord here, systemd on real hosts).

The agent's convergence loop observes programs, diffs them against the wanted specs by
digest, and calls `put`/`remove` only for the difference.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from tenantry.core.errors import InvalidInput

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
STATES = ("RUNNING", "STARTING", "BACKOFF", "STOPPED", "EXITED", "FATAL", "STOPPING")
_SIGNALS = ("TERM", "INT", "QUIT", "KILL", "HUP", "USR1", "USR2")


@dataclass(frozen=True)
class ProgramSpec:
    """What to run. `environment` may hold secrets, so `repr` shows only its keys."""

    name: str
    command: tuple[str, ...]
    environment: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    directory: str | None = None
    # Written by the program itself, as `user`, who must be able to create or append to it.
    log_file: str | None = None
    stop_signal: str = "TERM"
    start_seconds: int = 1

    def __post_init__(self) -> None:
        if not NAME_RE.fullmatch(self.name):
            raise InvalidInput(f"bad program name {self.name!r}", field="name")
        if not self.command or not all(isinstance(a, str) for a in self.command):
            raise InvalidInput("command must be a non-empty argv tuple", field="command")
        if not isinstance(self.command, tuple):
            object.__setattr__(self, "command", tuple(self.command))
        # A private read-only copy: the caller's dict can change without changing the spec.
        object.__setattr__(self, "environment", MappingProxyType(dict(self.environment)))
        for key in self.environment:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise InvalidInput(f"bad environment variable name {key!r}", field="environment")
        if self.stop_signal not in _SIGNALS:
            raise InvalidInput(f"bad stop signal {self.stop_signal!r}", field="stop_signal")
        if self.start_seconds < 0:
            raise InvalidInput("start_seconds must be >= 0", field="start_seconds")

    def __repr__(self) -> str:
        env = ", ".join(f"{k}='**********'" for k in sorted(self.environment))
        return (
            f"ProgramSpec(name={self.name!r}, command={self.command!r}, environment={{{env}}}, "
            f"user={self.user!r}, directory={self.directory!r}, log_file={self.log_file!r}, "
            f"stop_signal={self.stop_signal!r}, start_seconds={self.start_seconds!r})"
        )

    __str__ = __repr__

    def digest(self) -> str:
        """sha256 of a canonical JSON of every field: a changed spec has a new digest."""
        doc = {
            "name": self.name,
            "command": list(self.command),
            "environment": dict(sorted(self.environment.items())),
            "user": self.user,
            "directory": self.directory,
            "log_file": self.log_file,
            "stop_signal": self.stop_signal,
            "start_seconds": self.start_seconds,
        }
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ProgramStatus:
    name: str
    digest: str
    state: str
    pid: int | None


class ServiceManager(ABC):
    @abstractmethod
    def ensure_started(self, stopping: threading.Event | None = None) -> None:
        """Start the manager daemon if it is not running; adopt a running one. A daemon
        started anew starts the programs configured, no more of them once `stopping` is
        set."""

    @abstractmethod
    def observe(self) -> dict[str, ProgramStatus]: ...

    @abstractmethod
    def put(self, spec: ProgramSpec) -> None:
        """Add, or replace (restart) when the digest differs, and start; no-op if unchanged."""

    @abstractmethod
    def start(self, name: str) -> None: ...

    @abstractmethod
    def stop(self, name: str) -> None:
        """Stop; the program stays configured."""

    @abstractmethod
    def remove(self, name: str) -> None:
        """Stop and unconfigure; no-op if absent."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop every program and the daemon itself, and wait until they are gone."""

    def log_files(self) -> list[Path]:
        """The logs the programs write themselves, which the agent rotates
        (tenantry.agent.logfiles); none for a manager that keeps its programs' logs."""
        return []

    def daemon_pid(self) -> int | None:
        """The pid of the manager daemon while it lives (its programs are its descendants);
        None when it is not running or the manager has no process of its own."""
        return None

    def has_daemon(self) -> bool:
        """The manager runs as a daemon of its own, which the agent watches and starts again
        when it dies."""
        return False

    def ended_unwatched(self) -> int | None:
        """The pid of a manager daemon that ended without a clean stop and that no one has
        told of yet (its pid file names a process gone); None otherwise. Starting the daemon
        again forgets it."""
        return None

    def responds(self, timeout: float = 2.0) -> bool:
        """The manager daemon answers a question within `timeout` seconds (a daemon that
        runs but does not, stopped or wedged, starts and stops nothing)."""
        return True
