"""Regions, hosts, ISVs, tenants, apps, releases and platforms."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Column, ForeignKey, Integer, String, Table, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship

from tenantry.core.db import Base, PydanticJSON, utcnow
from tenantry.platforms.contract import DesiredState, HostObserved, PlatformReport


class Region(Base):
    __tablename__ = "regions"

    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Host(Base):
    __tablename__ = "hosts"

    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    region_id: Mapped[str] = mapped_column(ForeignKey("regions.id"))
    address: Mapped[str] = mapped_column(String(100), default="127.0.0.1")
    ingress_port: Mapped[int]
    port_min: Mapped[int] = mapped_column(default=20000)
    port_max: Mapped[int] = mapped_column(default=29999)
    agent_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(20), default="online")  # online offline
    last_seen_at: Mapped[dt.datetime | None]
    # seconds between quiet heartbeats the answer to its last one gave (hosts.quiet_heartbeat);
    # the offline check waits for three of them
    quiet_pace: Mapped[int | None]
    observed: Mapped[HostObserved] = mapped_column(PydanticJSON(HostObserved),
                                                   default=lambda: HostObserved())
    generation: Mapped[int] = mapped_column(default=1)  # bumped when its desired state changes
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    region: Mapped[Region] = relationship()


class EnrollToken(Base):
    __tablename__ = "enroll_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
    host_id: Mapped[str | None] = mapped_column(String(20))


class Isv(Base):
    __tablename__ = "isvs"

    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The ISV's backup passphrases (pgBackRest's repository cipher, restic's password),
    # made at its first backup and encrypted with its data key: tenantry escrows them, an
    # admin of the ISV may export them, and one ISV's cannot open another's repository.
    backup_key: Mapped[str | None] = mapped_column(Text, default=None)
    files_key: Mapped[str | None] = mapped_column(Text, default=None)


class _OwnedByIsv:
    """Something an ISV owns, named uniquely within that ISV."""

    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    isv_id: Mapped[str] = mapped_column(ForeignKey("isvs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[UniqueConstraint]:
        return (UniqueConstraint("isv_id", "name"),)

    @declared_attr
    def isv(cls) -> Mapped[Isv]:
        return relationship()


class Tenant(_OwnedByIsv, Base):
    __tablename__ = "tenants"


class App(_OwnedByIsv, Base):
    __tablename__ = "apps"


class Release(Base):
    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("app_id", "version"),)

    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(40))
    digest: Mapped[str] = mapped_column(String(80))
    manifest: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    app: Mapped[App] = relationship()


platform_tenants = Table(
    "platform_tenants",
    Base.metadata,
    Column("platform_id", ForeignKey("platforms.id", ondelete="CASCADE"), primary_key=True),
    Column("tenant_id", ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
)


class Platform(Base):
    """What the ISV asked for (release, size, tenants), what should run (`desired`) and
    what the host agent last saw (`observed`).

    `desired` is the state the host agent converges to: database, slots of app processes
    (a new release starts in the idle slot beside the serving one), migrations to run
    once, and which slot the route points at (see platforms.contract).
    """

    __tablename__ = "platforms"
    __table_args__ = (UniqueConstraint("isv_id", "name"),)

    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    isv_id: Mapped[str] = mapped_column(ForeignKey("isvs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(40))
    size: Mapped[str] = mapped_column(String(2), default="s")
    # hands-off: only the provider manages the hosts; hands-on: the ISV's operators may too
    service_level: Mapped[str] = mapped_column(String(10), default="hands-off",
                                               server_default="hands-off")
    state: Mapped[str] = mapped_column(String(20), default="creating")
    region_id: Mapped[str] = mapped_column(ForeignKey("regions.id"))
    # indexed: a host's document, its heartbeat and its jobs read its platforms by it (a
    # whole-table read each, 130 MB at 20,000 platforms, was most of the store's work at
    # 1,000 hosts; bench/fleet.py)
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id"), index=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"))
    previous_release_id: Mapped[str | None] = mapped_column(ForeignKey("releases.id"))
    db_password: Mapped[str | None] = mapped_column(Text)  # encrypted with the master key
    desired: Mapped[DesiredState] = mapped_column(PydanticJSON(DesiredState),
                                                  default=lambda: DesiredState())
    # The generation its host took when `desired` last changed (hosts.bump): an agent that
    # holds a later one is sent only the platforms changed since. None: always sent.
    desired_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Nothing reported yet is JSON null: the column is NOT NULL, and a plain default=None
    # would leave it out of the INSERT.
    observed: Mapped[PlatformReport | None] = mapped_column(PydanticJSON(PlatformReport),
                                                            nullable=False, default=lambda: None)
    error: Mapped[str | None] = mapped_column(Text)
    # Since when what its agent reports has been wrong (hosts.DEGRADE_AFTER); None: well. In
    # the store, not in an API process: each process of several sees some of the reports.
    unwell_since: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    isv: Mapped[Isv] = relationship()
    host: Mapped[Host | None] = relationship()
    region: Mapped[Region] = relationship()
    release: Mapped[Release] = relationship(foreign_keys=[release_id])
    previous_release: Mapped[Release | None] = relationship(foreign_keys=[previous_release_id])
    tenants: Mapped[list[Tenant]] = relationship(secondary=platform_tenants, order_by=Tenant.name)


class PortAllocation(Base):
    """Ports handed out on a host address; the primary key makes a double allocation impossible."""

    __tablename__ = "port_allocations"

    address: Mapped[str] = mapped_column(String(100), primary_key=True)
    port: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform_id: Mapped[str] = mapped_column(ForeignKey("platforms.id", ondelete="CASCADE"),
                                             index=True)
    purpose: Mapped[str] = mapped_column(String(40))
    note: Mapped[str | None] = mapped_column(Text)
