"""The host contract: documents round-trip, secrets never show, a typo fails at the edge."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, SecretStr, ValidationError
from sqlalchemy import String, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tenantry.agent import main as agent_main
from tenantry.agent.client import ControlPlaneClient, Credentials
from tenantry.agent.main import Agent, AgentOptions, describe_invalid
from tenantry.agent.services import ProgramSpec
from tenantry.agent.testing import FakeServiceManager
from tenantry.api import errors
from tenantry.api.deps import get_runtime, get_session
from tenantry.core.db import PydanticJSON
from tenantry.platforms import agent_api, hosts
from tenantry.platforms.contract import (
    WIRE,
    DesiredHost,
    DesiredState,
    HostReport,
    PlatformReport,
)
from tenantry.platforms.models import Host

PASSWORD = "s3cret-db-pw"  # noqa: S105 - a needle to look for
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nS3CRETKEYBODY\n-----END PRIVATE KEY-----\n"
CIPHER = "s3cret-repo-cipher"  # noqa: S105
FILES_PASS = "s3cret-files-pass"  # noqa: S105
S3_SECRET = "s3cret-store-key"  # noqa: S105
MANIFEST = {"name": "bodyshop", "version": "1.0.0", "processes": {"web": ["python", "-m", "x"]},
            "release_command": ["python", "-m", "x.migrate"], "health_path": "/health",
            "requirements": None, "wheels": None, "smoke_command": None,
            "restart_after": None}

# What the control plane sent before the contract was typed, key for key.
WIRE_DOC: dict[str, Any] = {
    "host": {"id": "h1", "name": "local", "ingress_port": 8443, "address": "127.0.0.1"},
    "generation": 7,
    "platforms": [{
        "id": "p1", "isv": "bms", "name": "lbh", "size": "s", "gen": 3, "running": True,
        "absent": False, "tenants": ["lbh"],
        "database": {"port": 21000, "role": "app", "dbname": "app", "password": PASSWORD},
        "releases": [{"id": "r1", "digest": "sha256:" + "ab" * 32, "app": "bodyshop",
                      "version": "1.0.0", "manifest": MANIFEST}],
        "migrations": [{"id": "m7", "release_id": "r1"}],
        "slots": {"a": {"release_id": "r1", "ports": [21001], "running": True,
                        "after_migration": "m7"}},
        "route": {"hostname": "lbh.bms.example.test", "slot": "a",
                  "cert_pem": "-----BEGIN CERTIFICATE-----\n...", "key_pem": KEY_PEM},
        "backup": {"repo": {"type": "s3", "path": "/tn/bms/p1", "bucket": "backups",
                            "endpoint": "localhost:9443", "region": "us-east-1",
                            "key_id": "AKIA1", "ca_pem": None},
                   "cipher_pass": CIPHER, "secret_key": S3_SECRET, "archive_timeout": 10,
                   "spool_max_mb": 512, "files_pass": FILES_PASS,
                   "tasks": [{"id": "b12", "type": "full", "labels": []}],
                   "restore": {"id": "r13", "target": 1790000005.25, "label": None,
                               "immediate": False, "source_stanza": None, "source": None},
                   "drill": {"id": "d14", "phase": "load", "acked": []}},
    }],
}

# What placement and the create job stored in platforms.runtime before the rename.
LEGACY_STATE: dict[str, Any] = {
    "gen": 4, "db": {"port": 21000, "role": "app", "dbname": "app"}, "releases": ["r1"],
    "slots": {"a": {"release_id": "r1", "ports": [21001], "running": True,
                    "after_migration": "m7"}},
    "route_slot": "a", "migrations": [{"id": "m7", "release_id": "r1"}], "running": True,
    "absent": False, "placed_by": 12, "hostname": "lbh.bms.example.test",
    "cert": {"cert_pem": "-----BEGIN CERTIFICATE-----\n...", "key": "v2:k1:gAAAA",
             "not_after": "2027-02-28T19:00:00.123456+00:00"},
    "upgrade": {"job": 13, "from_slot": "a", "to_slot": "b", "from_release": "r1",
                "to_release": "r2"},
}

REPORT: dict[str, Any] = {
    "platforms": {"p1": {
        "gen": 3, "database": "ready", "conflicts": [], "releases": {"r1": "built"},
        "migrations": {"m7": "ok"},
        "slots": {"a": {"state": "running", "healthy": True, "detail": ""}},
        "route_slot": "a", "absent": False, "error": None,
        "backup": {"stanza": "ready", "tasks": {"b12": "ok: 20261201-101500F"},
                   "restores": {"r13": "ok"},
                   "backups": [{"label": "20261201-101500F", "type": "full",
                                "started_at": 1790000000.0, "finished_at": 1790000003.5,
                                "size": 31000000, "stored": 4000000,
                                "wal_start": "000000010000000000000003",
                                "wal_stop": "000000010000000000000004"}],
                   "snapshots": [{"id": "81f3273a" + "0" * 56, "time": 1790000004.0,
                                  "label": "20261201-101500F", "files": 2, "size": 20008}],
                   "archived_at": 1790000010.0, "archive_error": None,
                   "drill": {"id": "d14", "phase": "load", "acked": 120,
                             "first_acked_at": 1790000011.0, "last_acked_at": 1790000013.0,
                             "destroyed_at": None, "lost": None, "last_kept_at": None,
                             "error": None, "acked_ranges": []}}}},
    "ingress_error": None, "busy_ports": [20005], "agent_time": 1790000000.5,
    "firewall": {"table": "inet tenantry", "tcp_ports": [22, 8443], "in_place": True,
                 "repairs": 0, "error": None},
    "monitoring": {"agent": "10.0.0.7:41002", "node": "10.0.0.7:41001"},
    "disk": {"path": "/var/lib/tenantry/agent", "total_bytes": 107374182400,
             "free_bytes": 53687091200, "reserve_bytes": 1073741824, "low": False,
             "detail": None},
    "desired_error": None,
    "process_exits": [{"program": "p1-a-web-0", "how": "terminated by SIGKILL",
                       "at": 1790000009.5}],
}


# ---------------------------------------------------------------- round trips


def test_the_wire_document_round_trips_with_its_secrets() -> None:
    desired = DesiredHost.model_validate(WIRE_DOC)
    assert desired.platforms[0].database.password.get_secret_value() == PASSWORD
    sent = json.loads(desired.model_dump_json(context=WIRE))
    assert sent == WIRE_DOC, "the wire format is the one the agent always read"
    assert desired.model_dump(mode="json", context=WIRE) == WIRE_DOC
    assert DesiredHost.model_validate(sent) == desired


def test_legacy_stored_state_loads_and_round_trips() -> None:
    state = DesiredState.model_validate(LEGACY_STATE)
    assert state.upgrade is not None and state.upgrade.to_slot == "b"
    assert DesiredState.model_validate(state.model_dump(mode="json")) == state
    assert DesiredState.model_validate({}) == DesiredState()
    assert DesiredState.model_validate({}).db is None, "not placed yet"


def test_the_report_round_trips() -> None:
    report = HostReport.model_validate(REPORT)
    assert report.platforms["p1"].slots["a"].healthy
    assert json.loads(report.model_dump_json()) == REPORT
    assert report.host_part().busy_ports == [20005]
    assert PlatformReport.model_validate({"gen": 2, "error": "boom"}).database == ""


# ---------------------------------------------------------------- secrets


def _shown(model: BaseModel) -> list[str]:
    return [repr(model), str(model), model.model_dump_json(), json.dumps(
        model.model_dump(mode="json")), repr(model.model_dump()), f"{model}", f"{model!r}"]


def test_secrets_never_show_in_repr_str_or_a_plain_dump(
        caplog: pytest.LogCaptureFixture) -> None:
    desired = DesiredHost.model_validate(WIRE_DOC)
    platform = desired.platforms[0]
    assert platform.route is not None
    models: list[BaseModel] = [desired, platform, platform.database, platform.route]
    log = logging.getLogger("tenantry.test")
    with caplog.at_level(logging.DEBUG):
        for model in models:
            log.info("desired: %s %r", model, model)
            log.info("fields: %s", vars(model))
    for text in [caplog.text, *(t for m in models for t in _shown(m))]:
        assert PASSWORD not in text and "S3CRETKEYBODY" not in text
        assert CIPHER not in text and S3_SECRET not in text and FILES_PASS not in text
    assert "**********" in repr(platform.database)


def test_a_validation_error_is_described_without_values() -> None:
    bad = json.loads(json.dumps(WIRE_DOC))
    bad["platforms"][0]["database"]["pasword"] = bad["platforms"][0]["database"].pop("password")
    with pytest.raises(ValidationError) as caught:
        DesiredHost.model_validate(bad)
    text = describe_invalid(caught.value)
    assert "platforms.0.database.password: Field required" in text
    assert "platforms.0.database.pasword: Extra inputs are not permitted" in text
    assert PASSWORD not in text


# ---------------------------------------------------------------- unknown fields


def _with(doc: dict[str, Any], path: list[str | int], key: str, value: object) -> dict[str, Any]:
    copy = json.loads(json.dumps(doc))
    node: Any = copy
    for step in path:
        node = node[step]
    node[key] = value
    return copy


@pytest.mark.parametrize(("model", "doc", "path", "key", "where"), [
    (DesiredHost, WIRE_DOC, [], "generaton", "generaton"),
    (DesiredHost, WIRE_DOC, ["platforms", 0], "runing", "platforms.0.runing"),
    (DesiredHost, WIRE_DOC, ["platforms", 0, "slots", "a"], "port", "platforms.0.slots.a.port"),
    (DesiredHost, WIRE_DOC, ["platforms", 0, "route"], "key", "platforms.0.route.key"),
    (HostReport, REPORT, [], "busy_port", "busy_port"),
    (HostReport, REPORT, ["platforms", "p1", "slots", "a"], "helthy",
     "platforms.p1.slots.a.helthy"),
    (HostReport, REPORT, ["firewall"], "inplace", "firewall.inplace"),
    (DesiredState, LEGACY_STATE, ["db"], "password", "db.password"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_an_unknown_field_is_refused(model: type[BaseModel], doc: dict[str, Any],
                                     path: list[str | int], key: str, where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(_with(doc, path, key, 1))
    assert where in describe_invalid(caught.value)


def test_a_slot_is_a_or_b() -> None:
    with pytest.raises(ValidationError):
        DesiredHost.model_validate(_with(WIRE_DOC, ["platforms", 0, "slots"], "c",
                                         WIRE_DOC["platforms"][0]["slots"]["a"]))


# ---------------------------------------------------------------- the column type


class _Base(DeclarativeBase):
    pass


class _Row(_Base):
    __tablename__ = "rows"
    id: Mapped[str] = mapped_column(String(10), primary_key=True)
    desired: Mapped[DesiredState] = mapped_column(PydanticJSON(DesiredState),
                                                  default=lambda: DesiredState())
    observed: Mapped[PlatformReport | None] = mapped_column(PydanticJSON(PlatformReport),
                                                            nullable=False, default=lambda: None)


def test_the_column_stores_json_reads_models_and_saves_only_assignments() -> None:
    engine = create_engine("sqlite://")
    _Base.metadata.create_all(engine)
    updates: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cur, stmt, *a: updates.append(stmt) if "UPDATE" in stmt else None)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO rows VALUES ('old', '{}', 'null')")
    with Session(engine) as session:
        session.add(_Row(id="new"))
        session.commit()
        old, new = session.get(_Row, "old"), session.get(_Row, "new")
        assert old is not None and new is not None
        assert old.desired == new.desired == DesiredState() and old.observed is None
        assert json.loads(session.connection().exec_driver_sql(
            "SELECT desired FROM rows WHERE id = 'new'").scalar_one())["gen"] == 0

        old.desired.gen = 5  # in place: the ORM cannot see it (the trap the docstring names)
        session.commit()
        assert updates == []

        want = DesiredState.model_validate(LEGACY_STATE).model_copy(deep=True)
        want.slots["a"].ports = [21009]
        new.desired = want
        new.observed = PlatformReport(gen=4, database="ready")
        session.commit()
        assert len(updates) == 1
    with Session(engine) as session:
        row = session.get(_Row, "new")
        assert row is not None and row.desired.slots["a"].ports == [21009]
        assert row.observed == PlatformReport(gen=4, database="ready")


# ---------------------------------------------------------------- the agent API


@pytest.fixture
def agent_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, list[HostReport]]]:
    """Just the agent routes, with the calling host and the store replaced."""
    host = Host(id="h1", name="local", address="127.0.0.1", ingress_port=8443, generation=7)
    recorded: list[HostReport] = []

    def record(*, session: object, host: Host, report: HostReport, pace: int) -> None:
        recorded.append(report)

    @contextlib.contextmanager
    def sessions() -> Iterator[SimpleNamespace]:
        yield SimpleNamespace(get=lambda model, key, **kw: host, connection=lambda **kw: None)

    monkeypatch.setattr(hosts, "record_report", record)
    monkeypatch.setattr(hosts, "desired_state",
                        lambda **kw: DesiredHost.model_validate(WIRE_DOC))
    monkeypatch.setattr(agent_api, "_generations", lambda runtime, ids: dict.fromkeys(ids, 7))
    monkeypatch.setattr(hosts, "count_hosts", lambda session: 1)  # the heartbeat's pace
    app = FastAPI()
    errors.install(app)
    app.include_router(agent_api.router, prefix="/api/v1")
    app.dependency_overrides[agent_api.get_host_id] = lambda: host.id
    app.dependency_overrides[get_session] = lambda: SimpleNamespace(close=lambda: None)
    app.dependency_overrides[get_runtime] = lambda: SimpleNamespace(sessions=sessions,
                                                                    secrets=None)
    with TestClient(app) as client:
        yield client, recorded


def test_the_agent_receives_the_real_secrets(
        agent_app: tuple[TestClient, list[HostReport]]) -> None:
    client, _ = agent_app
    got = client.get("/api/v1/agent/desired")
    assert got.status_code == 200 and got.json() == WIRE_DOC


def test_an_agent_holding_the_current_generation_gets_304_and_nothing_is_built(
        agent_app: tuple[TestClient, list[HostReport]], monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle host's long poll ends in 304: no document built, no secret decrypted."""
    client, _ = agent_app
    built: list[int] = []

    def build(**_: object) -> DesiredHost:
        built.append(1)
        return DesiredHost.model_validate(WIRE_DOC)

    monkeypatch.setattr(hosts, "desired_state", build)
    same = client.get("/api/v1/agent/desired", params={"generation": 7, "wait": 0.3},
                      headers={"If-None-Match": '"7"'})
    assert (same.status_code, same.content, built) == (304, b"", [])
    assert same.headers["ETag"] == '"7"'
    # an agent behind (generation 6) gets the document at once, wait or not
    behind = client.get("/api/v1/agent/desired", params={"generation": 6, "wait": 30},
                        headers={"If-None-Match": '"6"'})
    assert behind.status_code == 200 and built == [1]
    assert behind.headers["ETag"] == f'"{WIRE_DOC["generation"]}"'
    # and one that does not send If-None-Match gets it as before
    assert client.get("/api/v1/agent/desired", params={"generation": 7}).status_code == 200


def test_a_report_is_validated_as_it_arrives(
        agent_app: tuple[TestClient, list[HostReport]]) -> None:
    client, recorded = agent_app
    assert client.post("/api/v1/agent/report", json=REPORT).status_code == 204
    assert recorded == [HostReport.model_validate(REPORT)]
    bad = _with(REPORT, ["platforms", "p1", "slots", "a"], "healthy", "very")
    answer = client.post("/api/v1/agent/report", json=bad)
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "platforms.p1.slots.a.healthy"
    typo = client.post("/api/v1/agent/report", json=_with(REPORT, [], "busyports", []))
    assert typo.status_code == 422 and typo.json()["error"]["field"] == "busyports"
    assert len(recorded) == 1


# ---------------------------------------------------------------- the agent


def test_the_agent_refuses_an_invalid_desired_state_and_keeps_its_services(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    bad = json.loads(json.dumps(WIRE_DOC))
    bad["platforms"][0]["database"]["pasword"] = bad["platforms"][0]["database"].pop("password")
    asked: list[str] = []
    reports: list[dict[str, Any]] = []

    def control_plane(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/api/v1/agent/desired":
            return httpx.Response(200, json=bad)
        if request.url.path == "/api/v1/agent/report":
            reports.append(json.loads(request.content))
        return httpx.Response(204)

    transport = httpx.MockTransport(control_plane)
    monkeypatch.setattr(agent_main, "ControlPlaneClient",
                        lambda creds: ControlPlaneClient(creds, transport=transport))
    creds = Credentials(server="http://cp.test", host_id="h1", token="tna-x")  # noqa: S106
    creds.save(tmp_path / "agent.json")
    services = FakeServiceManager()
    services.ensure_started()
    services.put(ProgramSpec(name="p1-db", command=("postgres",), environment={}))
    services.calls.clear()
    agent = Agent(AgentOptions(data_dir=tmp_path), services=services)
    thread = threading.Thread(target=agent.run)
    with caplog.at_level(logging.INFO, "tenantry.agent"):
        thread.start()
        deadline = time.monotonic() + 10
        while asked.count("/api/v1/agent/desired") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = thread.is_alive()
        agent.stop()
        thread.join(timeout=20)
    assert alive, "the agent keeps running"
    assert asked.count("/api/v1/agent/desired") >= 2, "and asks again"
    # the control plane is told why (its jobs fail with that, not after a timeout), and
    # nothing about the platforms changes
    assert reports and all(r["platforms"] == {} for r in reports)
    assert "platforms.0.database.pasword: Extra inputs are not permitted" in \
        reports[-1]["desired_error"]
    assert PASSWORD not in json.dumps(reports)
    assert "refused the desired state" in caplog.text
    assert "platforms.0.database.pasword: Extra inputs are not permitted" in caplog.text
    assert PASSWORD not in caplog.text
    assert services.calls == [("ensure_started", "")], "nothing changed on the host"
    assert services.states == {"p1-db": "RUNNING"}


def test_the_agent_client_reads_the_wire_document(tmp_path: Path) -> None:
    body = DesiredHost.model_validate(WIRE_DOC).model_dump_json(context=WIRE)
    sent: list[bytes] = []

    def control_plane(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            sent.append(request.content)
            return httpx.Response(204)
        if request.headers.get("If-None-Match") == '"7"':
            return httpx.Response(304)
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    creds = Credentials(server="http://cp.test", host_id="h1", token="t")  # noqa: S106
    client = ControlPlaneClient(creds, transport=httpx.MockTransport(control_plane))
    desired = client.desired(generation=0, wait=0)
    assert client.desired_if_changed(held=desired.generation, wait=0) is None
    assert desired.platforms[0].database.password == SecretStr(PASSWORD)
    assert desired.platforms[0].route is not None
    assert desired.platforms[0].route.key_pem.get_secret_value() == KEY_PEM
    client.report(HostReport.model_validate(REPORT))
    assert json.loads(sent[0]) == REPORT
