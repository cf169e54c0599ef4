"""A recording, in-memory ServiceManager for unit tests of convergence logic."""

from __future__ import annotations

import threading

from tenantry.agent.services import ProgramSpec, ProgramStatus, ServiceManager
from tenantry.core.errors import NotFound, Unavailable


class FakeServiceManager(ServiceManager):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.specs: dict[str, ProgramSpec] = {}
        self.states: dict[str, str] = {}
        self.pids: dict[str, int] = {}
        self.running = False
        self._next_pid = 1000

    def _require_running(self) -> None:
        if not self.running:
            raise Unavailable("fake service manager is not started")

    def _launch(self, name: str) -> None:
        self._next_pid += 1
        self.pids[name] = self._next_pid
        self.states[name] = "RUNNING"

    def ensure_started(self, stopping: threading.Event | None = None) -> None:
        self.calls.append(("ensure_started", ""))
        self.running = True

    def observe(self) -> dict[str, ProgramStatus]:
        self._require_running()
        return {
            name: ProgramStatus(
                name=name,
                digest=spec.digest(),
                state=self.states[name],
                pid=self.pids.get(name) if self.states[name] == "RUNNING" else None,
            )
            for name, spec in sorted(self.specs.items())
        }

    def put(self, spec: ProgramSpec) -> None:
        self._require_running()
        old = self.specs.get(spec.name)
        if old is not None and old.digest() == spec.digest():
            if self.states[spec.name] != "RUNNING":
                self.calls.append(("start", spec.name))
                self._launch(spec.name)
            return
        self.calls.append(("put", spec.name))
        self.specs[spec.name] = spec
        self._launch(spec.name)

    def start(self, name: str) -> None:
        self._require_running()
        if name not in self.specs:
            raise NotFound(f"no program {name!r}")
        self.calls.append(("start", name))
        if self.states[name] != "RUNNING":
            self._launch(name)

    def stop(self, name: str) -> None:
        self._require_running()
        if name not in self.specs:
            raise NotFound(f"no program {name!r}")
        self.calls.append(("stop", name))
        self.states[name] = "STOPPED"
        self.pids.pop(name, None)

    def remove(self, name: str) -> None:
        self._require_running()
        if name not in self.specs:
            return
        self.calls.append(("remove", name))
        del self.specs[name]
        del self.states[name]
        self.pids.pop(name, None)

    def shutdown(self) -> None:
        self.calls.append(("shutdown", ""))
        for name in self.states:
            self.states[name] = "STOPPED"
        self.pids.clear()
        self.running = False
