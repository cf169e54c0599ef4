"""Periodic work of the audit log: its signed head goes offsite at least every minute."""

from tenantry.access.audit.service import ship_head_if_due
from tenantry.core.jobs import JobKind, Periodic

KINDS: tuple[JobKind, ...] = ()
# Checked every 2 s, shipped when SHIP_EVERY has passed; 10 s between tries while failing.
PERIODIC = (Periodic("ship the audit head offsite", ship_head_if_due, every=2.0,
                     retry_every=10.0),)
