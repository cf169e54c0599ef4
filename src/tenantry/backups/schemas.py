"""What the backups API takes and answers."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

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


SCHEDULED = ("full", "diff", "incr", "verify", "restore_test")
# The shortest and longest interval each may be set to, in seconds.
SCHEDULE_BOUNDS = {"full": (86400, 90 * 86400), "diff": (3600, 30 * 86400),
                   "incr": (900, 7 * 86400), "verify": (3600, 90 * 86400),
                   "restore_test": (3600, 90 * 86400)}
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_interval(text: str, field: str) -> int:
    """"30m", "4h", "1d", "2w" as seconds, within the field's bounds."""
    value = text.strip().lower()
    if len(value) < 2 or value[-1] not in _UNITS or not value[:-1].isdigit() or \
            len(value) > 6:
        raise ValueError(f"{field}: {text!r} is not an interval like 30m, 4h, 1d or 2w")
    seconds = int(value[:-1]) * _UNITS[value[-1]]
    low, high = SCHEDULE_BOUNDS[field]
    if not low <= seconds <= high:
        raise ValueError(f"{field}: {text} is outside {show_interval(low)} to "
                         f"{show_interval(high)}")
    return seconds


def show_interval(seconds: int) -> str:
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class ScheduleUpdate(BaseModel):
    """Intervals as "30m", "4h", "1d" or "2w"; a field left out stays as it is, null goes
    back to the default; `reset` puts every one back to the default."""

    model_config = ConfigDict(extra="forbid")

    full: str | None = Field(default=None, max_length=8)
    diff: str | None = Field(default=None, max_length=8)
    incr: str | None = Field(default=None, max_length=8)
    verify: str | None = Field(default=None, max_length=8)
    restore_test: str | None = Field(default=None, max_length=8)
    reset: bool = False

    @field_validator(*SCHEDULED)
    @classmethod
    def _interval(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            parse_interval(value, str(info.field_name))
        return value


class SchedulePublic(BaseModel):
    """The platform's schedule in force: each interval, and which ones are its own."""

    platform: str
    full: str
    diff: str
    incr: str
    verify: str
    restore_test: str
    overridden: list[str]


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
