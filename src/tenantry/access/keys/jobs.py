"""Periodic work of keys and certificates: warn of site certificates close to expiry."""

from tenantry.access.keys.service import notify_expiring
from tenantry.core.jobs import JobKind, Periodic
from tenantry.core.runtime import Runtime

KINDS: tuple[JobKind, ...] = ()


def warn_expiring(runtime: Runtime) -> None:
    with runtime.sessions() as session:
        notify_expiring(session=session)


PERIODIC = (Periodic("warn of expiring certificates", warn_expiring),)
