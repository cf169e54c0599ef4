"""The host's exporters: ports kept across restarts, specs and their plan, and the real
postgres_exporter 0.11 against real clusters (how it spells `server`, what a stopped
cluster's series do) beside the agent's `tenantry_database_expected`."""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tenantry.agent import converge, exporters, monitor, pgcluster, unixusers
from tenantry.agent.dbusage import free_bytes, memory_budget
from tenantry.agent.main import Agent, AgentOptions
from tenantry.agent.monitor import HostMonitoring
from tenantry.agent.services import ProgramSpec, ProgramStatus
from tenantry.agent.supervisord import SupervisordManager
from tenantry.agent.testing import FakeServiceManager
from tenantry.core.errors import InvalidInput
from tenantry.monitoring.catalog import CHECKS
from tenantry.platforms.contract import DesiredHost, DesiredPlatform, HostObserved, HostReport
from tests.agent.conftest import wait_for
from tests.agent.test_converge import desired

PG_SERIES = re.compile(r'^pg_settings_max_connections\{server="([^"]+)"\} (\S+)$', re.M)


def host(*platforms: DesiredPlatform, address: str = "10.0.0.7") -> DesiredHost:
    return DesiredHost.model_validate({
        "host": {"id": "h1", "name": "h1", "ingress_port": 8443, "address": address},
        "generation": 1, "platforms": [p.model_dump(mode="json", context={
            "reveal_secrets": True}) for p in platforms]})


def running(*names: str, state: str = "RUNNING") -> dict[str, ProgramStatus]:
    return {n: ProgramStatus(n, "d", state, 10) for n in names}


# ---------------------------------------------------------------- ports


def test_ports_are_chosen_once_kept_and_free_of_the_platform_range(tmp_path: Path) -> None:
    path = tmp_path / exporters.PORTS_FILE
    avoid = set(range(20000, 30000))
    first = exporters.load_or_choose_ports(path, "127.0.0.1", avoid=avoid)
    assert len({first.node, first.agent, first.postgres}) == 3
    assert not {first.node, first.agent, first.postgres} & avoid
    assert json.loads(path.read_text()) == {"agent": first.agent, "node": first.node,
                                            "postgres": first.postgres}
    assert path.stat().st_mode & 0o077 == 0
    assert exporters.load_or_choose_ports(path, "127.0.0.1") == first, "a restart keeps them"
    moved = first.with_new("postgres", "127.0.0.1")
    assert moved.postgres not in (first.node, first.agent, first.postgres)
    assert (moved.node, moved.agent) == (first.node, first.agent)


@pytest.mark.parametrize("content", ["", "{", '{"node": 1}', '{"node": 0, "agent": 1, '
                                     '"postgres": 2}', '["x"]'])
def test_an_unreadable_ports_file_is_replaced(tmp_path: Path, content: str) -> None:
    path = tmp_path / exporters.PORTS_FILE
    path.write_text(content)
    ports = exporters.load_or_choose_ports(path, "127.0.0.1")
    assert exporters.MonitoringPorts.load(path) == ports


def test_plan_mode_does_not_write_the_ports_file(tmp_path: Path) -> None:
    exporters.load_or_choose_ports(tmp_path / "m.json", "127.0.0.1", save=False)
    assert not (tmp_path / "m.json").exists()


def test_addresses() -> None:
    assert exporters.address("127.0.0.1", 9) == "127.0.0.1:9"
    assert exporters.address("::1", 9) == "[::1]:9"


# ---------------------------------------------------------------- DSNs and specs


def test_dsn_and_the_server_label_postgres_exporter_gives_it() -> None:
    run = Path("/srv/tnt-ab12cd34/p1")
    assert exporters.cluster_dsn(run, 21000) == (
        "postgresql://postgres@:21000/postgres?host=/srv/tnt-ab12cd34/p1&sslmode=disable")
    assert exporters.server_label(run, 21000) == "/srv/tnt-ab12cd34/p1:21000"


@pytest.mark.parametrize("bad", ["/srv/a,b", "/srv/a b", "/srv/a&b", "relative", "/srv/é"])
def test_socket_dirs_that_would_break_the_dsn_list_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        exporters.cluster_dsn(Path(bad), 5432)


def _specs(tmp_path: Path, *platforms: DesiredPlatform) -> dict[str, Any]:
    paths = converge.HostPaths(tmp_path)
    ports = exporters.MonitoringPorts(node=41001, agent=41002, postgres=41003)
    return {s.name: s for s in exporters.wanted(paths, ports, host="127.0.0.1",
                                                clusters=list(platforms))}


def test_node_exporter_always_postgres_exporter_only_with_clusters(tmp_path: Path) -> None:
    assert set(_specs(tmp_path)) == {"node-exporter"}
    node = _specs(tmp_path)["node-exporter"]
    assert node.command[1:] == ("--web.listen-address=127.0.0.1:41001",)
    p1, p2 = desired(id="p1"), platform("p2", "dlg", 21010)
    pg = _specs(tmp_path, p1, p2)["postgres-exporter"]
    assert pg.command[1:] == ("--web.listen-address=127.0.0.1:41003",
                              "--no-collector.bgwriter", "--no-collector.database",
                              "--disable-default-metrics", "--disable-settings-metrics",
                              f"--extend.query-path={exporters.stack.POSTGRES_QUERIES}")
    assert exporters.stack.POSTGRES_QUERIES.is_file()
    sockets = converge.HostPaths(tmp_path).sockets
    assert pg.environment["DATA_SOURCE_NAME"] == ",".join(
        f"postgresql://postgres@:{port}/postgres?host={sockets}/{pid}&sslmode=disable"
        for pid, port in (("p1", 21000), ("p2", 21010)))
    assert pg.user is None, "root: pg_ident maps it to the superuser"


def test_ipv6_listen_address(tmp_path: Path) -> None:
    ports = exporters.MonitoringPorts(node=1, agent=2, postgres=3)
    spec = exporters.wanted(converge.HostPaths(tmp_path), ports, host="::1", clusters=[])[0]
    assert spec.command[1] == "--web.listen-address=[::1]:1"


def test_only_running_clusters_of_running_platforms_go_to_the_exporter() -> None:
    ps = [desired(id="p3"), desired(id="p1"), desired(id="p2", running=False),
          desired(id="p4", absent=True), desired(id="p5")]
    programs = {**running("p1-db", "p2-db", "p3-db", "p4-db"), **running("p5-db",
                                                                         state="FATAL")}
    assert [p.id for p in exporters.running_clusters(ps, programs)] == ["p1", "p3"]


def test_plan_puts_only_what_changed_and_removes_what_is_not_wanted(tmp_path: Path) -> None:
    fake = FakeServiceManager()
    fake.ensure_started()
    specs = list(_specs(tmp_path, desired(id="p1")).values())
    actions = exporters.plan(specs, fake.observe(), fake)
    assert [a.description for a in actions] == ["run node-exporter", "run postgres-exporter"]
    for action in actions:
        action.run()
    assert exporters.plan(specs, fake.observe(), fake) == [], "unchanged: nothing to do"
    fake.states["node-exporter"] = "FATAL"
    assert exporters.plan(specs, fake.observe(), fake) == [], "FATAL stays FATAL"
    fake.states["node-exporter"] = "EXITED"
    assert [a.description for a in exporters.plan(specs, fake.observe(), fake)] == [
        "run node-exporter"]
    fake.states["node-exporter"] = "RUNNING"
    changed = list(_specs(tmp_path, desired(id="p1"), desired(id="p2")).values())
    assert [a.description for a in exporters.plan(changed, fake.observe(), fake)] == [
        "run postgres-exporter"], "a new DSN list: one restart"
    assert [a.description for a in exporters.plan(specs[:1], fake.observe(), fake)] == [
        "remove postgres-exporter"]
    hold = {"postgres-exporter"}
    assert exporters.plan(changed, fake.observe(), fake, hold=hold) == [], \
        "a held exporter that runs keeps its DSN list"
    fake.states["postgres-exporter"] = "EXITED"
    assert [a.description for a in exporters.plan(changed, fake.observe(), fake, hold=hold)
            ] == ["run postgres-exporter"], "one that stopped is not held"


def test_a_new_dsn_list_waits_dsn_replan_after_the_last(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each new DSN list restarts postgres_exporter, which then connects to every cluster
    again; a host making platforms starts or restarts clusters several times a minute. A
    list goes in at once when the last one went in DSN_REPLAN s ago or more, else when that
    time is up, with whatever the clusters are then."""
    fake = FakeServiceManager()
    fake.ensure_started()
    mon = HostMonitoring(converge.HostPaths(tmp_path), fake, host="127.0.0.1")
    monkeypatch.setattr(monitor, "DSN_REPLAN", 1.0)
    ps = [platform(f"p{i}", f"n{i}", 20000 + i) for i in range(1, 4)]

    def clusters(*running: int) -> None:
        for i in range(1, 4):
            fake.specs.setdefault(f"p{i}-db", ProgramSpec(name=f"p{i}-db", command=("pg",)))
            fake.states[f"p{i}-db"] = "RUNNING" if i in running else "STOPPED"

    def dsns() -> int:
        return fake.specs["postgres-exporter"].environment["DATA_SOURCE_NAME"].count("host=")

    def puts() -> int:
        return fake.calls.count(("put", "postgres-exporter"))

    try:
        clusters(1)
        mon.keep(host(*ps))
        assert (puts(), dsns()) == (1, 1), "the first list at once"
        clusters(1, 2)
        mon.keep(host(*ps))
        clusters(1, 2, 3)
        mon.keep(host(*ps))
        assert (puts(), dsns()) == (1, 1), "the next ones wait"
        time.sleep(1.0)
        mon.keep(host(*ps))
        assert (puts(), dsns()) == (2, 3), "then one restart takes all that changed"
        time.sleep(1.0)
        mon.keep(host(*ps))
        assert puts() == 2, "nothing new: nothing to do"
    finally:
        mon.stop()


def test_a_port_taken_while_its_exporter_was_down_is_chosen_anew() -> None:
    ports = exporters.MonitoringPorts(node=41001, agent=41002, postgres=41003)
    programs = {**running("node-exporter", state="FATAL"),
                **running("postgres-exporter", state="FATAL")}
    assert exporters.taken_ports(ports, programs, {41001}) == ["node"]
    assert exporters.taken_ports(ports, running("node-exporter"), {41001}) == []


def test_targets_by_job() -> None:
    ports = exporters.MonitoringPorts(node=41001, agent=41002, postgres=41003)
    assert exporters.targets(ports, host="10.0.0.7", agent_up=True, programs={}) == {
        "agent": "10.0.0.7:41002"}
    both = {**running("node-exporter", state="FATAL"), **running("postgres-exporter")}
    assert exporters.targets(ports, host="10.0.0.7", agent_up=False, programs=both) == {
        "node": "10.0.0.7:41001", "postgres": "10.0.0.7:41003"}
    stopped = {**running("node-exporter"), **running("postgres-exporter", state="FATAL")}
    assert set(exporters.targets(ports, host="h", agent_up=True, programs=stopped)) == {
        "node", "agent"}


# ---------------------------------------------------------------- in the agent


def test_orphan_cleanup_leaves_the_exporters_alone(tmp_path: Path) -> None:
    fake = FakeServiceManager()
    fake.ensure_started()
    agent = Agent(AgentOptions(data_dir=tmp_path), services=fake)
    programs = running("ingress", "node-exporter", "postgres-exporter", "p1-db", "p9-a-web-0")
    actions = agent._plan_orphans(host(desired(id="p1")), programs)
    assert [a.description for a in actions] == ["remove orphan process p9-a-web-0"]


def test_the_agent_keeps_its_exporters_and_reports_where_they_are(tmp_path: Path) -> None:
    fake = FakeServiceManager()
    fake.ensure_started()
    agent = Agent(AgentOptions(data_dir=tmp_path, metrics_host="0.0.0.0"), services=fake)
    mon = agent.monitoring
    p1 = desired(id="p1")
    mon.keep(host(p1))
    assert fake.calls[1:] == [("put", "node-exporter")]
    ports = exporters.MonitoringPorts.load(tmp_path / exporters.PORTS_FILE)
    assert ports is not None
    assert mon.targets == {"node": f"10.0.0.7:{ports.node}"}, "the host's address, not 0.0.0.0"
    agent.services.put(converge.db_program(agent.paths, p1))
    mon.keep(host(p1))
    mon.keep(host(p1))
    assert fake.calls[1:] == [("put", "node-exporter"), ("put", "p1-db"),
                              ("put", "postgres-exporter")], "each put once"
    assert mon.targets == {"node": f"10.0.0.7:{ports.node}",
                           "postgres": f"10.0.0.7:{ports.postgres}"}
    mon.keep(host(desired(id="p1", running=False)))
    assert fake.calls[-1] == ("remove", "postgres-exporter")
    assert "postgres" not in mon.targets
    # a new agent on the same data dir: same ports, nothing to put
    again = Agent(AgentOptions(data_dir=tmp_path, metrics_host="0.0.0.0"), services=fake)
    assert again.monitoring.ports() == ports
    assert [a.description for a in again.monitoring.plan(host(), fake.observe())] == []


def test_metrics_follow_each_new_desired_state_and_only_a_new_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scrape after a change waits for its page (up to a second). The same desired state
    kept again, as the exporters' check every 30 s does, is no change; a new one is, even
    when nothing the exporters follow moved (here a platform's name)."""
    fake = FakeServiceManager()
    fake.ensure_started()
    mon = HostMonitoring(converge.HostPaths(tmp_path), fake, host="127.0.0.1")
    told: list[object] = []
    use = mon.metrics.use
    monkeypatch.setattr(mon.metrics, "use", lambda source: (told.append(source), use(source)))
    monkeypatch.setattr(monitor, "KEEP_VERIFY", 0.0)  # every keep checks the exporters
    try:
        same = host(desired(id="p1"))
        for _ in range(3):
            mon.keep(same)
        assert len(told) == 1
        assert 'platform="bms/lbh"' in mon.metrics.text()
        mon.keep(host(desired(id="p1", name="renamed")))
        assert len(told) == 2
        text = mon.metrics.text()
        assert 'platform="bms/renamed"' in text and 'platform="bms/lbh"' not in text
    finally:
        mon.stop()


def test_the_report_carries_the_targets(tmp_path: Path) -> None:
    report = HostReport(monitoring={"node": "10.0.0.7:1", "agent": "10.0.0.7:2"})
    assert report.host_part().monitoring == {"node": "10.0.0.7:1", "agent": "10.0.0.7:2"}
    assert HostObserved.model_validate({}).monitoring == {}, "an older agent's report"


def test_metrics_port_taken_meanwhile_moves(tmp_path: Path) -> None:
    fake = FakeServiceManager()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        exporters.MonitoringPorts(node=1, agent=taken, postgres=3).save(
            tmp_path / exporters.PORTS_FILE)
        mon = HostMonitoring(converge.HostPaths(tmp_path), fake, host="127.0.0.1")
        mon.start()
        try:
            moved = mon.ports().agent
            assert moved != taken
            assert exporters.MonitoringPorts.load(tmp_path / exporters.PORTS_FILE) == \
                mon.ports()
            assert httpx.get(f"http://127.0.0.1:{moved}/metrics").status_code == 200
        finally:
            mon.stop()


# ---------------------------------------------------------------- live


try:
    pgcluster.pg_bin("postgres")
    HAVE_PG = shutil.which(exporters.stack.binary("postgres_exporter")) is not None
except Exception:  # pragma: no cover - the project's setup installs both
    HAVE_PG = False


@contextlib.contextmanager
def platform_clusters(paths: converge.HostPaths, fake_fetch: Any,
                      services: SupervisordManager, *platforms: DesiredPlatform,
                      ) -> Iterator[converge.Effects]:
    """Homes, Unix users and clusters for `platforms`, removed afterwards (the clusters'
    processes go with the supervisord fixture, by PID)."""
    fx = converge.Effects(paths, services, fake_fetch)
    try:
        paths.prepare()
        for p in platforms:
            fx.make_home(p)
            fx.init_cluster(p)
            services.put(converge.db_program(paths, p))
        for p in platforms:
            pgcluster.wait_ready(converge.cluster_spec(paths, p), timeout=30)
        wait_for(lambda: all(services.observe()[f"{p.id}-db"].state == "RUNNING"
                             for p in platforms), 10, "the clusters RUNNING")
        yield fx
    finally:
        for p in platforms:
            with contextlib.suppress(Exception):
                services.remove(f"{p.id}-db")
            user = converge.unix_user(p.id)
            if user:
                with contextlib.suppress(Exception):
                    unixusers.remove_user(user)
        shutil.rmtree(paths.sockets, ignore_errors=True)


def _no_fetch(digest: str, target: Path) -> None:
    raise AssertionError("no download expected")


def _exporter_servers(port: int) -> dict[str, str]:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert r.status_code == 200, r.text[-500:]
    return dict(PG_SERIES.findall(r.text))


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_PG, reason="PostgreSQL or postgres_exporter not installed")
def test_expected_databases_match_the_real_exporter(supervisor: SupervisordManager,
                                                    short_tmp: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's `server` label is the exporter's, cluster by cluster; a cluster that
    stops loses its series at once (before the agent drops its DSN), and the agent still
    expects it while its platform should run: that is "database down"."""
    tag = secrets.token_hex(3)
    p1 = platform(f"x{tag}a", "lbh", _free())
    p2 = platform(f"x{tag}b", "dlg", _free())
    paths = converge.HostPaths(short_tmp / "agent")
    paths.prepare()
    mon = HostMonitoring(paths, supervisor, host="127.0.0.1")
    monkeypatch.setattr(monitor, "DSN_REPLAN", 3.0)
    mon.start()
    try:
        with platform_clusters(paths, _no_fetch, supervisor, p1, p2):
            mon.keep(host(p1, p2))
            port = mon.ports().postgres
            assert mon.targets["postgres"] == f"127.0.0.1:{port}"
            wait_for(lambda: _up(port), 10, "postgres_exporter")
            seen = _exporter_servers(port)
            expected = _expected(mon.metrics.text())
            assert set(seen) == set(expected) == {
                exporters.server_label(paths.socket_dir(p.id), p.database.port)
                for p in (p1, p2)}
            assert expected[exporters.server_label(paths.socket_dir(p1.id),
                                                   p1.database.port)] == ("bms", "bms/lbh")
            assert all(v == "20" for v in seen.values()), "max_connections of size s"
            # every series the checks read, for each cluster, and little else: the default
            # metrics were ~500 series a cluster, ingested every 5 s
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            read = {name for check in CHECKS for name in re.findall(r"\bpg_[a-z_]+", check.expr)}
            assert read >= {"pg_static", "pg_stat_activity_count"}, read
            for server in seen:
                for name in read:
                    assert re.search(rf'^{name}\{{.*server="{re.escape(server)}"', text,
                                     re.M), (name, server)
                series = re.findall(rf'^pg_\w+\{{[^}}]*server="{re.escape(server)}"', text, re.M)
                assert len(series) < 24, series
            # what the agent adds for each running cluster: its memory against its size's
            # budget, and the space left for its WAL
            agent = mon.metrics.text()
            for server in seen:
                used = _agent_value(agent, "tenantry_database_memory_bytes", server)
                budget = _agent_value(agent, "tenantry_database_memory_budget_bytes", server)
                assert 4 * 2**20 < used < budget == memory_budget("s"), (used, budget)
                free = _agent_value(agent, "tenantry_database_wal_free_bytes", server)
                now = free_bytes(paths.platform(p1.id) / "pgdata")
                assert now is not None and abs(free - now) < 256 * 2**20, (free, now)

            supervisor.stop(f"{p2.id}-db")  # p2's cluster dies; the DSN list still has it
            gone = exporters.server_label(paths.socket_dir(p2.id), p2.database.port)
            started = time.monotonic()
            assert gone not in _exporter_servers(port), "its series vanish"
            assert time.monotonic() - started < 10, "a dead DSN costs a second (or so, loaded)"
            mon.keep(host(p1, p2))  # the agent still expects it; its DSN goes with the next
            assert gone in _expected(mon.metrics.text())  # list, DSN_REPLAN after the last
            time.sleep(monitor.DSN_REPLAN)
            mon.keep(host(p1, p2))
            assert "postgres-exporter" in supervisor.observe()
            wait_for(lambda: _up(port), 10, "postgres_exporter with one DSN")
            assert set(_exporter_servers(port)) == {
                exporters.server_label(paths.socket_dir(p1.id), p1.database.port)}

            mon.keep(host(p1, platform(p2.id, "dlg", p2.database.port, running=False)))
            assert gone not in _expected(mon.metrics.text()), "stopped: not expected"

            mon.keep(host())  # no clusters left: no exporter
            assert "postgres-exporter" not in supervisor.observe()
            assert "postgres" not in mon.targets
    finally:
        mon.stop()


def platform(pid: str, name: str, port: int, **over: Any) -> DesiredPlatform:
    return desired(id=pid, name=name, database={"port": port, "password": "pw"}, **over)


def _free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _agent_value(text: str, name: str, server: str) -> float:
    found = re.search(rf'^{name}\{{server="{re.escape(server)}",[^}}]*\}} (\S+)$', text, re.M)
    assert found, (name, server)
    return float(found.group(1))


def _expected(text: str) -> dict[str, tuple[str, str]]:
    found = re.findall(r'^tenantry_database_expected\{server="([^"]+)",isv="([^"]+)",'
                       r'platform="([^"]+)"\} 1$', text, re.M)
    return {server: (isv, platform) for server, isv, platform in found}
