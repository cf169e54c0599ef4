"""Job kinds and periodic work of this domain: none (it reads what the others record)."""

from tenantry.core.jobs import JobKind, Periodic

KINDS: tuple[JobKind, ...] = ()
PERIODIC: tuple[Periodic, ...] = ()
