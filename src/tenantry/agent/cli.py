"""`tenantry agent`: run the host agent (enroll once, then converge this host)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from tenantry.cli.output import configure_logging, err, handle_errors
from tenantry.core.config import parse_port_range
from tenantry.core.errors import InvalidInput


def register(root: typer.Typer) -> None:
    root.command("agent")(agent)


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
          = None,
          metrics_host: Annotated[str, typer.Option(
              help="Address the host's exporters and the agent's /metrics listen on (ports "
                   "chosen once, kept in DATA_DIR/monitoring.json); Prometheus scrapes "
                   "them there.")] = "127.0.0.1",
          disk_reserve: Annotated[int | None, typer.Option(
              envvar="TENANTRY_DISK_RESERVE",
              help="MiB the agent holds in reserve on its data dir's disk and releases when "
                   "free space falls below it (default: 1 % of the disk, 64 to 1024 MiB; "
                   "0: none).")] = None) -> None:
    """Run the host agent: enroll once, then converge this host to its desired state."""
    from pydantic import ValidationError

    from tenantry.agent.main import Agent, AgentOptions, describe_invalid, run_agent

    low, high = parse_port_range(port_range)
    if server is not None and not server.startswith(("http://", "https://")):
        raise InvalidInput("server must be an http(s):// URL", field="server")
    if not 1 <= ssh_port <= 65535:
        raise InvalidInput(f"{ssh_port} is not a TCP port", field="ssh_port")
    if firewall_netns is not None and not firewall:
        raise InvalidInput("--firewall-netns needs --firewall", field="firewall_netns")
    try:
        ipaddress.ip_address(metrics_host)
    except ValueError:
        raise InvalidInput(f"{metrics_host!r} is not an IP address",
                           field="metrics_host") from None
    if disk_reserve is not None and not 0 <= disk_reserve <= 1 << 20:
        raise InvalidInput(f"{disk_reserve} MiB is not between 0 and 1048576",
                           field="disk_reserve")
    options = AgentOptions(data_dir=data_dir.absolute(), server=server,
                           enroll_token=enroll_token or None, region=region, name=name,
                           ca_file=ca_file.absolute() if ca_file else None,
                           ingress_port=ingress_port, port_min=low, port_max=high,
                           stop_services_on_exit=stop_services_on_exit,
                           host_access=host_access, etc_root=etc_root.absolute(),
                           sshd_pid_file=sshd_pid_file, sshd_log=sshd_log,
                           ssh_port=ssh_port, firewall=firewall,
                           firewall_netns=firewall_netns, metrics_host=metrics_host,
                           disk_reserve=None if disk_reserve is None else disk_reserve << 20)
    configure_logging()
    if plan:
        the_agent = Agent(options)
        client = the_agent.connect()
        try:
            desired = client.desired(generation=0, wait=0)
        except ValidationError as exc:
            err.print(f"error (desired state): the control plane's desired state for this host "
                      f"does not validate: {describe_invalid(exc)}; the agent would refuse it "
                      "and change nothing")
            raise typer.Exit(1) from None
        actions = the_agent.plan(desired)
        for action in actions:
            print(action.description)
        if not actions:
            err.print("nothing to do: this host is converged")
        return
    run_agent(options)
