"""What the backups API takes and answers."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tenantry.core.names import check_name

BackupType = Literal["full", "diff", "incr"]
CheckType = Literal["full", "diff", "incr", "verify", "restore-test"]


class BackupRun(BaseModel):
    """A backup now, or a check of the backups: `verify` (every file of the repository
    against its checksum) or `restore-test` (the latest backup restored into a scratch
    cluster and read)."""

    model_config = ConfigDict(extra="forbid")

    type: CheckType = "incr"


class RestoreRequest(BaseModel):
    """`to_time` (ISO 8601; without a zone it is UTC) or `latest`, not both."""

    model_config = ConfigDict(extra="forbid")

    to_time: dt.datetime | None = None
    latest: bool = False


class DrillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str | None = Field(default=None, min_length=1, max_length=40)
    seconds: float = Field(default=20.0, ge=1, le=600)  # the write load before the destruction


class DrillPublic(BaseModel):
    id: int
    platform: str
    job_id: int
    kind: str  # dr | restore-test
    result: str  # ok | failed
    host: str
    same_host: bool
    started_at: dt.datetime
    finished_at: dt.datetime
    acked_commits: int | None
    lost_commits: int | None
    rpo_seconds: float | None
    rto_seconds: float | None
    detail: str | None


class RecoverRequest(BaseModel):
    """Where to rebuild a platform whose host is gone: `host` (by name) or `region` (its
    least loaded online host), not both; neither: another online host of its own region.
    `to_time` as for a restore (default: the latest archived commit)."""

    model_config = ConfigDict(extra="forbid")

    host: str | None = Field(default=None, min_length=1, max_length=63)
    region: str | None = Field(default=None, min_length=1, max_length=63)
    to_time: dt.datetime | None = None


class CloneRequest(BaseModel):
    """A new platform from this one's backups: `name`, and `to_time` (default: the latest)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=40)
    to_time: dt.datetime | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, field="name")


class FilesPublic(BaseModel):
    """The restic snapshot of the platform's files taken with a backup."""

    snapshot: str  # restic's short id
    files: int
    size: int  # bytes of the files directory


class BackupPublic(BaseModel):
    label: str
    type: BackupType
    status: Literal["ok"]  # the repository holds only complete backups
    started_at: dt.datetime
    finished_at: dt.datetime
    duration_seconds: float
    size: int  # bytes of the database
    stored: int  # bytes added to the repository
    files: FilesPublic | None = None  # None: no files snapshot goes with it


class BackupWindow(BaseModel):
    """The recoverable time range: from the end of the oldest backup to the last archived
    WAL; `earliest` and `latest` are null while there is no backup."""

    platform: str
    earliest: dt.datetime | None
    latest: dt.datetime | None
    archive_error: str | None = None


class BackupAccepted(BaseModel):
    platform: str
    job_id: int


class BackupKeys(BaseModel):
    """An ISV's escrowed passphrases: with them (and the store), its repositories open
    without tenantry."""

    isv: str
    pgbackrest_cipher_pass: str | None
    restic_password: str | None
