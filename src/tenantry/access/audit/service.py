"""The tamper-evident audit log: append, list, verify, and ship the signed head offsite.

Other packages call one function, in their own transaction (it does not commit)::

    from tenantry.access.audit.service import record
    record(session, actor=principal.username, actor_id=principal.user_id,
           action="ssh.cert.issue", target=cert_id, source="api", org=isv_id,
           detail={"valid_minutes": 5})

`detail` must never hold a secret. The entry joins the chain when the caller commits;
appends serialize on a transaction-scoped advisory lock taken by `record`, so call it
late in the transaction (the lock is held until commit).

The chain: entry n carries `prev_mac` (entry n-1's `mac`, or 64 zeros for the first) and
`mac = HMAC-SHA256(K, prev_mac || canonical JSON of its fields, id included)`, where
K = SecretBox.derive("audit-mac"). Ids are assigned contiguously under the lock, so a gap
is a deletion, a MAC that does not recompute is a modification, and a `prev_mac` that is
not the previous entry's MAC is an insertion or a reordering. Truncating the tail leaves
a valid chain, so the head (last id, last MAC, count, time) is signed with a second key
("audit-head") and shipped to an offsite object store at least every minute; verify
compares the chain with the latest shipped head.

The MAC key belongs to the process's runtime (`keys_of(runtime)`, kept on the runtime), and
`record` finds it through the session's runtime. There is no import-time key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Engine, Text, bindparam, cast, func, insert, select, text
from sqlalchemy.orm import Session

from tenantry.access.audit.models import AuditEntry
from tenantry.access.audit.schemas import (
    AuditEntryPublic,
    AuditFilter,
    AuditHead,
    AuditProblem,
    AuditVerifyReport,
)
from tenantry.access.principal import Principal, scoped
from tenantry.core.crypto import SecretBox
from tenantry.core.db import utcnow
from tenantry.core.errors import Conflict, NotAllowed
from tenantry.core.objectstore import ObjectStore, open_offsite
from tenantry.core.runtime import Runtime, runtime_of

__all__ = ["record", "append_many", "appender", "keys_of", "list_entries", "verify", "ship_head",
           "ship_head_if_due", "latest_head", "offsite_store", "AuditKeys"]

GENESIS = "0" * 64
SOURCES = frozenset({"api", "portal", "cli", "agent", "host", "system"})
HEAD_KEY = "audit/head.json"
HEADS_PREFIX = "audit/heads/"
DATED_LOOKBACK_DAYS = 35  # how far back verify looks for the newest dated head
SHIP_EVERY = 50.0  # seconds; housekeeping runs every 2 s, so a head is never 60 s old
_LOCK = 7261010  # advisory lock id of the chain's tail (migrate uses 7261001)
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True)
class AuditKeys:
    mac: bytes
    head: bytes

    def __repr__(self) -> str:
        return "AuditKeys(**********)"

    @classmethod
    def from_secrets(cls, box: SecretBox) -> AuditKeys:
        return cls(mac=box.derive("audit-mac"), head=box.derive("audit-head"))


def keys_of(runtime: Runtime) -> AuditKeys:
    """The runtime's audit keys (derived once, kept on the runtime)."""
    return runtime.shared("audit.keys", lambda: AuditKeys.from_secrets(runtime.secrets))


def _keys_for(session: Session) -> AuditKeys:
    return keys_of(runtime_of(session))


def _iso(time: dt.datetime) -> str:
    return time.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _mac(key: bytes, prev_mac: str, entry_id: int, time: dt.datetime, actor: str,
         actor_id: str | None, org: str | None, source: str, action: str, target: str,
         outcome: str, ip: str | None, detail: Any) -> str:
    body = _encode([entry_id, _iso(time), actor, actor_id, org, source, action, target,
                    outcome, ip, detail])
    return hmac.new(key, prev_mac.encode() + body.encode(), hashlib.sha256).hexdigest()


def _tail(session: Session) -> tuple[int, str]:
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
    last = session.execute(select(AuditEntry.id, AuditEntry.mac)
                           .order_by(AuditEntry.id.desc()).limit(1)).first()
    return (0, GENESIS) if last is None else (int(last[0]), str(last[1]))


def append_many(session: Session, events: Iterable[Mapping[str, Any]],
                *, keys: AuditKeys | None = None) -> int:
    """Chain and insert many events in the caller's transaction; returns the last id.

    Each event is a mapping with the keyword arguments of `record`.
    """
    key = (keys or _keys_for(session)).mac
    last_id, prev = _tail(session)
    now = utcnow()
    rows = []
    for event in events:
        last_id += 1
        row = {
            "id": last_id, "time": event.get("time") or now, "actor": event["actor"],
            "actor_id": event.get("actor_id"), "org": event.get("org"),
            "source": event["source"], "action": event["action"],
            "target": str(event.get("target") or ""), "outcome": str(event.get("outcome", "ok")),
            "ip": event.get("ip"), "detail": event.get("detail"), "prev_mac": prev,
        }
        row["mac"] = prev = _mac(key, prev, last_id, row["time"], row["actor"], row["actor_id"],
                                 row["org"], row["source"], row["action"], row["target"],
                                 row["outcome"], row["ip"], row["detail"])
        rows.append(row)
    if rows:
        # `detail` goes in as the exact canonical text the MAC covered (`json` keeps text
        # verbatim), so verify splices it into the MAC input without parsing it.
        for row in rows:
            detail = row.pop("detail")
            row["detail_text"] = None if detail is None else _encode(detail)
        session.execute(insert(AuditEntry).values(
            detail=cast(bindparam("detail_text", type_=Text), JSON)), rows)
    return last_id


def record(session: Session, *, actor: str, action: str, target: str, source: str,
           outcome: str = "ok", org: str | None = None, detail: dict[str, Any] | None = None,
           actor_id: str | None = None, ip: str | None = None) -> int:
    """Append one entry in the caller's transaction (no commit); returns its id."""
    return append_many(session, [{
        "actor": actor, "action": action, "target": target, "source": source,
        "outcome": outcome, "org": org, "detail": detail, "actor_id": actor_id, "ip": ip}])


class GroupAppender:
    """Appends entries that need a transaction of their own, many to a commit.

    The chain makes appends take turns (one lock, held to the commit), so one entry per
    transaction is bound by the round trips of each commit. Here a caller that finds no
    commit in flight writes everything waiting, in one transaction, while the others wait
    for it: under load each commit carries many entries. A batch that fails (one bad entry)
    is retried entry by entry, so one bad entry never costs the others theirs.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._cond = threading.Condition()
        self._waiting: list[_Pending] = []
        self._writing = False

    def append(self, event: Mapping[str, Any]) -> int:
        """Append one entry (the keyword arguments of `record`); returns its id once committed."""
        mine = _Pending(event)
        with self._cond:
            self._waiting.append(mine)
            while not mine.done:
                if self._writing:
                    self._cond.wait()
                    continue
                batch, self._waiting, self._writing = self._waiting, [], True
                self._cond.release()
                try:
                    self._write(batch)
                finally:
                    self._cond.acquire()
                    self._writing = False
                    self._cond.notify_all()
        if mine.error is not None:
            raise mine.error
        return mine.entry_id

    def _write(self, batch: list[_Pending]) -> None:
        keys = keys_of(self.runtime)
        try:
            self._commit(batch, keys)
        except Exception:
            for one in batch:
                try:
                    self._commit([one], keys)
                except Exception as exc:  # noqa: BLE001  (handed to its own caller)
                    one.error, one.done = exc, True

    def _commit(self, batch: list[_Pending], keys: AuditKeys) -> None:
        with self.runtime.sessions() as session:
            last = append_many(session, [one.event for one in batch], keys=keys)
            session.commit()
        for offset, one in enumerate(batch):
            one.entry_id, one.done = last - len(batch) + 1 + offset, True


@dataclass
class _Pending:
    event: Mapping[str, Any]
    entry_id: int = 0
    done: bool = False
    error: Exception | None = None


def appender(runtime: Runtime) -> GroupAppender:
    """The runtime's one group appender (appends in transactions of their own go here)."""
    return runtime.shared("audit.appender", lambda: GroupAppender(runtime))


def record_for(session: Session, principal: Principal, *, action: str, target: str,
               source: str, outcome: str = "ok", org: str | None = None,
               detail: dict[str, Any] | None = None) -> int:
    """`record` for a known principal: actor, actor id and organisation from it."""
    return record(session, actor=principal.username, actor_id=principal.user_id,
                  action=action, target=target, source=source, outcome=outcome,
                  org=org or principal.isv_id, detail=detail)


def _public(row: Any) -> AuditEntryPublic:
    return AuditEntryPublic(id=row.id, time=row.time, actor=row.actor, actor_id=row.actor_id,
                            org=row.org, source=row.source, action=row.action,
                            target=row.target, outcome=row.outcome, ip=row.ip,
                            detail=row.detail)


def list_entries(*, session: Session, principal: Principal,
                 filters: AuditFilter) -> list[AuditEntryPublic]:
    """Newest first; ISV roles see only their organisation's entries."""
    query = scoped(select(AuditEntry), principal, "view", AuditEntry.org)
    if filters.actor:
        query = query.where(AuditEntry.actor == filters.actor)
    if filters.action:
        query = query.where(AuditEntry.action.contains(filters.action, autoescape=True))
    if filters.target:
        query = query.where(AuditEntry.target.contains(filters.target, autoescape=True))
    if filters.since:
        query = query.where(AuditEntry.time >= filters.since)
    if filters.until:
        query = query.where(AuditEntry.time < filters.until)
    rows = session.scalars(query.order_by(AuditEntry.id.desc()).limit(filters.limit))
    return [_public(r) for r in rows]


# ---------------------------------------------------------------- head

def _head_sig(key: bytes, last_id: int, last_mac: str, count: int, time: dt.datetime) -> str:
    body = _encode([last_id, last_mac, count, _iso(time)])
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def offsite_store(runtime: Runtime) -> ObjectStore:
    """The store the `offsite_*` settings name (DATA_DIR/offsite when none), one per runtime.

    Dated heads are write-once there (S3 Object Lock, when the bucket has it); the latest
    head (HEAD_KEY) is rewritten at every ship, so it is the one key left unlocked.
    """
    return runtime.shared("audit.offsite", lambda: open_offsite(runtime.settings,
                                                                 mutable_keys=(HEAD_KEY,)))


def current_head(session: Session, keys: AuditKeys) -> AuditHead:
    last = session.execute(select(AuditEntry.id, AuditEntry.mac)
                           .order_by(AuditEntry.id.desc()).limit(1)).first()
    count = int(session.scalar(select(func.count()).select_from(AuditEntry)) or 0)
    last_id, last_mac = (0, GENESIS) if last is None else (int(last[0]), str(last[1]))
    now = utcnow()
    return AuditHead(last_id=last_id, last_mac=last_mac, count=count, time=now,
                     sig=_head_sig(keys.head, last_id, last_mac, count, now))


def ship_head(*, session: Session, keys: AuditKeys, store: ObjectStore) -> AuditHead:
    """Sign the current head and put it offsite (a dated copy, and the latest).

    Refuses (Conflict) when the chain no longer reaches the last shipped head: shipping a
    shorter head would launder a truncation, so the old head stays as the evidence.
    """
    head = current_head(session, keys)
    previous = latest_head(store)
    if previous is not None and previous.last_id > 0:
        mac = session.scalar(select(AuditEntry.mac).where(AuditEntry.id == previous.last_id))
        if mac != previous.last_mac:
            raise Conflict(f"the audit chain no longer reaches the head shipped at "
                           f"{_iso(previous.time)} (entry {previous.last_id}); not shipping: "
                           "run `tenantry audit verify`")
    data = head.model_dump_json().encode()
    store.put(f"{HEADS_PREFIX}{head.time:%Y/%m/%d/%H%M%S.%f}-{head.last_id}.json", data)
    store.put(HEAD_KEY, data)
    return head


def ship_head_if_due(runtime: Runtime, *, every: float = SHIP_EVERY) -> AuditHead | None:
    """Called by the worker's housekeeping loop; ships when the latest head is `every` old."""
    keys = keys_of(runtime)
    store = offsite_store(runtime)
    last = latest_head(store)
    if last is not None and (utcnow() - last.time).total_seconds() < every:
        return None
    with runtime.sessions() as session:
        return ship_head(session=session, keys=keys, store=store)


def shipped_heads(store: ObjectStore, *, now: dt.datetime | None = None) -> list[AuditHead]:
    """The latest pointer and the newest dated (write-once) copy, when there are any."""
    data = store.get(HEAD_KEY)
    pointer = None if data is None else AuditHead.model_validate_json(data)
    dated = newest_dated_head(store, now=now)
    heads = [] if pointer is None else [pointer]
    if dated is not None and dated != pointer:
        heads.append(dated)
    return heads


def latest_head(store: ObjectStore, *, now: dt.datetime | None = None) -> AuditHead | None:
    """The furthest head shipped: the latest pointer, or the newest dated copy.

    The pointer is the one rewritable key, so whoever holds the control plane's store key
    could put an older head there; the dated copies under Object Lock still tell the truth.
    """
    heads = shipped_heads(store, now=now)
    return max(heads, key=lambda h: h.last_id) if heads else None


def newest_dated_head(store: ObjectStore, *, now: dt.datetime | None = None,
                      days: int = DATED_LOOKBACK_DAYS) -> AuditHead | None:
    """The newest dated head, looked for day by day back from today (listing one day each)."""
    day = (now or utcnow()).date()
    for _ in range(days):
        keys = store.list(f"{HEADS_PREFIX}{day:%Y/%m/%d}/")
        if keys:
            data = store.get(keys[-1])  # HHMMSS.ffffff sorts in time order
            return None if data is None else AuditHead.model_validate_json(data)
        day -= dt.timedelta(days=1)
    return None


def require_auditor(principal: Principal) -> None:
    if not principal.is_provider:
        raise NotAllowed("only the provider may verify or ship the audit log")
    principal.require("admin")


# ---------------------------------------------------------------- verify

_COLUMNS = (AuditEntry.id, AuditEntry.time, AuditEntry.actor, AuditEntry.actor_id,
            AuditEntry.org, AuditEntry.source, AuditEntry.action, AuditEntry.target,
            AuditEntry.outcome, AuditEntry.ip, cast(AuditEntry.detail, Text).label("detail"),
            AuditEntry.prev_mac,
            AuditEntry.mac)


def _public_raw(row: Any) -> AuditEntryPublic:
    """An entry as read by verify (its detail still text), for the report."""
    try:
        detail = json.loads(row.detail) if row.detail else None
    except ValueError:
        detail = {"unparseable": row.detail[:200]}
    fields = dict(row._mapping, detail=detail if isinstance(detail, dict) else {"value": detail})
    return AuditEntryPublic.model_validate(fields)


def verify(*, engine: Engine, keys: AuditKeys, head: AuditHead | None,
           batch: int = 20_000) -> AuditVerifyReport:
    """Walk the whole chain in id order (streamed) and compare its end with `head`."""
    if head is not None and not hmac.compare_digest(
            head.sig, _head_sig(keys.head, head.last_id, head.last_mac, head.count, head.time)):
        return AuditVerifyReport(ok=False, checked=0, head=head, first_bad=AuditProblem(
            id=None, reason="the shipped head's signature is invalid"))
    key = keys.mac
    expected_id, prev, checked = 1, GENESIS, 0
    mac_at_head: str | None = None
    head_id = head.last_id if head is not None else -1
    new = hmac.new
    sha256 = hashlib.sha256

    def bad(row: Any, reason: str, entry_id: int | None = None) -> AuditVerifyReport:
        return AuditVerifyReport(ok=False, checked=checked, head=head, first_bad=AuditProblem(
            id=row[0] if entry_id is None else entry_id, reason=reason,
            entry=_public_raw(row) if row is not None else None))

    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch).execute(
            select(*_COLUMNS).order_by(AuditEntry.id))
        for row in result:
            entry_id = row[0]
            if entry_id != expected_id:
                missing = (f"entry {expected_id} is missing (deleted)" if entry_id > expected_id
                           else f"entry {entry_id} is out of order")
                return bad(row, missing, expected_id if entry_id > expected_id else None)
            if row[11] != prev:
                return bad(row, "its prev_mac is not the previous entry's MAC "
                                "(an entry was inserted, deleted or reordered)")
            body = _encode([entry_id, _iso(row[1]), row[2], row[3], row[4], row[5], row[6],
                            row[7], row[8], row[9]])
            body = f"{body[:-1]},{row[10] or 'null'}]"
            mac = new(key, prev.encode() + body.encode(), sha256).hexdigest()
            if not hmac.compare_digest(mac, row[12]):
                return bad(row, "its MAC does not match its content (modified)")
            if entry_id == head_id:
                mac_at_head = mac
            prev = mac
            expected_id += 1
            checked += 1
    if head is not None and head.last_id > 0:
        if head.last_id >= expected_id:
            return bad(None, f"entries {expected_id}..{head.last_id} are missing: the head "
                             f"shipped at {_iso(head.time)} ends at {head.last_id} "
                             "(the tail was truncated)", expected_id)
        if mac_at_head != head.last_mac:
            return bad(None, f"entry {head.last_id} differs from the head shipped at "
                             f"{_iso(head.time)} (the tail was rewritten)", head.last_id)
    return AuditVerifyReport(ok=True, checked=checked, first_bad=None, head=head)


def verify_with_store(*, engine: Engine, keys: AuditKeys,
                      store: ObjectStore) -> AuditVerifyReport:
    """Every shipped head must carry a valid signature; the chain must reach the furthest."""
    heads = shipped_heads(store)
    for head in heads:
        if not hmac.compare_digest(head.sig, _head_sig(keys.head, head.last_id, head.last_mac,
                                                       head.count, head.time)):
            return AuditVerifyReport(ok=False, checked=0, head=head, first_bad=AuditProblem(
                id=None, reason="the shipped head's signature is invalid"))
    return verify(engine=engine, keys=keys,
                  head=max(heads, key=lambda h: h.last_id) if heads else None)


def verify_runtime(runtime: Runtime) -> AuditVerifyReport:
    return verify_with_store(engine=runtime.engine, keys=keys_of(runtime),
                             store=offsite_store(runtime))
