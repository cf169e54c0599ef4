"""The composition root: every domain of tenantry, named once.

Adding a domain means writing its package (the anatomy in `tenantry.core.domain`) and one
line here. The front-ends ask this module for what they serve: the API its routers, the
portal its pages, the CLI its command groups, the worker its job kinds and periodic work,
the migrations every table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tenantry.core.domain import Domain

if TYPE_CHECKING:  # the CLI reads DOMAINS: it must not pull in FastAPI or SQLAlchemy
    from fastapi import APIRouter
    from sqlalchemy import MetaData
    from typer import Typer

    from tenantry.core.jobs import JobKind, Periodic

DOMAINS: tuple[Domain, ...] = (
    Domain("tenantry.platforms"),  # ISVs, tenants, releases, platforms, hosts, jobs, events
    Domain("tenantry.access"),  # people, roles, tokens, logins
    Domain("tenantry.access.audit"),  # the hash-chained audit log
    Domain("tenantry.access.ssh"),  # SSH certificates for people on hosts
    Domain("tenantry.access.keys"),  # secrets at rest, site certificates
    Domain("tenantry.access.support"),  # support grants on hands-on platforms
    Domain("tenantry.monitoring"),  # checks, alerts, notifications, maintenance, status
    Domain("tenantry.backups"),  # backups, point-in-time recovery, disaster recovery
    Domain("tenantry.billing"),  # metered end users, plans, subscriptions, invoices
)

# Commands that run processes rather than use cases: `up` and its servers, the agent.
FRONTENDS = ("tenantry.cli.serve", "tenantry.agent.cli")


def metadata() -> MetaData:
    """Every table of every domain (for migrations and tests)."""
    from tenantry.core.db import Base

    for domain in DOMAINS:
        domain.part("models")
    return Base.metadata


def job_kinds() -> dict[str, JobKind]:
    return {kind.name: kind for domain in DOMAINS for kind in domain.job_kinds()}


def periodic() -> list[Periodic]:
    return [task for domain in DOMAINS for task in domain.periodic()]


def api_routers() -> Sequence[APIRouter]:
    return [domain.router() for domain in DOMAINS]


def page_routers() -> Sequence[APIRouter]:
    return [domain.pages() for domain in DOMAINS]


def register_cli(root: Typer) -> None:
    import importlib

    for domain in DOMAINS:
        domain.register_cli(root)
    for module in FRONTENDS:
        importlib.import_module(module).register(root)
