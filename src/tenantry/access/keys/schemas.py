"""What goes in and out of the key and certificate use cases."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class SiteCertificateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: str = Field(max_length=253)
    certificate_pem: str = Field(description="the site's certificate, then each issuer",
                                 max_length=65536)
    key_pem: SecretStr = Field(description="the unencrypted private key (PEM); stored "
                               "encrypted", max_length=65536)


class SiteCertificatePublic(BaseModel):
    id: str
    isv: str
    domain: str
    issuer: str
    fingerprint: str
    not_before: dt.datetime
    not_after: dt.datetime
    days_left: int
    created_at: dt.datetime


class RotationPublic(BaseModel):
    old_master_key_id: str
    new_master_key_id: str
    data_keys: int = Field(description="data keys re-wrapped under the new master key")
    converted: int = Field(description="secrets from before envelope encryption, converted")
    key_file: str | None = Field(description="the master key file replaced, if any")
