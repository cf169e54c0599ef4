"""The steps of platform jobs: each writes desired state, then waits for the agent to report it.

Every step is idempotent: run twice (after a crash), it finds its write already made and
only waits again. Waiting compares the platform's `observed` document, reported by the
host agent, with the desired generation the step wrote.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy.orm import Session

from tenantry.core.events import emit
from tenantry.core.jobs import JobKind, Periodic, StepContext, StepFailed
from tenantry.core.runtime import Runtime
from tenantry.platforms import hosts
from tenantry.platforms.hosts import bump
from tenantry.platforms.models import Platform, Release
from tenantry.platforms.placement import allocate_ports, move_port, release_ports

WAIT_TIMEOUT = 180.0
POLL = 0.15


def _load(session: Session, ctx: StepContext) -> Platform:
    assert ctx.platform_id is not None
    platform = session.get(Platform, ctx.platform_id, with_for_update=True)
    if platform is None:
        raise StepFailed("the platform no longer exists")
    return platform


def _wait(ctx: StepContext, what: str, check: Callable[[dict[str, Any], dict[str, Any]], bool],
          timeout: float = WAIT_TIMEOUT) -> None:
    """Poll the observed state until `check(observed, runtime)` holds for the current gen."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        with ctx.runtime.sessions() as session:
            platform = session.get(Platform, ctx.platform_id)
            if platform is None:
                raise StepFailed("the platform no longer exists")
            observed, runtime = platform.observed or {}, platform.runtime
        current = int(observed.get("gen", 0)) >= int(runtime.get("gen", 0))
        if current and observed.get("conflicts"):
            _move_ports(ctx, [int(p) for p in observed["conflicts"]])
            continue
        if current and check(observed, runtime):
            return
        last_error = observed.get("error") or last_error
        if time.monotonic() > deadline:
            hint = f" (agent says: {last_error})" if last_error else ""
            raise StepFailed(f"timed out after {int(timeout)} s waiting for {what}{hint}")
        time.sleep(POLL)


def _move_ports(ctx: StepContext, taken: list[int]) -> None:
    """Another program took ports we handed out: give the platform new ones instead."""
    with ctx.runtime.sessions() as session:
        platform = _load(session, ctx)
        assert platform.host is not None
        rt = dict(platform.runtime)
        if int(rt["db"]["port"]) in taken:
            rt["db"] = {**rt["db"], "port": move_port(session, platform.host, platform.id,
                                                        int(rt["db"]["port"]), "db", taken)}
        slots = {}
        for name, slot in rt.get("slots", {}).items():
            new_ports = [move_port(session, platform.host, platform.id, int(port),
                                   f"slot-{name}", taken) if int(port) in taken else port
                         for port in slot["ports"]]
            slots[name] = {**slot, "ports": new_ports}
        rt["slots"] = slots
        platform.runtime = rt
        bump(session, platform)
        emit(session, "PORTS_MOVED", f"{platform.isv.name}/{platform.name}: ports "
             f"{', '.join(map(str, taken))} were taken by another program; moved",
             isv_id=platform.isv_id, platform_id=platform.id, host_id=platform.host_id,
             job_id=ctx.job_id)
        session.commit()


def _release_state(rid: str) -> Callable[[dict[str, Any], dict[str, Any]], bool]:
    def check(observed: dict[str, Any], _: dict[str, Any]) -> bool:
        state = observed.get("releases", {}).get(rid, "")
        if state.startswith("error"):
            raise StepFailed(f"building the release failed: {state}")
        return bool(state == "built")
    return check


def _migration_done(mid: str | None) -> Callable[[dict[str, Any], dict[str, Any]], bool]:
    def check(observed: dict[str, Any], _: dict[str, Any]) -> bool:
        if mid is None:
            return True
        state = observed.get("migrations", {}).get(mid, "")
        if state.startswith("failed"):
            raise StepFailed(f"the release command failed: {state[len('failed: '):]}")
        return bool(state == "ok")
    return check


def _slot_healthy(slot: str) -> Callable[[dict[str, Any], dict[str, Any]], bool]:
    def check(observed: dict[str, Any], _: dict[str, Any]) -> bool:
        info = observed.get("slots", {}).get(slot, {})
        if info.get("state") == "failed":
            raise StepFailed(f"the app processes did not start: {info.get('detail', '')}")
        return bool(info.get("healthy"))
    return check


def probe(ctx: StepContext, timeout: float = 60.0) -> None:
    """An HTTPS request to the platform's health path through the host's ingress."""
    with ctx.runtime.sessions() as session:
        platform = session.get(Platform, ctx.platform_id)
        assert platform is not None and platform.host is not None
        hostname, address = platform.runtime["hostname"], platform.host.address
        port, path = platform.host.ingress_port, platform.release.manifest["health_path"]
    verify = ssl.create_default_context(cadata=ctx.runtime.ca.cert_pem)
    deadline = time.monotonic() + timeout
    detail = ""
    with httpx.Client(verify=verify, timeout=5.0) as client:
        while time.monotonic() < deadline:
            try:
                resp = client.get(f"https://{address}:{port}{path}", headers={"Host": hostname},
                                  extensions={"sni_hostname": hostname})
                if resp.status_code == 200:
                    return
                detail = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                detail = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
    raise StepFailed(f"https://{hostname}:{port}{path} did not answer 200 ({detail})")


def _migration_for(session: Session, release_id: str, job_id: int) -> dict[str, Any] | None:
    release = session.get(Release, release_id)
    assert release is not None
    if not release.manifest.get("release_command"):
        return None
    return {"id": f"m{job_id}", "release_id": release_id}


# ---------------------------------------------------------------- create

def step_place(ctx: StepContext) -> None:
    with ctx.runtime.sessions() as session:
        platform = _load(session, ctx)
        rt = dict(platform.runtime)
        if rt.get("placed_by") == ctx.job_id:
            return
        hostname = f"{platform.name}.{platform.isv.name}.{ctx.runtime.settings.domain}"
        issued = ctx.runtime.ca.issue_server_cert([hostname])
        migration = _migration_for(session, platform.release_id, ctx.job_id)
        slot = dict(rt["slots"]["a"])
        slot["after_migration"] = migration["id"] if migration else None
        rt.update({
            "placed_by": ctx.job_id, "hostname": hostname,
            "cert": {"cert_pem": issued.cert_pem,
                     "key": ctx.runtime.secrets.encrypt(issued.key_pem, org=platform.isv_id),
                     "not_after": issued.not_after.isoformat()},
            "migrations": [migration] if migration else [],
            "slots": {"a": slot}, "route_slot": "a", "running": True,
        })
        platform.runtime = rt
        bump(session, platform)
        session.commit()


def _wait_database(ctx: StepContext) -> None:
    _wait(ctx, "the database", lambda o, _: _db_ready(o))


def _db_ready(observed: dict[str, Any]) -> bool:
    state = observed.get("database", "")
    if state.startswith("error"):
        raise StepFailed(f"the database could not be made: {state}")
    return bool(state == "ready")


def _current_release(ctx: StepContext) -> tuple[str, str | None]:
    with ctx.runtime.sessions() as session:
        platform = session.get(Platform, ctx.platform_id)
        assert platform is not None
        migrations = platform.runtime.get("migrations", [])
        mid = next((m["id"] for m in migrations if m["id"] == f"m{ctx.job_id}"), None)
        return platform.release_id, mid


def step_build(ctx: StepContext) -> None:
    rid = str(ctx.params.get("release_id") or _current_release(ctx)[0])
    _wait(ctx, "the release to be built", _release_state(rid))


def step_migrate(ctx: StepContext) -> None:
    _, mid = _current_release(ctx)
    _wait(ctx, "the release command", _migration_done(mid))


def step_start(ctx: StepContext) -> None:
    slot = _target_slot(ctx)
    _wait(ctx, f"the app processes of slot {slot} to pass their health check",
          _slot_healthy(slot))


def step_route(ctx: StepContext) -> None:
    _wait(ctx, "the ingress route", lambda o, r: o.get("route_slot") == r.get("route_slot"))


def step_health(ctx: StepContext) -> None:
    probe(ctx)


def _finish(ctx: StepContext, state: str, kind: str, message: str,
            mutate: Callable[[Platform], None] | None = None) -> None:
    with ctx.runtime.sessions() as session:
        platform = _load(session, ctx)
        platform.state = state
        platform.error = None
        if mutate:
            mutate(platform)
        emit(session, kind, message.format(p=f"{platform.isv.name}/{platform.name}"),
             isv_id=platform.isv_id, platform_id=platform.id, host_id=platform.host_id,
             job_id=ctx.job_id)
        session.commit()


def _fail(ctx: StepContext, reason: str, *, state: str = "failed") -> None:
    with ctx.runtime.sessions() as session:
        platform = session.get(Platform, ctx.platform_id)
        if platform is None:
            return
        platform.state = state
        platform.error = reason
        emit(session, "PLATFORM_FAILED", f"{platform.isv.name}/{platform.name}: {reason}",
             isv_id=platform.isv_id, platform_id=platform.id, host_id=platform.host_id,
             job_id=ctx.job_id)
        session.commit()


CREATE = JobKind(
    name="create",
    steps=(("place", step_place), ("database", _wait_database), ("build", step_build),
           ("migrate", step_migrate), ("start", step_start), ("route", step_route),
           ("health", step_health)),
    on_success=lambda ctx: _finish(ctx, "ready", "DEPLOYED", "platform {p} is ready"),
    on_failure=lambda ctx, reason: _fail(ctx, reason),
)


# ---------------------------------------------------------------- upgrade and rollback

def _target_slot(ctx: StepContext) -> str:
    with ctx.runtime.sessions() as session:
        platform = session.get(Platform, ctx.platform_id)
        assert platform is not None
        upgrade = platform.runtime.get("upgrade")
        if upgrade and upgrade.get("job") == ctx.job_id:
            return str(upgrade["to_slot"])
        return str(platform.runtime.get("route_slot") or "a")


def step_prepare(ctx: StepContext) -> None:
    with ctx.runtime.sessions() as session:
        platform = _load(session, ctx)
        rt = dict(platform.runtime)
        if rt.get("upgrade", {}).get("job") == ctx.job_id:
            return
        new_release = str(ctx.params["release_id"])
        current = str(rt["route_slot"])
        idle = "b" if current == "a" else "a"
        release_ports(session, platform.id, f"slot-{idle}")
        session.flush()
        assert platform.host is not None
        ports = allocate_ports(session, platform.host, platform.id, f"slot-{idle}",
                               len(rt["slots"][current]["ports"]))
        migration = (_migration_for(session, new_release, ctx.job_id)
                     if ctx.params.get("migrate") else None)
        rt["slots"] = {**rt["slots"], idle: {
            "release_id": new_release, "ports": ports, "running": True,
            "after_migration": migration["id"] if migration else None}}
        rt["releases"] = sorted({*rt.get("releases", []), new_release})
        rt["migrations"] = [*rt.get("migrations", []), *([migration] if migration else [])]
        rt["upgrade"] = {"job": ctx.job_id, "from_slot": current, "to_slot": idle,
                         "from_release": platform.release_id, "to_release": new_release}
        platform.runtime = rt
        bump(session, platform)
        session.commit()


def step_switch(ctx: StepContext) -> None:
    with ctx.runtime.sessions() as session:
        platform = _load(session, ctx)
        rt = dict(platform.runtime)
        target = rt["upgrade"]["to_slot"]
        if rt["route_slot"] != target:
            rt["route_slot"] = target
            platform.runtime = rt
            bump(session, platform)
        session.commit()
    step_route(ctx)


def step_retire(ctx: StepContext) -> None:
    with ctx.runtime.sessions() as session:
        platform = _load(session, ctx)
        rt = dict(platform.runtime)
        upgrade = rt["upgrade"]
        old = upgrade["from_slot"]
        if old in rt["slots"]:
            rt["slots"] = {k: v for k, v in rt["slots"].items() if k != old}
            rt["releases"] = [upgrade["to_release"]]
            platform.runtime = rt
            release_ports(session, platform.id, f"slot-{old}")
            bump(session, platform)
        session.commit()
    _wait(ctx, "the old processes to stop", lambda o, _: old not in o.get("slots", {}))


def _upgrade_succeeded(ctx: StepContext, kind: str) -> None:
    def mutate(platform: Platform) -> None:
        upgrade = platform.runtime["upgrade"]
        platform.previous_release_id = upgrade["from_release"]
        platform.release_id = upgrade["to_release"]
        platform.runtime = {k: v for k, v in platform.runtime.items() if k != "upgrade"}

    verb = "upgraded" if kind == "UPGRADED" else "rolled back"
    _finish(ctx, "ready", kind, "platform {p} " + verb, mutate)


def _upgrade_failed(ctx: StepContext, reason: str) -> None:
    """Put the previous release back in front of the users, then record why."""
    with ctx.runtime.sessions() as session:
        platform = _load(session, ctx)
        rt = dict(platform.runtime)
        upgrade = rt.get("upgrade")
        if upgrade and upgrade.get("job") == ctx.job_id:
            new = upgrade["to_slot"]
            rt["route_slot"] = upgrade["from_slot"]
            rt["slots"] = {k: v for k, v in rt["slots"].items() if k != new}
            rt["releases"] = [upgrade["from_release"]]
            rt = {k: v for k, v in rt.items() if k != "upgrade"}
            platform.runtime = rt
            release_ports(session, platform.id, f"slot-{new}")
            bump(session, platform)
        platform.state = "ready"
        platform.error = f"upgrade failed and was rolled back: {reason}"
        emit(session, "UPGRADE_FAILED", f"{platform.isv.name}/{platform.name}: {reason}",
             isv_id=platform.isv_id, platform_id=platform.id, host_id=platform.host_id,
             job_id=ctx.job_id)
        emit(session, "ROLLED_BACK", f"{platform.isv.name}/{platform.name} is back on "
             f"{platform.release.app.name}@{platform.release.version}",
             isv_id=platform.isv_id, platform_id=platform.id, host_id=platform.host_id,
             job_id=ctx.job_id)
        session.commit()
    _wait(ctx, "the previous release to serve again", lambda o, r: (
        o.get("route_slot") == r.get("route_slot")
        and bool(o.get("slots", {}).get(r.get("route_slot"), {}).get("healthy"))), timeout=120)


_UPGRADE_STEPS = (("prepare", step_prepare), ("build", step_build), ("migrate", step_migrate),
                  ("start", step_start), ("switch", step_switch), ("health", step_health),
                  ("retire", step_retire))

UPGRADE = JobKind(name="upgrade", steps=_UPGRADE_STEPS,
                  on_success=lambda ctx: _upgrade_succeeded(ctx, "UPGRADED"),
                  on_failure=_upgrade_failed)
ROLLBACK = JobKind(name="rollback", steps=_UPGRADE_STEPS,
                   on_success=lambda ctx: _upgrade_succeeded(ctx, "ROLLED_BACK"),
                   on_failure=_upgrade_failed)


# ---------------------------------------------------------------- stop, start, destroy

def _set_running(ctx: StepContext, running: bool) -> None:
    with ctx.runtime.sessions() as session:
        platform = _load(session, ctx)
        if platform.runtime.get("running") != running:
            platform.runtime = {**platform.runtime, "running": running}
            bump(session, platform)
        session.commit()


def step_stop(ctx: StepContext) -> None:
    _set_running(ctx, False)
    _wait(ctx, "the processes to stop", lambda o, _: o.get("database") == "stopped" and not any(
        s.get("state") == "running" for s in o.get("slots", {}).values()))


def step_start_all(ctx: StepContext) -> None:
    _set_running(ctx, True)
    _wait_database(ctx)
    step_start(ctx)
    step_route(ctx)


STOP = JobKind(
    name="stop", steps=(("stop", step_stop),),
    on_success=lambda ctx: _finish(ctx, "stopped", "STOPPED", "platform {p} stopped"),
    on_failure=lambda ctx, reason: _fail(ctx, reason))
START = JobKind(
    name="start", steps=(("start", step_start_all), ("health", step_health)),
    on_success=lambda ctx: _finish(ctx, "ready", "STARTED", "platform {p} started"),
    on_failure=lambda ctx, reason: _fail(ctx, reason))


def step_teardown(ctx: StepContext) -> None:
    with ctx.runtime.sessions() as session:
        platform = _load(session, ctx)
        if platform.host_id is None:
            return
        if not platform.runtime.get("absent"):
            platform.runtime = {**platform.runtime, "absent": True, "running": False,
                                "route_slot": None}
            bump(session, platform)
        session.commit()
    _wait(ctx, "the agent to remove the platform", lambda o, _: bool(o.get("absent")))


def step_forget(ctx: StepContext) -> None:
    with ctx.runtime.sessions() as session:
        platform = session.get(Platform, ctx.platform_id)
        if platform is None:
            return
        emit(session, "DESTROYED", f"platform {platform.isv.name}/{platform.name} destroyed",
             isv_id=platform.isv_id, platform_id=platform.id, host_id=platform.host_id,
             job_id=ctx.job_id)
        session.delete(platform)
        session.commit()


DESTROY = JobKind(name="destroy", steps=(("teardown", step_teardown), ("forget", step_forget)),
                  on_failure=lambda ctx, reason: _fail(ctx, reason))



def mark_offline_hosts(runtime: Runtime) -> None:
    with runtime.sessions() as session:
        hosts.mark_offline_hosts(session=session)


KINDS = (CREATE, UPGRADE, ROLLBACK, STOP, START, DESTROY)
PERIODIC = (Periodic("mark hosts offline", mark_offline_hosts),)
