"""What goes in and out of the platform use cases."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tenantry.core.names import check_name


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Named(_In):
    name: str = Field(max_length=40)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, field="name")


class IsvCreate(_Named):
    pass


class TenantCreate(_Named):
    pass


class RegionCreate(_Named):
    pass


class PlatformCreate(_In):
    tenants: list[str] = Field(min_length=1, max_length=50)
    app: str = Field(description="APP@VERSION", max_length=90)
    name: str | None = None
    region: str | None = None
    size: Literal["s", "m", "l"] = "s"
    service_level: Literal["hands-off", "hands-on"] = "hands-off"

    @field_validator("tenants")
    @classmethod
    def _tenants(cls, value: list[str]) -> list[str]:
        for t in value:
            check_name(t, field="tenants")
        if len(set(value)) != len(value):
            raise ValueError("a tenant is listed twice")
        return value

    @field_validator("name", "region")
    @classmethod
    def _opt_label(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else check_name(value, field=info.field_name)


class PlatformUpgrade(_In):
    app: str = Field(description="APP@VERSION", max_length=90)


class IsvPublic(BaseModel):
    id: str
    name: str
    created_at: dt.datetime


class TenantPublic(BaseModel):
    id: str
    isv: str
    name: str


class RegionPublic(BaseModel):
    id: str
    name: str


class ReleasePublic(BaseModel):
    id: str
    isv: str
    app: str
    version: str
    digest: str
    processes: list[str]
    created_at: dt.datetime


class HostPublic(BaseModel):
    id: str
    name: str
    region: str
    address: str
    ingress_port: int
    state: str
    last_seen_at: dt.datetime | None
    platforms: int
    firewall: str = Field(description='"off", "in place", or what stops it')
    disk: str = Field(default="unknown", description='free space on the data disk, "LOW: …" '
                      "when the agent released its reserve")
    desired_error: str | None = Field(
        default=None, description="why the agent refused the last desired state it was sent "
        "(it then keeps running what it has); null while it holds one it accepted")


class EnrollTokenPublic(BaseModel):
    token: str
    expires_at: dt.datetime


class PlatformPublic(BaseModel):
    id: str
    isv: str
    name: str
    tenants: list[str]
    state: str
    release: str
    previous_release: str | None
    size: str
    service_level: str
    region: str
    host: str | None
    url: str
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class JobStepPublic(BaseModel):
    name: str
    state: str
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    error: str | None


class JobPublic(BaseModel):
    id: int
    kind: str
    state: str
    isv: str | None
    platform: str | None
    platform_id: str | None
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    steps: list[JobStepPublic]


class EventPublic(BaseModel):
    id: int
    time: dt.datetime
    kind: str
    message: str
    isv: str | None
    platform_id: str | None
    host_id: str | None
    job_id: int | None


class PlatformFilter(BaseModel):
    isv: str | None = Field(default=None, max_length=40)
    tenant: str | None = Field(default=None, max_length=40)
    region: str | None = Field(default=None, max_length=40)
    state: Literal["creating", "ready", "upgrading", "stopping", "stopped", "starting",
                   "destroying", "failed"] | None = None

    @field_validator("isv", "tenant", "region")
    @classmethod
    def _labels(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else check_name(value, field=info.field_name)


class PlatformAccepted(BaseModel):
    """A platform and the job that is now working on it."""

    platform: PlatformPublic
    job_id: int


class EnrollRequest(_In):
    token: str = Field(max_length=200)
    name: str = Field(max_length=40)
    region: str = Field(max_length=40)
    address: str = Field(default="127.0.0.1", max_length=100)
    ingress_port: int
    port_min: int = 20000
    port_max: int = 29999
    csr: str | None = Field(default=None, max_length=16384,
                            description="PEM CSR for a client certificate (mutual TLS)")


class EnrollResponse(BaseModel):
    host_id: str
    agent_token: str
    client_certificate: str | None = Field(
        default=None, description="signed from the CSR: the agent's mutual-TLS certificate")
