"""Periodic work of monitoring: deliver the outbox (every second) and keep the history,
rules and silences in step with Prometheus and Alertmanager (every few seconds)."""

from __future__ import annotations

import datetime as dt

from tenantry.core.jobs import JobKind, Periodic
from tenantry.core.notify import business_hours
from tenantry.core.runtime import Runtime
from tenantry.monitoring import outbox, sync
from tenantry.monitoring.channels import Channel, open_channels


def _channels(runtime: Runtime) -> dict[str, Channel]:
    return runtime.shared("monitoring.channels", lambda: open_channels(runtime.settings))


def deliver(runtime: Runtime) -> None:
    channels = _channels(runtime)
    with runtime.sessions() as session:
        while outbox.deliver(session, channels) == outbox.BATCH:
            pass


def keep_in_step(runtime: Runtime) -> None:
    absent: dict[int, dt.datetime] = runtime.shared("monitoring.absent", dict)
    with runtime.sessions() as session:
        outbox.expire(session)
        sync.run(session, runtime.settings.data_dir, business_hours(runtime.settings), absent)


KINDS: tuple[JobKind, ...] = ()
PERIODIC: tuple[Periodic, ...] = (
    Periodic("deliver notifications", deliver, every=1.0, retry_every=5.0),
    Periodic("monitoring in step", keep_in_step, every=3.0, retry_every=10.0),
)
