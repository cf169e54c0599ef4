"""Billing's periodic work: the platform ledger follows the platforms.

Invoices are run by a person (`tenantry invoice run`) for a month that has ended; nothing
here issues one by itself.
"""

from __future__ import annotations

from tenantry.core.jobs import JobKind, Periodic
from tenantry.core.runtime import Runtime


def run_ledger(runtime: Runtime) -> int:
    from tenantry.billing.service import sync_ledger

    with runtime.sessions() as session:
        return sync_ledger(session)


KINDS: tuple[JobKind, ...] = ()
PERIODIC = (Periodic("record platforms for their fees", run_ledger, every=60.0,
                     retry_every=60.0),)
