"""`up`'s start-up order, as pure logic: waits on conditions, names what did not come up, and
never lets a failed after-start task take the control plane down."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tenantry.cli.up import ControlPlane, StartupWait
from tenantry.core.config import load_settings
from tenantry.core.errors import InvalidInput, Unavailable


def _wait(ready: object, *, timeout: float = 0.5, lines: list[str] | None = None,
          stopping: threading.Event | None = None) -> StartupWait:
    said = lines if lines is not None else []
    return StartupWait("the widget", Path("/var/log/widget.log"), ready,  # type: ignore[arg-type]
                       timeout=timeout, say=said.append, stopping=stopping or threading.Event())


def test_waits_until_the_condition_holds() -> None:
    answers = iter([False, False, True])
    assert _wait(lambda: next(answers)).wait(every=0.01) < 0.5


def test_a_timeout_names_the_part_and_its_log_with_progress_lines() -> None:
    lines: list[str] = []
    with pytest.raises(Unavailable) as caught:
        _wait(lambda: False, timeout=0.3, lines=lines).wait(every=0.01, progress_every=0.1)
    assert caught.value.message == ("the widget did not come up within 0.3 s; "
                                    "see /var/log/widget.log")
    assert lines and all("still waiting for the widget" in line for line in lines)


def test_a_stop_request_ends_the_wait() -> None:
    stopping = threading.Event()
    stopping.set()
    with pytest.raises(Unavailable, match="stopped while waiting"):
        _wait(lambda: False, timeout=60, stopping=stopping).wait()


class _Plane(ControlPlane):
    """The plane's after-start logic with the agent wait replaced by a verdict."""

    agent_comes_up = True

    def wait_agent(self) -> float:
        if not self.agent_comes_up:
            raise Unavailable("the local agent did not come up within 60 s; see agent.log")
        return 0.0


def _plane(tmp_path: Path, lines: list[str]) -> _Plane:
    return _Plane(settings=load_settings(data_dir=tmp_path), say=lines.append)


def test_a_failing_task_is_reported_and_the_next_still_runs(tmp_path: Path) -> None:
    lines: list[str] = []
    ran: list[str] = []

    def broken() -> None:
        raise Unavailable("step 'create platform lbh': no host is online")

    _plane(tmp_path, lines).after_start([("the demo", broken),
                                         ("the schedules", lambda: ran.append("schedules"))])
    assert "tenantry: the demo failed: step 'create platform lbh': no host is online" in lines
    assert any("still running for you to look" in line for line in lines)
    assert ran == ["schedules"]


def test_tasks_wait_for_the_agent_and_are_skipped_when_it_never_comes(tmp_path: Path) -> None:
    lines: list[str] = []
    ran: list[str] = []
    plane = _plane(tmp_path, lines)
    plane.agent_comes_up = False
    plane.after_start([("the demo", lambda: ran.append("demo"))])
    assert ran == []
    assert "tenantry: the local agent did not come up within 60 s; see agent.log" in lines
    assert any(line.startswith("tenantry: the demo not started") for line in lines)


def test_settings_validate_the_startup_timeout_and_port_range(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_settings(data_dir=tmp_path, startup_timeout=0)
    assert caught.value.field == "startup_timeout"
    with pytest.raises(InvalidInput) as caught:
        load_settings(data_dir=tmp_path, port_range="30000-20000")
    assert caught.value.field == "port_range"
    assert load_settings(data_dir=tmp_path, port_range="21000-21999").ports == (21000, 21999)


def test_ctrl_c_stops_the_monitoring_programs_alongside_and_bounds_the_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker stuck in a job is not waited on for a minute (its job resumes at the next
    start); the monitoring programs are told first and stop while the rest stop in order."""
    import time

    from tenantry.cli import up

    monkeypatch.setattr(up, "WORKER_GRACE", 1.0)
    settings = load_settings(data_dir=tmp_path, database_url="postgresql://x@/y")
    plane = ControlPlane(settings=settings, say=lambda line: None)
    stuck = ["sh", "-c", "trap '' TERM; sleep 60"]  # ignores SIGTERM, like a job in progress
    plane.children = [up.Child("worker", stuck, tmp_path / "worker.log"),
                      up.Child("api", ["sleep", "60"], tmp_path / "api.log"),
                      up.Child("agent", ["sleep", "60"], tmp_path / "agent.log")]
    plane.monitoring = [up.Child("mon-prometheus", ["sleep", "60"], tmp_path / "p.log")]
    plane.children += plane.monitoring
    for child in plane.children:
        child.start()
    started = time.monotonic()
    plane.shutdown()
    assert time.monotonic() - started < 10
    assert not any(child.alive() for child in plane.children)
    monitoring = plane.monitoring[0].process
    assert monitoring is not None and monitoring.returncode == -15  # SIGTERM, not a kill


@pytest.mark.parametrize("value", [0, 17, "two", -1])
def test_api_processes_is_a_count_from_1_to_16(tmp_path: Path, value: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_settings(data_dir=tmp_path, api_processes=value)
    assert caught.value.field == "api_processes"
    assert load_settings(data_dir=tmp_path, api_processes=4).api_processes == 4
    assert load_settings(data_dir=tmp_path).api_processes == 1
