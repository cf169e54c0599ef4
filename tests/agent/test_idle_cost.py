"""What an idle host costs its agent and the control plane: its heartbeats carry no platform,
its long polls end in 304 without a document, and its platforms are looked at on a slow,
spread schedule, so the cost does not grow with the platforms it holds."""

from __future__ import annotations

import copy
import json
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tenantry.agent import main as agent_main
from tenantry.agent.client import ControlPlaneClient, Credentials
from tenantry.agent.main import Agent, AgentOptions
from tenantry.agent.testing import FakeServiceManager
from tenantry.platforms.contract import (
    PACE_HEADER,
    WIRE,
    DesiredHost,
    DesiredPlatform,
    PlatformReport,
    ProcessExit,
)
from tests.platforms.test_contract import REPORT, WIRE_DOC


def platforms(n: int) -> dict[str, DesiredPlatform]:
    one = WIRE_DOC["platforms"][0]
    docs = []
    for i in range(n):
        doc = copy.deepcopy(one)
        doc["id"] = f"p{i}"
        docs.append(doc)
    host = DesiredHost.model_validate({**WIRE_DOC, "platforms": docs})
    return {p.id: p for p in host.platforms}


HEALTHY = PlatformReport.model_validate(REPORT["platforms"]["p1"])


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return Agent(AgentOptions(data_dir=tmp_path), services=FakeServiceManager())


def test_a_healthy_idle_host_heartbeats_without_platforms(agent: Agent) -> None:
    wanted = platforms(300)
    agent._last_reports = dict.fromkeys(wanted, HEALTHY)
    now = 1000.0
    first = agent._heartbeat_reports(wanted, now)
    assert len(first) == 300, "the first heartbeat tells everything"
    agent._sent.update(first)
    assert agent._heartbeat_reports(wanted, now + 2) == {}
    assert agent._heartbeat_reports(wanted, now + 30) == {}
    assert len(agent._heartbeat_reports(wanted, now + agent_main.FULL_REPORT)) == 300


def test_agents_started_together_spread_their_full_reports(tmp_path: Path) -> None:
    """After the control plane's restart every agent sends its full report at once; by their
    next ones they no longer come in the same second (each waits 60-100 % of FULL_REPORT)."""
    wanted = platforms(3)
    when = []
    for i in range(40):
        agent = Agent(AgentOptions(data_dir=tmp_path / str(i)), services=FakeServiceManager())
        agent._last_reports = dict.fromkeys(wanted, HEALTHY)
        agent._sent.update(agent._heartbeat_reports(wanted, 1000.0))  # all at once
        when.append(next(t for t in range(1, int(agent_main.FULL_REPORT) + 1)
                         if agent._heartbeat_reports(wanted, 1000.0 + t)))
    assert min(when) >= agent_main.FULL_REPORT * agent_main.SPREAD[0]
    assert max(when) <= agent_main.FULL_REPORT
    assert len(set(when)) >= 10, when  # 40 agents over 24 s: not in step


def test_agents_started_together_drift_apart_in_their_heartbeats_and_long_polls(
        tmp_path: Path) -> None:
    """With fixed periods, agents that started together (all of them, after the control
    plane's restart) would send their quiet heartbeats and end their long polls in the same
    second for good: the API then serves them in waves. Each period is drawn again each
    time, 80-100 % of the pace and of POLL_WAIT."""
    fleet = []
    for i in range(40):
        plane = Plane("20")
        one = Agent(AgentOptions(data_dir=tmp_path / str(i)), services=FakeServiceManager())
        creds = Credentials(server="http://cp.test", host_id=f"h{i}", token="t")  # noqa: S106
        one._client = ControlPlaneClient(creds, transport=httpx.MockTransport(plane))
        fleet.append((one, plane))
    clock = 1000.0
    sent: list[list[float]] = [[] for _ in fleet]
    while clock < 1000.0 + 200:
        for (one, plane), times in zip(fleet, sent, strict=True):
            before = len(plane.reports)
            one._heartbeat({}, clock)  # the first ones all at once
            times += [clock] * (len(plane.reports) - before)
        clock += agent_main.IDLE_WAIT
    tenth = [times[9] for times in sent]
    assert max(tenth) - min(tenth) >= 10, "the tenth heartbeats spread over 10 s or more"

    waits = [one.poll_wait() for one, _ in fleet for _ in range(5)]
    assert all(agent_main.POLL_WAIT * agent_main.JITTER[0] <= w <= agent_main.POLL_WAIT
               for w in waits)
    ends = [sum(one.poll_wait() for _ in range(10)) for one, _ in fleet]
    assert max(ends) - min(ends) >= 10, "the tenth long polls end 10 s apart or more"


def test_a_heartbeat_carries_what_is_unsent_or_unwell(agent: Agent) -> None:
    wanted = platforms(5)
    agent._last_reports = dict.fromkeys(wanted, HEALTHY)
    agent._sent.update(agent._heartbeat_reports(wanted, 1000.0))
    sick = HEALTHY.model_copy(update={"database": "error: no answer"})
    agent._last_reports["p1"] = sick  # its report went, but its state is judged over time
    agent._sent["p1"] = sick
    agent._last_reports["p3"] = HEALTHY.model_copy(update={"conflicts": [20007]})  # unsent
    assert set(agent._heartbeat_reports(wanted, 1002.0)) == {"p1", "p3"}
    # an ingress error is every platform's problem, and so is its end
    agent._ingress_error = "Caddy's admin API did not come up"
    assert len(agent._heartbeat_reports(wanted, 1004.0)) == 5
    agent._sent_ingress, agent._ingress_error = agent._ingress_error, None
    assert len(agent._heartbeat_reports(wanted, 1006.0)) == 5


def test_a_well_platform_is_looked_at_on_a_slow_spread_schedule() -> None:
    """A crash needs no look (supervisord tells its exits); a hang does, so apps that ask
    to be restarted when hung, and platforms that are not well, keep the short one."""
    wanted = platforms(200)
    every = [agent_main._recheck_every(p, HEALTHY) for p in wanted.values()]
    idle = agent_main.RECHECK_IDLE
    assert all(0.8 * idle <= e <= 1.2 * idle for e in every)
    assert len({round(e, 1) for e in every}) > 50, "spread, not all at the same moment"
    p = wanted["p0"]
    assert agent_main._recheck_every(p, HEALTHY.model_copy(update={"database": "stopped"})) \
        == agent_main.RECHECK
    doc = copy.deepcopy(WIRE_DOC["platforms"][0])
    doc["releases"][0]["manifest"]["restart_after"] = 3
    asks = DesiredHost.model_validate({**WIRE_DOC, "platforms": [doc]}).platforms[0]
    assert agent_main._recheck_every(asks, HEALTHY) == agent_main.RECHECK


def test_an_idle_agent_asks_with_the_generation_it_holds_and_now_and_then_for_all(
        agent: Agent) -> None:
    body = DesiredHost.model_validate(WIRE_DOC).model_dump_json(context=WIRE)
    asked: list[str | None] = []

    def control_plane(request: httpx.Request) -> httpx.Response:
        held = request.headers.get("If-None-Match")
        asked.append(held)
        if held == '"7"':
            return httpx.Response(304)
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    creds = Credentials(server="http://cp.test", host_id="h1", token="t")  # noqa: S106
    client = ControlPlaneClient(creds, transport=httpx.MockTransport(control_plane))
    first = agent.fetch_desired(client, generation=0, wait=0)
    assert first is not None
    for _ in range(5):
        assert agent.fetch_desired(client, generation=7, wait=0) is first
    assert asked == [None] + ['"7"'] * 5
    agent._fetched_at -= agent_main.DESIRED_REFRESH  # a minute later
    again = agent.fetch_desired(client, generation=7, wait=0)
    assert asked[-1] is None and again is not None and again.generation == 7


class Plane:
    """The control plane's report endpoint, recording what each heartbeat carried; its answer
    names the quiet pace `pace` when one is given."""

    def __init__(self, pace: str | None = None) -> None:
        self.reports: list[dict[str, object]] = []
        self.pace = pace

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.reports.append(json.loads(request.content))
        return httpx.Response(204, headers={PACE_HEADER: self.pace} if self.pace else {})


def test_an_idle_host_heartbeats_seldom_and_news_goes_at_the_next_pass(agent: Agent) -> None:
    """A heartbeat every pass (2 s) was half of what 300 idle hosts asked of the control
    plane. With nothing new one goes every QUIET_HEARTBEAT s (well within the 20 s after
    which a host is called offline); an unsent report, a process exit or a change of the
    host part goes with the next pass."""
    plane = Plane()
    creds = Credentials(server="http://cp.test", host_id="h1", token="t")  # noqa: S106
    agent._client = ControlPlaneClient(creds, transport=httpx.MockTransport(plane))
    clock = [1000.0]

    def passes(seconds: float) -> int:
        """Passes every IDLE_WAIT s for `seconds`; the heartbeats they sent."""
        before = len(plane.reports)
        end = clock[0] + seconds
        while clock[0] < end:
            clock[0] += agent_main.IDLE_WAIT
            agent._heartbeat({}, clock[0])  # as each pass (tick) does
        return len(plane.reports) - before

    agent._heartbeat({}, clock[0])
    assert len(plane.reports) == 1, "the first pass tells the control plane at once"
    quiet = passes(60)
    assert 60 / agent_main.QUIET_HEARTBEAT - 1 <= quiet <= 60 / agent_main.QUIET_HEARTBEAT + 1
    assert agent_main.QUIET_HEARTBEAT * 3 <= 20, "three may be lost before 'offline'"

    agent._ingress_error = "Caddy's admin API did not come up"  # news of the host
    assert passes(agent_main.IDLE_WAIT) == 1
    assert plane.reports[-1]["ingress_error"] == "Caddy's admin API did not come up"
    assert passes(agent_main.IDLE_WAIT) == 0, "told once, it is not news any more"

    agent.exits._pending.append(ProcessExit(program="p1-web-0", how="terminated by SIGKILL",
                                            at=clock[0]))
    assert passes(agent_main.IDLE_WAIT) == 1
    assert [e["program"] for e in plane.reports[-1]["process_exits"]] == ["p1-web-0"]
    assert passes(agent_main.IDLE_WAIT) == 0


@pytest.mark.parametrize(("said", "pace"), [
    (None, agent_main.QUIET_HEARTBEAT),  # a control plane that says nothing
    ("20", 20.0),  # 1,000 hosts' pace
    ("60", 60.0),
    ("2", agent_main.QUIET_HEARTBEAT),  # faster than the agent's own: not taken
    ("600", agent_main.QUIET_HEARTBEAT),  # slower than the range: not taken
    ("soon", agent_main.QUIET_HEARTBEAT),
])
def test_an_idle_host_heartbeats_at_the_pace_the_control_plane_gives(
        agent: Agent, said: str | None, pace: float) -> None:
    """A large fleet's control plane asks its hosts for fewer quiet heartbeats; an agent
    keeps to that pace within QUIET_HEARTBEAT_RANGE, and to its own outside it. News still
    goes at the next pass."""
    plane = Plane(said)
    creds = Credentials(server="http://cp.test", host_id="h1", token="t")  # noqa: S106
    agent._client = ControlPlaneClient(creds, transport=httpx.MockTransport(plane))
    clock = 1000.0
    agent._heartbeat({}, clock)
    assert len(plane.reports) == 1
    for _ in range(int(240 / agent_main.IDLE_WAIT)):
        clock += agent_main.IDLE_WAIT
        agent._heartbeat({}, clock)
    quiet = len(plane.reports) - 1
    fastest = pace * agent_main.JITTER[0]  # each a random part shorter
    assert 240 / pace - 1 <= quiet <= 240 / fastest + 1, (said, quiet)

    agent._ingress_error = "Caddy's admin API did not come up"  # news of the host
    agent._heartbeat({}, clock + agent_main.IDLE_WAIT)
    assert plane.reports[-1]["ingress_error"] == "Caddy's admin API did not come up"


def test_an_agent_applies_a_change_to_the_document_it_holds_and_else_asks_for_all(
        agent: Agent) -> None:
    """Holding generation 7 whole, the agent asks `since` 7: a change naming its unchanged
    platforms and carrying the changed one is applied to what it holds. A change to another
    generation than its own is not applied: it asks for the whole document."""
    one = WIRE_DOC["platforms"][0]
    docs = [{**copy.deepcopy(one), "id": f"p{n}", "name": f"plat{n}"} for n in range(3)]
    whole = DesiredHost.model_validate({**WIRE_DOC, "generation": 7, "platforms": docs})
    changed = {**copy.deepcopy(docs[1]), "running": False}
    answers: list[bytes] = []
    asked: list[dict[str, str]] = []

    def control_plane(request: httpx.Request) -> httpx.Response:
        asked.append(dict(request.url.params))
        return httpx.Response(200, content=answers.pop(0),
                              headers={"Content-Type": "application/json"})

    def change(since: int, generation: int) -> bytes:
        return json.dumps({**json.loads(whole.model_dump_json(context=WIRE)),
                           "generation": generation, "since": since,
                           "platforms": [changed], "unchanged": ["p0", "p2"]}).encode()

    creds = Credentials(server="http://cp.test", host_id="h1", token="t")  # noqa: S106
    client = ControlPlaneClient(creds, transport=httpx.MockTransport(control_plane))
    answers.append(whole.model_dump_json(context=WIRE).encode())
    assert agent.fetch_desired(client, generation=0, wait=0) is not None
    assert "since" not in asked[-1]

    answers.append(change(since=7, generation=8))
    got = agent.fetch_desired(client, generation=7, wait=0)
    assert asked[-1]["since"] == "7"
    assert got is not None and got.generation == 8 and got.since is None
    assert [(p.id, p.running) for p in got.platforms] == \
        [("p0", whole.platforms[0].running), ("p1", False), ("p2", whole.platforms[2].running)]
    assert got.platforms[0] == whole.platforms[0]

    answers.append(change(since=5, generation=9))  # not a change to generation 8
    answers.append(whole.model_copy(update={"generation": 9}).model_dump_json(
        context=WIRE).encode())
    got = agent.fetch_desired(client, generation=8, wait=0)
    assert asked[-2]["since"] == "8" and "since" not in asked[-1]
    assert got is not None and got.generation == 9 and len(got.platforms) == 3
    assert got.platforms[1].running == whole.platforms[1].running


def test_a_platforms_older_report_never_arrives_after_its_newer_one(agent: Agent) -> None:
    """A pass's heartbeat carries a platform's report of the last generation while its
    converge thread sends the new one: at once, the older could arrive last, the control
    plane kept it, and the agent, having sent the newer, did not send it again (a creation
    on a host of 230 platforms waited 180 s for a pgBackRest stanza its host had made).
    Reports now go one at a time, each with the platform's latest."""
    old, new = (HEALTHY.model_copy(update={"gen": g}) for g in (1, 2))
    stored: dict[str, dict[str, object]] = {}
    on_the_wire = threading.Event()

    def plane(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["platforms"].get("p0", {}).get("gen") == 1 and not on_the_wire.is_set():
            on_the_wire.set()
            time.sleep(0.5)  # the older one slow on its way
        stored.update(body["platforms"])
        return httpx.Response(204)

    creds = Credentials(server="http://cp.test", host_id="h1", token="t")  # noqa: S106
    agent._client = ControlPlaneClient(creds, transport=httpx.MockTransport(plane))
    agent._last_reports["p0"] = old
    heartbeat = threading.Thread(target=agent._report, args=({"p0": old},))
    heartbeat.start()
    assert on_the_wire.wait(5)
    agent._last_reports["p0"] = new  # as the converge thread does, then sends it
    agent._report({"p0": new})
    heartbeat.join()
    assert stored["p0"]["gen"] == 2, "the control plane has the newer report"
    assert agent._sent["p0"] == new


def test_a_heartbeat_read_while_converge_threads_add_reports_does_not_end_the_agent(
        agent: Agent) -> None:
    """Each platform's converge thread (and the backup runner) adds its report while the
    pass reads them all for its heartbeat. Reading the dict itself then raised 'dictionary
    changed size during iteration' and ended the agent (a host being filled, at 150)."""
    wanted = platforms(300)
    agent._last_reports = dict.fromkeys(list(wanted)[:150], HEALTHY)
    stop = threading.Event()

    def converge_threads() -> None:
        new = list(wanted)[150:]
        while not stop.is_set():
            for pid in new:  # new platforms' first reports ...
                agent._last_reports[pid] = HEALTHY
            for pid in new:  # ... (taken out, to be added again)
                agent._last_reports.pop(pid)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads take turns within one pass's reading
    adder = threading.Thread(target=converge_threads)
    adder.start()
    try:
        for k in range(3000):
            agent._heartbeat_reports(wanted, 1000.0 + k)
    finally:
        stop.set()
        adder.join()
        sys.setswitchinterval(interval)
