"""Job kinds and periodic work of this domain: none (its use cases finish in their request)."""

from tenantry.core.jobs import JobKind, Periodic

KINDS: tuple[JobKind, ...] = ()
PERIODIC: tuple[Periodic, ...] = ()
