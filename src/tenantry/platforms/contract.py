"""The host contract: what the control plane wants on a host, and what its agent reports.

Three documents, each a model defined once and validated on both sides:

- `DesiredState`: a platform's desired state as the control plane stores it (the
  `platforms.desired` column). It names releases by id and keeps the TLS key encrypted.
- `DesiredHost`: the document the agent fetches (`GET /agent/desired`): the host, its
  generation and a `DesiredPlatform` per platform, with releases spelled out and secrets
  decrypted. Secrets are `SecretStr`: `repr`, `str` and a plain JSON dump show
  `'**********'`; only `model_dump(mode="json", context=WIRE)` (or `model_dump_json`
  with it) writes the real values, which the agent API does and nothing else should.
- `HostReport`: what the agent observed (`POST /agent/report`): a `PlatformReport` per
  platform plus host facts (`HostObserved`, stored on the host).

Field names are the JSON keys the agent and the control plane have always exchanged, so the
wire format is unchanged. Models that cross the boundary refuse unknown fields: a typo on
either side fails loudly at the edge instead of being ignored on a remote host.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from tenantry.platforms.bundles import Manifest

SlotName = Literal["a", "b"]  # a new release starts in the idle slot beside the serving one

WIRE = {"reveal_secrets": True}  # serialization context of the document sent to the agent
# The control plane's answer to a heartbeat names, in whole seconds, how long the agent
# waits before a heartbeat with nothing new; an agent takes a value within the range and
# keeps its own (the least) otherwise. The larger the fleet, the longer (hosts.QUIET_BEATS).
PACE_HEADER = "Tenantry-Heartbeat-Interval"
QUIET_HEARTBEAT_RANGE = (6, 60)


def quiet_pace(said: str | None) -> int | None:
    """The pace a heartbeat's answer names (its PACE_HEADER), when that is whole seconds
    within QUIET_HEARTBEAT_RANGE; None when it names none, or nonsense."""
    low, high = QUIET_HEARTBEAT_RANGE
    return int(said) if said and said.isdigit() and low <= int(said) <= high else None

# s the API keeps an agent's idle connection open; an agent lets its own go 10 s sooner, so
# it never sends on one the server is closing, and reuses it between heartbeats, the
# quietest included (a new connection, with its TLS handshake, for every heartbeat of a
# large fleet would cost the API more than the heartbeat)
KEEP_ALIVE = QUIET_HEARTBEAT_RANGE[1] + 15


def _secret_for(value: SecretStr, info: SerializationInfo) -> str:
    context = info.context
    if isinstance(context, dict) and context.get("reveal_secrets") is True:
        return value.get_secret_value()
    return str(value)  # '**********'


# Shown masked everywhere; written in clear only into a JSON dump with the WIRE context.
WireSecret = Annotated[SecretStr, PlainSerializer(_secret_for, return_type=str,
                                                  when_used="json")]


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- shared parts


class DatabaseSpec(_Document):
    port: int
    role: str = "app"
    dbname: str = "app"


class DesiredSlot(_Document):
    """The processes of one release on a set of ports (one port per web process)."""

    release_id: str
    ports: list[int]
    running: bool = True
    after_migration: str | None = None  # start only once this migration ran "ok"


class DesiredMigration(_Document):
    """A release command to run once (its id is unique per job)."""

    id: str
    release_id: str


class BackupRepo(_Document):
    """Where a platform's backups go: a directory (the embedded default, on the host) or an
    S3-compatible store. `path` is the directory, or the key prefix in the bucket; either
    way it ends in the ISV's name and the platform's id, so each ISV has its own prefix."""

    type: Literal["posix", "s3"]
    path: str
    bucket: str | None = None
    endpoint: str | None = None  # host[:port] of the S3 server (TLS only: pgBackRest's rule)
    region: str | None = None
    key_id: str | None = None
    ca_pem: str | None = None  # a private CA the endpoint's certificate chains to


class BackupTask(_Document):
    """Work on the platform's backups the control plane asked for (its id is unique per
    job): a backup (`full`, `diff`, `incr`), `verify` (pgBackRest checks every file of the
    repository against its checksums), `restore-test` (the latest backup restored into a
    scratch cluster beside the platform's, every table of every database read and counted,
    the scratch cluster dropped), or `expire` (the full backups `labels`, with the
    differentials and incrementals built on them and the WAL only they needed)."""

    id: str
    type: Literal["full", "diff", "incr", "verify", "restore-test", "expire"]
    labels: list[str] = Field(default_factory=list)  # expire: these full backups and theirs


class RestoreTask(_Document):
    """Make the platform's database what a backup says, replaying WAL to a point.

    `target` is a Unix time (None: as far as the archive goes); `label` picks a backup (None:
    the latest one before the target); with `immediate` the replay stops as soon as the
    backup is consistent. `source` is another platform's stanza and repository (a clone);
    None means the platform's own (a restore in place, or a recovery on a new host). The
    agent restores only while the database is stopped, or into a cluster not made yet.
    """

    id: str
    target: float | None = None
    label: str | None = None
    immediate: bool = False
    source_stanza: str | None = None
    source: BackupRepo | None = None


class DrillTask(_Document):
    """A disaster-recovery drill on the platform's host.

    `load`: write to the database without pause (one commit every few milliseconds into
    the `tenantry_drill` schema), remembering every acknowledged one; `destroy`: stop the
    load, move the data directory away, SIGKILL the postmaster, delete the data directory
    and the WAL spool (the restore the same desired state asks for then rebuilds the cluster
    from the repository alone); `verify`: count which acknowledged commits the recovered
    database holds, then drop the drill's schema.

    When the recovery is on another host than the load, `acked` carries to it, with the
    verify phase, the id ranges (first, last) of the commits the lost host saw acknowledged
    before the destruction.
    """

    id: str
    phase: Literal["load", "destroy", "verify"]
    acked: list[tuple[int, int]] = Field(default_factory=list, max_length=100_000)


# ---------------------------------------------------------------- stored: platforms.desired


class StoredBackup(_Document):
    """Backups of a platform as stored: the secrets encrypted with their owner's data key."""

    repo: BackupRepo
    cipher: str  # the ISV's repository passphrase, encrypted with the ISV's data key
    secret_key: str | None = None  # the S3 secret access key, encrypted
    archive_timeout: int = 10  # seconds: the longest a commit waits to be archived
    spool_max_mb: int = 512  # WAL queued while the store is away, at most; then an event
    files_cipher: str | None = None  # the ISV's restic password, encrypted (None: no files)


class StoredCert(_Document):
    cert_pem: str
    key: str  # encrypted with the ISV's data key (SecretBox)
    not_after: dt.datetime


class Upgrade(_Document):
    """An upgrade or rollback in progress, so its steps find their own writes again."""

    job: int
    from_slot: SlotName
    to_slot: SlotName
    from_release: str
    to_release: str
    restore_point: str | None = None  # the backup taken before its migration ran


class RestorePoint(_Document):
    """The backup an upgrade took just before its migration ran, kept until the next
    upgrade: a rollback to `from_release` can bring the database back to it."""

    label: str
    job: int
    from_release: str
    to_release: str
    taken_at: float  # Unix time


class DesiredState(_Document):
    """A platform's desired state as stored; `{}` (not placed yet) loads as the defaults."""

    gen: int = 0  # bumped on every change; the agent reports the gen it converged to
    db: DatabaseSpec | None = None  # None until the platform is placed on a host
    releases: list[str] = Field(default_factory=list)  # release ids built on the host
    slots: dict[SlotName, DesiredSlot] = Field(default_factory=dict)
    route_slot: SlotName | None = None
    migrations: list[DesiredMigration] = Field(default_factory=list)
    running: bool = False
    absent: bool = False  # the agent removes everything of the platform
    placed_by: int | None = None  # the create job that placed it
    hostname: str | None = None
    cert: StoredCert | None = None
    upgrade: Upgrade | None = None
    backup: StoredBackup | None = None  # None: no backups (not configured yet)
    backup_tasks: list[BackupTask] = Field(default_factory=list)
    restore: RestoreTask | None = None  # the last restore asked for
    drill: DrillTask | None = None
    restore_point: RestorePoint | None = None  # of the last upgrade that migrated


# ---------------------------------------------------------------- wire: GET /agent/desired


class DesiredDatabase(DatabaseSpec):
    password: WireSecret


class DesiredRelease(_Document):
    id: str
    digest: str
    app: str
    version: str
    manifest: Manifest


class DesiredRoute(_Document):
    hostname: str
    slot: SlotName
    cert_pem: str
    key_pem: WireSecret


class DesiredBackup(_Document):
    repo: BackupRepo
    cipher_pass: WireSecret
    secret_key: WireSecret | None = None
    archive_timeout: int
    spool_max_mb: int
    files_pass: WireSecret | None = None  # restic's password: None, no file backups
    tasks: list[BackupTask] = Field(default_factory=list)
    restore: RestoreTask | None = None
    drill: DrillTask | None = None


class DesiredPlatform(_Document):
    id: str
    isv: str
    name: str
    size: str
    gen: int
    running: bool
    absent: bool
    tenants: list[str]
    database: DesiredDatabase
    releases: list[DesiredRelease]
    migrations: list[DesiredMigration]
    slots: dict[SlotName, DesiredSlot]
    route: DesiredRoute | None
    backup: DesiredBackup | None = None

    def release(self, rid: str) -> DesiredRelease:
        return next(r for r in self.releases if r.id == rid)

    def ports(self) -> list[int]:
        return [self.database.port, *(p for s in self.slots.values() for p in s.ports)]


class HostInfo(_Document):
    id: str
    name: str
    ingress_port: int
    address: str


class DesiredHost(_Document):
    """The host's desired state. Whole, or, when `since` is set, a change to the whole
    document of generation `since` that the agent holds: `platforms` holds those that
    changed after it, `unchanged` the ids of those that did not (the agent keeps its own),
    and a platform in neither is no longer the host's (see `merged`)."""

    host: HostInfo
    generation: int
    platforms: list[DesiredPlatform]
    since: int | None = None
    unchanged: list[str] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _whole_as_before(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A whole document is written without the change's fields: an agent older than
        them refuses a field it does not know."""
        data: dict[str, Any] = handler(self)
        if self.since is None:
            data.pop("since", None)
            data.pop("unchanged", None)
        return data

    def merged(self, held: DesiredHost | None) -> DesiredHost | None:
        """The whole document: this one if it is whole, else this change applied to `held`.
        None when `held` is not the document this change is to (the caller fetches the
        whole one)."""
        if self.since is None:
            return self
        if held is None or held.since is not None or held.generation != self.since:
            return None
        kept = {p.id: p for p in held.platforms}  # an unchanged one it lacks is not placed
        new = {p.id: p for p in self.platforms}
        platforms = [kept[i] for i in self.unchanged if i in kept and i not in new]
        return self.model_copy(update={
            "platforms": sorted([*platforms, *self.platforms], key=lambda p: p.id),
            "since": None, "unchanged": []})


# ---------------------------------------------------------------- wire: POST /agent/report


class SlotReport(_Document):
    state: Literal["running", "starting", "stopped", "failed"]
    healthy: bool
    detail: str = ""


class BackupInfo(_Document):
    """One backup in the repository, as `pgbackrest info` tells it."""

    label: str
    type: Literal["full", "diff", "incr"]
    started_at: float  # Unix time
    finished_at: float
    size: int  # bytes of the database it holds
    stored: int  # bytes it takes in the repository (compressed, only what changed)
    wal_start: str
    wal_stop: str


class FilesSnapshot(_Document):
    """One restic snapshot of the platform's files directory. `label` is the database
    backup it was taken with (right after it), so a restore finds the files that go with
    the database it brings back."""

    id: str
    time: float  # Unix time
    label: str | None = None
    files: int = 0
    size: int = 0  # bytes of the files directory


class DrillReport(_Document):
    """What a drill saw on the host (times are the host's Unix times)."""

    id: str
    phase: Literal["load", "destroy", "verify"]
    acked: int = 0  # commits acknowledged before the destruction
    first_acked_at: float | None = None
    last_acked_at: float | None = None
    destroyed_at: float | None = None
    lost: int | None = None  # acknowledged commits the recovered database lacks
    last_kept_at: float | None = None  # the newest acknowledged commit it holds
    error: str | None = None
    # once destroyed: the acknowledged ids as ranges (first, last), for a verify elsewhere
    acked_ranges: list[tuple[int, int]] = Field(default_factory=list)


class BackupReport(_Document):
    """The platform's backups as the agent last saw them.

    `stanza` is "ready", "missing" or "error: <why>"; `tasks` maps a task id to "running",
    "ok: <label>" or "failed: <why>", and `restores` a restore's id to "ok" or "failed:
    <why>"; `archived_at` is when PostgreSQL last archived a WAL segment (everything
    committed before it can be recovered), `archive_error` why the last attempt failed when
    it did fail after that.
    """

    stanza: str = "missing"
    tasks: dict[str, str] = Field(default_factory=dict)
    restores: dict[str, str] = Field(default_factory=dict)  # task id -> "ok" | "failed: why"
    backups: list[BackupInfo] = Field(default_factory=list)
    snapshots: list[FilesSnapshot] = Field(default_factory=list)  # restic's, oldest first
    archived_at: float | None = None
    archive_error: str | None = None
    drill: DrillReport | None = None


class PlatformReport(_Document):
    """What the agent saw of one platform, at the desired `gen` it converged to.

    `database` is "ready", "starting", "stopped" or "error: <why>"; `releases` maps a
    release id to "built"; `migrations` maps a migration id to "ok" or "failed: <why>".
    """

    gen: int = 0
    database: str = ""
    conflicts: list[int] = Field(default_factory=list)  # our ports another program holds
    releases: dict[str, str] = Field(default_factory=dict)
    migrations: dict[str, str] = Field(default_factory=dict)
    slots: dict[SlotName, SlotReport] = Field(default_factory=dict)
    route_slot: SlotName | None = None
    absent: bool = False  # everything of the platform is gone from the host
    error: str | None = None
    backup: BackupReport | None = None


class DiskReport(_Document):
    """The filesystem of the agent's data dir, and the reserve the agent holds on it
    (tenantry.agent.disk): `low` when the reserve is released (free space fell below it)."""

    path: str = Field(max_length=4096)
    total_bytes: int = Field(ge=0)
    free_bytes: int = Field(ge=0)
    reserve_bytes: int = Field(ge=0)
    low: bool
    detail: str | None = Field(default=None, max_length=500)


class ProcessExit(_Document):
    """A program of the host that exited without being asked to (supervisord starts it
    again): `program` as supervisord names it (`<platform id>-…` for a platform's), `how`
    as it tells it ("exit status 1", "terminated by SIGKILL"), `at` the host's Unix time."""

    program: str = Field(max_length=200)
    how: str = Field(max_length=200)
    at: float


class FirewallReport(_Document):
    table: str
    tcp_ports: list[int]
    in_place: bool
    repairs: int = 0
    error: str | None = None


class HostObserved(_Document):
    """The host-level part of a report, kept on the host (the `hosts.observed` column)."""

    ingress_error: str | None = None
    busy_ports: list[int] = Field(default_factory=list)  # held by other programs
    agent_time: float | None = None
    firewall: FirewallReport | None = None
    # Where Prometheus scrapes this host, job → "host:port": "node", "agent", and "postgres"
    # while the host runs a cluster (read by the control plane's service discovery).
    monitoring: dict[str, str] = Field(default_factory=dict)
    disk: DiskReport | None = None
    # why the agent refused the last desired state it was sent (the fields and reasons,
    # never values); None while it holds one it accepted
    desired_error: str | None = Field(default=None, max_length=2000)


class HostReport(HostObserved):
    platforms: dict[str, PlatformReport] = Field(default_factory=dict)
    # exits since the last report that reached the control plane (events, not state)
    process_exits: list[ProcessExit] = Field(default_factory=list, max_length=1000)

    def host_part(self) -> HostObserved:
        return HostObserved.model_validate(self.model_dump(exclude={"platforms",
                                                                    "process_exits"}))
