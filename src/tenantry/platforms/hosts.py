"""Hosts and their agents: enrollment, desired state out, observed state in."""

from __future__ import annotations

import datetime as dt
import math
import threading
import time

from pydantic import SecretStr
from sqlalchemy import func, or_, select, text, true, update
from sqlalchemy.orm import Session, defer, joinedload, selectinload

from tenantry.access.principal import Principal
from tenantry.core import jobs
from tenantry.core.crypto import SecretBox, new_token, token_hash
from tenantry.core.db import utcnow
from tenantry.core.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from tenantry.core.events import emit
from tenantry.core.models import Event, Job
from tenantry.core.names import check_name, new_id
from tenantry.platforms.bundles import Manifest
from tenantry.platforms.contract import (
    QUIET_HEARTBEAT_RANGE,
    DesiredBackup,
    DesiredDatabase,
    DesiredHost,
    DesiredPlatform,
    DesiredRelease,
    DesiredRoute,
    DiskReport,
    FirewallReport,
    HostInfo,
    HostReport,
    PlatformReport,
    ProcessExit,
)
from tenantry.platforms.models import EnrollToken, Host, Platform, Region, Release
from tenantry.platforms.placement import move_port
from tenantry.platforms.schemas import EnrollTokenPublic, HostPublic

# A quiet heartbeat (nothing changed on the host) says only "still here": their number grows
# with the fleet, not with what happens in it. So the control plane sets their pace, in its
# answer to each heartbeat (contract.PACE_HEADER), such that all the fleet's hosts together
# send at most QUIET_BEATS a second, and none more often than every MIN_QUIET s (as Nomad's
# servers set their clients' heartbeat TTL): 6 s up to 300 hosts, 20 s at 1,000. At 1,000
# hosts every 6 s, they were four fifths of the API's calls and kept it above a core. News
# (a report, a process exit, a change of the host) still goes at the agent's next pass.
QUIET_BEATS = 50
MIN_QUIET, MAX_QUIET = QUIET_HEARTBEAT_RANGE
PACE_RECOUNT = 30.0  # s: how often an API process counts the hosts to set the pace


def quiet_heartbeat(hosts: int) -> int:
    """Seconds between two quiet heartbeats of a host, in a fleet of `hosts`."""
    return min(MAX_QUIET, max(MIN_QUIET, math.ceil(hosts / QUIET_BEATS)))


MISSED, ON_ITS_WAY = 3, 2  # quiet heartbeats missed, and s for the one on its way


def offline_after(quiet: int) -> dt.timedelta:
    """Without a heartbeat this long a host is offline: three quiet ones missed, and 2 s for
    the one on its way (20 s at the 6 s pace, 62 s at 1,000 hosts' 20 s)."""
    return dt.timedelta(seconds=MISSED * quiet + ON_ITS_WAY)


def count_hosts(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Host)) or 0


class HeartbeatPace:
    """An API process's pace for quiet heartbeats, its hosts counted at most every
    PACE_RECOUNT s (not once per heartbeat)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._quiet, self._at = MIN_QUIET, -math.inf

    def quiet(self, session: Session) -> int:
        with self._lock:
            if time.monotonic() - self._at >= PACE_RECOUNT:
                self._quiet = quiet_heartbeat(count_hosts(session))
                self._at = time.monotonic()
            return self._quiet


def create_enroll_token(*, session: Session, principal: Principal,
                        ttl: dt.timedelta = dt.timedelta(hours=1)) -> EnrollTokenPublic:
    principal.require("provider")
    principal.require("admin")
    token = new_token("tne")
    expires = utcnow() + ttl
    session.add(EnrollToken(token_hash=token_hash(token.get_secret_value()), expires_at=expires))
    session.commit()
    return EnrollTokenPublic(token=token.get_secret_value(), expires_at=expires)


def enroll(*, session: Session, enroll_token: str, name: str, region: str, address: str,
           ingress_port: int, port_min: int, port_max: int) -> tuple[str, str]:
    """Trade a one-time enroll token for a host id and the agent's own long-lived token."""
    check_name(name, field="name")
    check_name(region, field="region")
    if not 1 <= ingress_port <= 65535:
        raise InvalidInput("ingress_port must be a TCP port", field="ingress_port")
    if not 1024 <= port_min < port_max <= 65535:
        raise InvalidInput("port range must be within 1024-65535 and not empty", field="ports")
    row = session.scalar(select(EnrollToken).where(
        EnrollToken.token_hash == token_hash(enroll_token)).with_for_update())
    if row is None or row.used_at is not None or row.expires_at < utcnow():
        raise Unauthenticated("the enroll token is unknown, used or expired")
    if session.scalar(select(Host.id).where(Host.name == name)):
        raise Conflict(f"a host named {name!r} is enrolled already", field="name")
    region_row = session.scalar(select(Region).where(Region.name == region))
    if region_row is None:
        region_row = Region(id=new_id("g"), name=region)
        session.add(region_row)
    agent_token = new_token("tna")
    host = Host(id=new_id("h"), name=name, region=region_row, address=address,
                ingress_port=ingress_port, port_min=port_min, port_max=port_max,
                agent_token_hash=token_hash(agent_token.get_secret_value()),
                state="online", last_seen_at=utcnow())
    session.add(host)
    row.used_at = utcnow()
    row.host_id = host.id
    emit(session, "HOST_ENROLLED", f"host {name} enrolled in region {region}", host_id=host.id)
    session.commit()
    return host.id, agent_token.get_secret_value()


def authenticate_agent(*, session: Session, token: str) -> Host:
    """The host of an agent token. Its observed document is read only by a route that uses
    it (a heartbeat compares it): parsing it on every long poll and document fetch was a
    tenth of the API's CPU at 300 hosts."""
    host = session.scalar(select(Host).where(Host.agent_token_hash == token_hash(token),
                                             Host.state != "revoked")
                          .options(defer(Host.observed)))
    if host is None:
        raise Unauthenticated("unknown agent token")
    return host


def _disk_state(disk: DiskReport | None) -> str:
    if disk is None:
        return "unknown"
    free = f"{_gib(disk.free_bytes)} free of {_gib(disk.total_bytes)}"
    return f"LOW: {free}" if disk.low else free


def _public(session: Session, h: Host) -> HostPublic:
    return HostPublic(id=h.id, name=h.name, region=h.region.name, address=h.address,
                      ingress_port=h.ingress_port, state=h.state, last_seen_at=h.last_seen_at,
                      platforms=count_platforms_on(session, h.id),
                      firewall=firewall_state(h.observed.firewall),
                      disk=_disk_state(h.observed.disk),
                      desired_error=h.observed.desired_error)


def list_hosts(*, session: Session, principal: Principal) -> list[HostPublic]:
    principal.require("provider")
    return [_public(session, h) for h in session.scalars(select(Host).order_by(Host.name))]


def revoke_host(*, session: Session, principal: Principal, ref: str) -> HostPublic:
    """Cut a host's agent off for good (a lost or compromised machine): its token and its
    client certificate open nothing from now on, and nothing new is placed on it. Its
    platforms stay where they are, to be moved or destroyed; to come back, the machine
    enrolls again as a new host."""
    principal.require("provider")
    principal.require("admin")
    host = session.scalar(select(Host).where((Host.name == ref) | (Host.id == ref))
                          .with_for_update())
    if host is None:
        raise NotFound(f"no host {ref!r}", field="host")
    if host.state != "revoked":
        host.state = "revoked"
        host.generation += 1  # ends the agent's long poll now
        emit(session, "HOST_REVOKED", f"host {host.name} revoked by {principal.username}",
             host_id=host.id)
        session.commit()
    return _public(session, host)


def firewall_state(reported: FirewallReport | None) -> str:
    """The agent's firewall report in a word or a reason (see agent.firewall.status)."""
    if reported is None:
        return "off"
    if reported.error:
        return f"error: {reported.error[:200]}"
    return "in place" if reported.in_place else "applying"


def bump(session: Session, platform: Platform) -> None:
    """Tell the platform's agent that its desired state changed, and stamp the platform with
    the host's new generation (`desired_at`): an agent holding that generation or a later
    one already has this change. Bumps of one host queue on its row's lock until their
    transactions end, so the stamps follow the commits' order."""
    platform.desired = platform.desired.model_copy(update={"gen": platform.desired.gen + 1})
    platform.desired_at = session.scalar(
        update(Host).where(Host.id == platform.host_id)
        .values(generation=Host.generation + 1).returning(Host.generation)) \
        if platform.host_id else None


def move_taken_ports(session: Session, platform: Platform, taken: list[int], *,
                     job_id: int | None = None) -> None:
    """Another program took ports we handed out (one of ours was down a moment, and it bound
    them): give the platform new ones instead, and tell its agent. Not the caller's commit."""
    assert platform.host is not None
    want = platform.desired.model_copy(deep=True)
    if want.db is not None and want.db.port in taken:
        want.db.port = move_port(session, platform.host, platform.id, want.db.port, "db", taken)
    for name, slot in want.slots.items():
        slot.ports = [move_port(session, platform.host, platform.id, port, f"slot-{name}",
                                taken) if port in taken else port for port in slot.ports]
    platform.desired = want
    bump(session, platform)
    emit(session, "PORTS_MOVED", f"{platform.isv.name}/{platform.name}: ports "
         f"{', '.join(map(str, taken))} were taken by another program; moved",
         isv_id=platform.isv_id, platform_id=platform.id, host_id=platform.host_id,
         job_id=job_id)


def desired_state_of(*, session: Session, host_id: str, secrets: SecretBox,
                     since: int | None = None) -> DesiredHost:
    """`desired_state` of the host `host_id`, its row and its platforms' stamps read in one
    snapshot, as a change (`since`) needs. On a session that has not queried yet."""
    session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    host = session.get(Host, host_id)
    assert host is not None  # its agent's token was checked: hosts are revoked, not deleted
    return desired_state(session=session, host=host, secrets=secrets, since=since)


def desired_state(*, session: Session, host: Host, secrets: SecretBox,
                  since: int | None = None) -> DesiredHost:
    """Everything the agent must make true on its host, secrets included (sent over TLS only).

    A fixed number of queries however many platforms the host holds (the platforms with
    their ISVs and tenants, then their releases with their apps): a fleet's hosts each
    fetch their whole document every few minutes.

    With `since`, a generation of this host whose whole document the agent holds, only the
    platforms whose desired state changed after it are built (`desired_at`), and the others
    are named in `unchanged`: a change of one platform costs one platform's document, not
    the host's. `host` and this must be read in one snapshot (`desired_state_of`): read in
    two, a platform changed in between could be in neither part."""
    delta = since is not None and 0 < since <= host.generation
    changed = or_(Platform.desired_at.is_(None), Platform.desired_at > since) if delta \
        else true()
    rows = list(session.scalars(
        select(Platform).where(Platform.host_id == host.id, changed)
        .options(defer(Platform.observed), joinedload(Platform.isv),
                 selectinload(Platform.tenants))
        .order_by(Platform.id)))
    unchanged = list(session.scalars(
        select(Platform.id).where(Platform.host_id == host.id, Platform.desired_at <= since)
        .order_by(Platform.id))) if delta else []
    placed = []
    for p in rows:
        want = p.desired
        if want.db is None:
            continue  # not placed yet
        if want.placed_by is None and p.state in ("creating", "recovering", "drilling"):
            # Its ports are held here, but its job has not written its first desired state
            # on this host: a clone's, a recovery's or a drill's asks for a restore, and a
            # cluster made empty before it would block it. (Seen in CI: a scheduled backup
            # bumped the host in between.)
            continue
        placed.append((p, want, sorted(set(want.releases)
                                       | {s.release_id for s in want.slots.values()})))
    wanted = {r for _, _, ids in placed for r in ids}
    releases = {r.id: DesiredRelease(id=r.id, digest=r.digest, app=r.app.name,
                                     version=r.version,
                                     manifest=Manifest.model_validate(r.manifest))
                for r in session.scalars(select(Release).where(Release.id.in_(wanted))
                                         .options(joinedload(Release.app)))} if wanted else {}
    platforms = []
    for p, want, release_ids in placed:
        assert want.db is not None
        route = None
        if want.cert and want.route_slot and want.hostname:
            route = DesiredRoute(hostname=want.hostname, slot=want.route_slot,
                                 cert_pem=want.cert.cert_pem,
                                 key_pem=secrets.decrypt(want.cert.key))
        password = secrets.decrypt(p.db_password) if p.db_password else SecretStr("")
        backup = None
        if want.backup is not None:
            b = want.backup
            backup = DesiredBackup(
                repo=b.repo, cipher_pass=secrets.decrypt(b.cipher),
                secret_key=secrets.decrypt(b.secret_key) if b.secret_key else None,
                archive_timeout=b.archive_timeout, spool_max_mb=b.spool_max_mb,
                files_pass=secrets.decrypt(b.files_cipher) if b.files_cipher else None,
                tasks=want.backup_tasks, restore=want.restore, drill=want.drill)
        platforms.append(DesiredPlatform(
            id=p.id, isv=p.isv.name, name=p.name, size=p.size, gen=want.gen,
            running=want.running, absent=want.absent, tenants=[t.name for t in p.tenants],
            database=DesiredDatabase(port=want.db.port, role=want.db.role,
                                     dbname=want.db.dbname, password=password),
            releases=[releases[r] for r in release_ids if r in releases],
            migrations=want.migrations, slots=want.slots, route=route, backup=backup))
    return DesiredHost(host=HostInfo(id=host.id, name=host.name, ingress_port=host.ingress_port,
                                     address=host.address),
                       generation=host.generation, platforms=platforms,
                       since=since if delta else None, unchanged=unchanged)


# The host's row in one statement. The store compares the host's part of the report with
# the document it holds, but for the agent's clock, and writes it only when it changed; it
# sends back what the row held before (its state, whether the disk was low). Reading the
# document back into the API and parsing it there was a tenth of the API's CPU at 300 hosts.
# jsonb holds no NUL, and json's operators fail on one: a stored document with one (written
# the slow way, below) is replaced without being compared, and its disk reads as not low (at
# worst a DISK_LOW told twice).
_HEARTBEAT = text(
    "UPDATE hosts AS h SET last_seen_at = :now, state = 'online', quiet_pace = :pace,"
    " observed = CASE WHEN was.nul THEN CAST(:doc AS json)"
    " WHEN CAST(h.observed AS jsonb) - 'agent_time' = CAST(:doc AS jsonb) - 'agent_time'"
    " THEN h.observed ELSE CAST(:doc AS json) END"
    " FROM (SELECT id, state, observed AS held,"
    " strpos(CAST(observed AS text), '\\u0000') > 0 AS nul"
    " FROM hosts WHERE id = :id FOR UPDATE) AS was"
    " WHERE h.id = was.id RETURNING was.state,"
    " CASE WHEN was.nul THEN false"
    " ELSE CAST(was.held -> 'disk' ->> 'low' AS boolean) IS TRUE END")


def record_report(*, session: Session, host: Host, report: HostReport, pace: int) -> None:
    """Store what the agent observed, and the pace of quiet heartbeats its answer gives;
    a host that reports is online.

    The platforms' rows are written before the host's: a job holds its platform's row and
    then bumps its host's generation, and a heartbeat that took the host's row first (while
    reporting that platform) deadlocked with it; PostgreSQL then aborted one of the two (a
    503 to the agent, or a failed job step)."""
    # An idle host's heartbeat carries no platform (only what changed or is unwell): it
    # costs one row's update, however many platforms the host holds.
    # (Each platform's report replaces the one stored, which is therefore not read.)
    reported: list[str] = []
    for p in session.scalars(select(Platform).where(Platform.host_id == host.id,
                                                    Platform.id.in_(list(report.platforms)))
                             .options(defer(Platform.observed))
                             .order_by(Platform.id)) if report.platforms else ():
        p.observed = report.platforms[p.id]
        _judge_health(session, p, report.platforms[p.id], report.ingress_error)
        reported.append(p.id)
    session.flush()
    # a job waiting on what changed goes on now, not at its timer; a refusal ends the
    # waits of all the host's platforms
    jobs.wake(session, _platform_ids(session, host.id) if report.desired_error else reported)
    doc = report.model_dump_json(exclude={"platforms", "process_exits"})  # the host's part
    if "\\u0000" in doc:  # jsonb holds no NUL; such a document is written whole
        was_state, was_low = _write_host_part(session, host, report, pace)
    else:
        was_state, was_low = session.execute(_HEARTBEAT, {"id": host.id, "now": utcnow(),
                                                          "doc": doc, "pace": pace}).one()
        # the row's are newer
        session.expire(host, ["state", "last_seen_at", "quiet_pace", "observed"])
    _tell_disk(session, host, was_low, report.disk)
    if was_state != "online":
        emit(session, "HOST_ONLINE", f"host {host.name} is back online", host_id=host.id)
    for exit_ in report.process_exits:
        _tell_restart(session, host, exit_)
    session.commit()


def _write_host_part(session: Session, host: Host, report: HostReport,
                     pace: int) -> tuple[str, bool]:
    """The host's row through the ORM, as the statement above writes it."""
    was_state, was = host.state, host.observed.disk
    host.last_seen_at, host.quiet_pace = utcnow(), pace
    host.state = "online"
    part = report.host_part()
    if part.model_copy(update={"agent_time": host.observed.agent_time}) != host.observed:
        host.observed = part
    session.flush()
    return was_state, was is not None and was.low


# A platform that is `ready` turns `degraded` once what its agent reports has been wrong for
# this long (a program supervisord is restarting is back within a second or two), and back
# to `ready` with the first report where all is well (`Platform.unwell_since`).
DEGRADE_AFTER = dt.timedelta(seconds=5)


def health_problems(p: Platform, observed: PlatformReport,
                    ingress_error: str | None) -> list[str]:
    """What is wrong with a running platform, as its agent saw it."""
    problems = []
    if observed.error:
        problems.append(f"agent: {observed.error}")
    if observed.database != "ready":
        problems.append(f"database {observed.database or 'unknown'}")
    slot = p.desired.route_slot
    seen = observed.slots.get(slot) if slot else None
    if slot and (seen is None or not seen.healthy):
        state = seen.state if seen else "not running"
        detail = f" ({seen.detail})" if seen and seen.detail else ""
        problems.append(f"app {state}{detail}")
    if ingress_error:
        problems.append(f"ingress: {ingress_error}")
    return problems


def _judge_health(session: Session, p: Platform, observed: PlatformReport,
                  ingress_error: str | None) -> None:
    if p.state not in ("ready", "degraded") or observed.gen < p.desired.gen:
        _well(p)
        return
    if observed.conflicts and p.desired.running and not _job_running(session, p):
        # A settled platform whose ports another program took while its own was down (a
        # crash, a restart): it moves, as a job waiting on it would move it.
        move_taken_ports(session, p, observed.conflicts)
    problems = health_problems(p, observed, ingress_error)
    if not problems:
        _well(p)
        if p.state == "degraded":
            p.state, p.error = "ready", None
            emit(session, "PLATFORM_RECOVERED", f"platform {p.isv.name}/{p.name} serves again",
                 isv_id=p.isv_id, platform_id=p.id, host_id=p.host_id)
        return
    reason = "; ".join(problems)[:1000]
    now = utcnow()
    if p.unwell_since is None:
        p.unwell_since = now
    if p.state == "ready" and now - p.unwell_since >= DEGRADE_AFTER:
        p.state, p.error = "degraded", reason
        emit(session, "PLATFORM_DEGRADED", f"platform {p.isv.name}/{p.name} is degraded: "
             f"{reason}",
             isv_id=p.isv_id, platform_id=p.id, host_id=p.host_id)
    elif p.state == "degraded" and p.error != reason:
        p.error = reason


def _well(p: Platform) -> None:
    if p.unwell_since is not None:  # written only when it changes
        p.unwell_since = None


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def _tell_disk(session: Session, host: Host, was_low: bool, now: DiskReport | None) -> None:
    """DISK_LOW when the agent released its reserve (free space fell below it), DISK_OK
    when it holds it again."""
    if now is None or now.low == was_low:
        return
    if now.low:
        emit(session, "DISK_LOW", f"host {host.name}: {_gib(now.free_bytes)} free of "
             f"{_gib(now.total_bytes)} on {now.path}; {now.detail or 'the reserve is released'}"
             "; free space on this disk", host_id=host.id)
    else:
        emit(session, "DISK_OK", f"host {host.name}: {_gib(now.free_bytes)} free on "
             f"{now.path}; the reserve of {now.reserve_bytes >> 20} MiB is held again",
             host_id=host.id)


def _job_running(session: Session, p: Platform) -> bool:
    """A job works on the platform (it moves taken ports itself while it waits)."""
    return bool(session.scalar(select(func.count(Job.id)).where(
        Job.platform_id == p.id, Job.state.in_(("queued", "running")))))


def _tell_restart(session: Session, host: Host, exit_: ProcessExit) -> None:
    """PROCESS_RESTARTED, with how it ended and how often it did in the last hour."""
    owner = session.get(Platform, exit_.program.split("-", 1)[0])
    if owner is not None and owner.host_id != host.id:
        owner = None
    hour_ago = utcnow() - dt.timedelta(hours=1)
    before = session.scalar(select(func.count(Event.id)).where(
        Event.kind == "PROCESS_RESTARTED", Event.host_id == host.id, Event.time >= hour_ago,
        Event.message.startswith(f"{exit_.program} ", autoescape=True))) or 0
    when = dt.datetime.fromtimestamp(exit_.at, dt.UTC).strftime("%H:%M:%S")
    whose = f" (platform {owner.isv.name}/{owner.name})" if owner is not None else ""
    emit(session, "PROCESS_RESTARTED",
         f"{exit_.program}{whose} on host {host.name} ended unexpectedly at {when} UTC "
         f"({exit_.how}) and was started again; {before + 1} time(s) in the last hour",
         isv_id=owner.isv_id if owner else None, platform_id=owner.id if owner else None,
         host_id=host.id)


def record_exits(*, session: Session, host_name: str, exits: list[ProcessExit]) -> bool:
    """Exits that `up` saw of its own processes (the API, the worker, the agent, the store,
    the monitoring programs, `up` itself), told as the agent's are, on the host `up` runs
    (its local agent's); False, with nothing told, while that host is not enrolled yet."""
    host = session.scalar(select(Host).where(Host.name == host_name))
    if host is None:
        return False
    for exit_ in exits:
        _tell_restart(session, host, exit_)
    session.commit()
    return True


def mark_offline_hosts(*, session: Session) -> None:
    """Hosts not heard of for `offline_after` the pace each was last given are offline (the
    fleet's pace now for one not heard of since it was set: a fleet that shrank a lot gives
    a faster one, which a host learns only at its next heartbeat)."""
    fleets = quiet_heartbeat(count_hosts(session))
    pace = func.coalesce(Host.quiet_pace, fleets)
    # `offline_after` of each host's pace, in the store
    cutoff = Host.last_seen_at + func.make_interval(0, 0, 0, 0, 0, 0,
                                                    MISSED * pace + ON_ITS_WAY)
    for host in session.scalars(select(Host).where(Host.state == "online",
                                                   cutoff < utcnow())):
        after = offline_after(host.quiet_pace or fleets)
        host.state = "offline"
        emit(session, "HOST_OFFLINE", f"host {host.name} has not reported for "
             f"{int(after.total_seconds())} s", host_id=host.id)
        jobs.wake(session, _platform_ids(session, host.id))  # to count how long it is lost
    session.commit()


def _platform_ids(session: Session, host_id: str) -> list[str]:
    return list(session.scalars(select(Platform.id).where(Platform.host_id == host_id)))


def count_platforms_on(session: Session, host_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Platform)
                          .where(Platform.host_id == host_id)) or 0
