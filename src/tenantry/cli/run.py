"""Commands that run things: `up`, `agent`, and the internal servers `up` starts."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from tenantry.cli.main import app
from tenantry.cli.output import err, handle_errors
from tenantry.core import delays
from tenantry.core.config import load_settings, parse_listen, parse_port_range
from tenantry.core.errors import InvalidInput


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


@app.command("up")
@handle_errors
def up(data_dir: Annotated[Path | None, typer.Option(help="Where everything is kept.")] = None,
       listen: Annotated[str | None, typer.Option(help="API and portal address HOST:PORT "
                                                  "(default 127.0.0.1:8080).")] = None,
       ingress_port: Annotated[int | None, typer.Option(help="HTTPS port of the platforms "
                                                        "(default 8443).")] = None,
       port_range: Annotated[str | None, typer.Option(
           help="Ports the local host hands to platforms, MIN-MAX (default 20000-29999).")]
       = None,
       demo: Annotated[bool, typer.Option("--demo", help="Create a demo ISV with two "
                                          "platforms.")] = False,
       agent_tls_listen: Annotated[str | None, typer.Option(
           help="Also serve agents over mutual TLS at HOST:PORT (client certificates from "
                "tenantry's CA); expose this, not --listen, to other hosts.")] = None) -> None:
    """Run the control plane, a worker and a local host agent in the foreground (Ctrl-C stops)."""
    from tenantry.core.up import ControlPlane

    settings = load_settings(data_dir=data_dir, listen=listen, ingress_port=ingress_port,
                             port_range=port_range, agent_tls_listen=agent_tls_listen)
    plane = ControlPlane(settings=settings, say=say)
    plane.preflight()
    stop_requested = False

    def request_stop(*_: object) -> None:
        nonlocal stop_requested
        stop_requested = True
        plane.stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        say(f"tenantry: data dir {settings.data_dir}")
        plane.prepare_store()
        plane.spawn()
        say(f"tenantry: portal and API at {plane.api_url}/")
        say(f"tenantry: admin password in {settings.data_dir / 'admin-password'}, "
            f"API token in {settings.data_dir / 'admin-token'} (both mode 0600)")
        say(f"tenantry: clients trust {settings.data_dir / 'ca.pem'}; "
            f"platforms at https://NAME.ISV.{settings.domain}:{settings.ingress_port}/")
        say("tenantry: running; Ctrl-C stops everything")
        tasks = []
        if demo:
            from tenantry.cli.client import Client
            from tenantry.cli.demo import run_demo

            tasks.append(("the demo", lambda: run_demo(Client.from_env(settings.data_dir),
                                                       plane.stopping, plane.say)))
        threading.Thread(target=plane.after_start, args=(tasks,), name="after-start",
                         daemon=True).start()
        plane.watch()
    finally:
        say("tenantry: stopping ...")
        plane.shutdown()
        say("tenantry: stopped")


def say(line: str) -> None:
    """One progress line on stderr, never wrapped nor read as markup (it holds paths)."""
    err.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command("agent")
@handle_errors
def agent(data_dir: Annotated[Path, typer.Option(help="The agent's own directory.")],
          server: Annotated[str | None, typer.Option(help="Control-plane URL.")] = None,
          enroll_token: Annotated[str | None, typer.Option(
              envvar="TENANTRY_ENROLL_TOKEN",
              help="One-time token from `tenantry host enroll-token`.")] = None,
          ca_file: Annotated[Path | None, typer.Option(
              help="CA to trust for an https:// server (its DATA_DIR/ca.pem); the agent then "
                   "enrolls for a client certificate and uses mutual TLS.")] = None,
          region: Annotated[str, typer.Option(help="Region this host is in.")] = "local",
          name: Annotated[str | None, typer.Option(help="Host name (default: hostname).")]
          = None,
          ingress_port: Annotated[int, typer.Option(help="HTTPS port of this host's ingress.")]
          = 8443,
          port_range: Annotated[str, typer.Option(help="Ports for platforms, MIN-MAX.")]
          = "20000-29999",
          plan: Annotated[bool, typer.Option("--plan", help="Print what would be done, and "
                                             "exit.")] = False,
          stop_services_on_exit: Annotated[bool, typer.Option(
              "--stop-services-on-exit", help="Stop every platform when the agent stops.")]
          = False,
          host_access: Annotated[bool, typer.Option(
              "--host-access", help="Manage this host's sshd (tenantry's SSH CA only), "
              "principals, revocations and sudo, and ship its logins and sudo runs.")]
          = False,
          etc_root: Annotated[Path, typer.Option(help="Where /etc is (for tests).")]
          = Path("/"),
          sshd_pid_file: Annotated[Path, typer.Option(help="sshd's pid file (to reload it).")]
          = Path("/run/sshd.pid"),
          sshd_log: Annotated[Path | None, typer.Option(help="sshd's log file to ship.")]
          = None,
          ssh_port: Annotated[int, typer.Option(help="The port sshd listens on.")] = 22,
          firewall: Annotated[bool, typer.Option(
              "--firewall", help="Keep this host's nftables firewall (table inet tenantry): "
              "inbound only the ingress port, SSH, loopback and replies.")] = False,
          firewall_netns: Annotated[str | None, typer.Option(
              hidden=True, help="Apply the firewall in this network namespace (tests).")]
          = None) -> None:
    """Run the host agent: enroll once, then converge this host to its desired state."""
    from tenantry.agent.main import Agent, AgentOptions, run_agent

    low, high = parse_port_range(port_range)
    if server is not None and not server.startswith(("http://", "https://")):
        raise InvalidInput("server must be an http(s):// URL", field="server")
    if not 1 <= ssh_port <= 65535:
        raise InvalidInput(f"{ssh_port} is not a TCP port", field="ssh_port")
    if firewall_netns is not None and not firewall:
        raise InvalidInput("--firewall-netns needs --firewall", field="firewall_netns")
    options = AgentOptions(data_dir=data_dir.absolute(), server=server,
                           enroll_token=enroll_token or None, region=region, name=name,
                           ca_file=ca_file.absolute() if ca_file else None,
                           ingress_port=ingress_port, port_min=low, port_max=high,
                           stop_services_on_exit=stop_services_on_exit,
                           host_access=host_access, etc_root=etc_root.absolute(),
                           sshd_pid_file=sshd_pid_file, sshd_log=sshd_log,
                           ssh_port=ssh_port, firewall=firewall,
                           firewall_netns=firewall_netns)
    _logging()
    if plan:
        the_agent = Agent(options)
        client = the_agent.connect()
        desired = client.desired(generation=0, wait=0)
        actions = the_agent.plan(desired)
        for action in actions:
            print(action.description)
        if not actions:
            err.print("nothing to do: this host is converged")
        return
    run_agent(options)


@app.command("serve-api", hidden=True)
@handle_errors
def serve_api(data_dir: Annotated[Path, typer.Option()],
              listen: Annotated[str, typer.Option()] = "127.0.0.1:8080",
              agent_tls_listen: Annotated[str | None, typer.Option()] = None) -> None:
    """Internal: the API and portal server that `up` runs (and its agent TLS listener)."""
    import asyncio

    import uvicorn

    from tenantry.api.agent_tls import ssl_options
    from tenantry.api.app import create_app
    from tenantry.core.runtime import make_runtime

    host, port = parse_listen(listen)
    settings = load_settings(data_dir=data_dir, listen=listen, agent_tls_listen=agent_tls_listen)
    delays.delay("api.start")
    runtime = make_runtime(settings)
    app = create_app(runtime)
    configs = [uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)]
    if settings.agent_tls_listen:
        tls_host, tls_port = parse_listen(settings.agent_tls_listen, field="agent_tls_listen")
        configs.append(uvicorn.Config(app, host=tls_host, port=tls_port, log_level="warning",
                                      access_log=False, **ssl_options(runtime, tls_host)))

    async def serve() -> None:
        await asyncio.gather(*(uvicorn.Server(config).serve() for config in configs))

    asyncio.run(serve())


@app.command("serve-worker", hidden=True)
@handle_errors
def serve_worker(data_dir: Annotated[Path, typer.Option()]) -> None:
    """Internal: the job worker that `up` runs."""
    from tenantry.core.runtime import make_runtime
    from tenantry.core.worker import run_worker

    _logging()
    settings = load_settings(data_dir=data_dir)
    delays.delay("worker.start")
    asyncio.run(run_worker(make_runtime(settings)))


if __name__ == "__main__":
    app()
