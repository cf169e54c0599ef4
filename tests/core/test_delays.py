"""The test-only start-up delays: parsed strictly, and a stop request cuts them short."""

from __future__ import annotations

import threading
import time

import pytest

from tenantry.core import delays
from tenantry.core.errors import InvalidInput


def test_parses_points_and_seconds() -> None:
    assert delays.configured("") == {}
    assert delays.configured("agent.enroll=8, api.start=0.5") == {"agent.enroll": 8.0,
                                                                   "api.start": 0.5}


@pytest.mark.parametrize("value", ["agent.enrol=8", "agent.enroll", "agent.enroll=soon",
                                   "api.start=-1", "api.start=99999"])
def test_refuses_what_it_cannot_honour_by_name(value: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        delays.configured(value)
    assert caught.value.field == delays.VARIABLE


def test_holds_and_a_stop_request_ends_the_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(delays.VARIABLE, "worker.start=0.3")
    start = time.monotonic()
    delays.delay("worker.start")
    assert time.monotonic() - start >= 0.3
    monkeypatch.setenv(delays.VARIABLE, "worker.start=60")
    stopping = threading.Event()
    threading.Timer(0.2, stopping.set).start()
    start = time.monotonic()
    delays.delay("worker.start", stopping)
    assert time.monotonic() - start < 5
