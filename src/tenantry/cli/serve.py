"""`tenantry up` and the servers it runs (`serve-api`, `serve-worker`): commands that start
processes, not use cases (up.py, worker.py and demo.py beside this hold their logic)."""

from __future__ import annotations

import asyncio
import faulthandler
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from tenantry.cli.output import configure_logging, err, handle_errors
from tenantry.core import delays
from tenantry.core.config import load_settings, parse_listen
from tenantry.core.errors import Unavailable


def register(root: typer.Typer) -> None:
    root.command("up")(up)
    root.command("serve-api", hidden=True)(serve_api)
    root.command("serve-worker", hidden=True)(serve_worker)


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
                "tenantry's CA); expose this, not --listen, to other hosts.")] = None,
       api_processes: Annotated[int | None, typer.Option(
           help="API processes sharing --listen (default 1); see docs/scaling.md.")]
       = None) -> None:
    """Run the control plane, a worker and a local host agent in the foreground (Ctrl-C stops).

    On a server, run it with systemd's deploy/systemd/tenantry.service (its watchdog too)."""
    from tenantry.cli.up import LOCAL_HOST, WATCH_STALL, ControlPlane
    from tenantry.cli.up_exits import ExitTeller
    from tenantry.core.sdnotify import Notifier

    manager = Notifier.from_env()  # before any child starts: none of them may speak for us
    # A service manager's watchdog ends a wedged `up` with SIGABRT: its threads' stacks go to
    # the log, to show where it hung.
    faulthandler.enable()

    def say_and_tell(line: str) -> None:
        say(line)
        manager.status(line)

    settings = load_settings(data_dir=data_dir, listen=listen, ingress_port=ingress_port,
                             port_range=port_range, agent_tls_listen=agent_tls_listen,
                             api_processes=api_processes)
    plane = ControlPlane(settings=settings, say=say_and_tell)
    plane.preflight()
    plane.exits = ExitTeller(settings, LOCAL_HOST)
    plane.exits.unclean_end(plane.running_marker)
    threading.Thread(target=plane.exits.run, args=(plane.stopping,), name="exits",
                     daemon=True).start()
    stop_requested = False

    def request_stop(*_: object) -> None:
        nonlocal stop_requested
        stop_requested = True
        plane.stopping.set()

    for signum in stop_signals():
        signal.signal(signum, request_stop)
    try:
        say_and_tell(f"tenantry: data dir {settings.data_dir}")
        plane.prepare_store()
        plane.spawn()
        say_and_tell(f"tenantry: portal and API at {plane.api_url}/")
        say_and_tell(f"tenantry: admin password in {settings.data_dir / 'admin-password'}, "
                     f"API token in {settings.data_dir / 'admin-token'} (both mode 0600)")
        say_and_tell(f"tenantry: clients trust {settings.data_dir / 'ca.pem'}; "
                     f"platforms at https://NAME.ISV.{settings.domain}:{settings.ingress_port}/")
        say_and_tell("tenantry: running; Ctrl-C stops everything")
        manager.ready(f"running: portal and API at {plane.api_url}/")
        plane.turned_at = time.monotonic()
        manager.start_watchdog(lambda: time.monotonic() if plane.stopping.is_set()
                               else plane.turned_at, WATCH_STALL)
        tasks = []
        if demo:
            from tenantry.cli.client import Client
            from tenantry.cli.demo import run_demo

            tasks.append(("the demo", lambda: run_demo(Client.local(settings.data_dir),
                                                       plane.stopping, plane.say)))
        threading.Thread(target=plane.after_start, args=(tasks,), name="after-start",
                         daemon=True).start()
        plane.watch()
    except Unavailable:
        # Ctrl-C while a part was still starting (an enrolled agent serves the platforms
        # before the API answers, so a person may well stop then): a clean stop, not an error.
        if not stop_requested:
            raise
    finally:
        say("tenantry: stopping ...")
        manager.stopping()
        plane.shutdown()
        say("tenantry: stopped")


def stop_signals() -> list[signal.Signals]:
    """Ctrl-C, a service manager's stop, and a closed terminal: the same clean stop (SIGHUP's
    default would end `up` at once and leave the host's processes to its children's fate),
    unless SIGHUP is ignored, as under `nohup`, where a closed terminal must stop nothing."""
    wanted = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        wanted.append(signal.SIGHUP)
    return wanted


def say(line: str) -> None:
    """One progress line on stderr, never wrapped nor read as markup (it holds paths)."""
    err.print(line, highlight=False, markup=False, soft_wrap=True)


@handle_errors
def serve_api(data_dir: Annotated[Path, typer.Option()],
              listen: Annotated[str, typer.Option()] = "127.0.0.1:8080",
              agent_tls_listen: Annotated[str | None, typer.Option()] = None,
              listen_fd: Annotated[int | None, typer.Option()] = None,
              agent_tls_fd: Annotated[int | None, typer.Option()] = None) -> None:
    """Internal: the API and portal server that `up` runs (and its agent TLS listener).

    `up` binds the listening sockets itself and hands them down (`--listen-fd`,
    `--agent-tls-fd`): its API processes then share them, and a connection made while one
    of them restarts waits in the socket's queue instead of being refused."""
    import asyncio
    import gc
    import socket

    import uvicorn
    import uvloop

    from tenantry.api.agent_tls import ssl_options
    from tenantry.api.app import create_app
    from tenantry.core.runtime import make_runtime
    from tenantry.platforms.contract import KEEP_ALIVE

    host, port = parse_listen(listen)
    settings = load_settings(data_dir=data_dir, listen=listen, agent_tls_listen=agent_tls_listen)
    delays.delay("api.start")
    # A connection kept for each thread that may hold one: beyond the ones it keeps, the
    # pool opens a connection for a call and closes it after (a new PostgreSQL backend each
    # time; 2 % of the API's CPU at 300 hosts with 10 kept, and at 1,000 hosts with 20 kept
    # about 30 new backends a second, a tenth of a core): the routes run on anyio's 40
    # threads. (With the worker's, well under the store's max_connections of 100.)
    runtime = make_runtime(settings, pool_size=40)
    app = create_app(runtime)
    configs = [uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                              timeout_keep_alive=KEEP_ALIVE)]
    if settings.agent_tls_listen:
        tls_host, tls_port = parse_listen(settings.agent_tls_listen, field="agent_tls_listen")
        configs.append(uvicorn.Config(app, host=tls_host, port=tls_port, log_level="warning",
                                      access_log=False, timeout_keep_alive=KEEP_ALIVE,
                                      **ssl_options(runtime, tls_host)))

    draining = threading.Event()
    app.state.draining = draining  # agents' long polls end at once (GenerationWatch)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            draining.set()
            super().handle_exit(sig, frame)

    inherited = [socket.socket(fileno=fd) if fd is not None else None
                 for fd in (listen_fd, agent_tls_fd)][:len(configs)]

    async def serve() -> None:
        await asyncio.gather(*(Server(config).serve([sock] if sock else None)
                               for config, sock in zip(configs, inherited, strict=True)))

    # What start-up made lives as long as the process: out of the collector's sight, a full
    # collection (which a request of 10,000 usage events triggers) walks only what requests
    # made since.
    gc.freeze()
    # A young generation of 50,000 objects, not 700; a full collection after 100 of the
    # middle one's, not 10. At 1,000 hosts (bench/fleet.py) the API made a full collection
    # every 5-10 s, each stopping every request for 0.2-0.3 s (288,000 objects walked to
    # free fewer than 300; the agents' long polls keep thousands of objects alive for a
    # minute): 69 in a run, and 18 s in collections of 10 ms or more. With these, the next
    # run made no full collection, and its 13 collections of 10 ms or more took 1.1 s in
    # all; heartbeat p99 went from 1.07 s to 0.41 s. Garbage in a cycle lives longer before
    # it is freed (the API's memory at the end: 199 MiB, against 231 MiB before).
    gc.set_threshold(50_000, 20, 100)
    # libuv's loop (uvloop) and httptools' parser (uvicorn takes it when installed), both in
    # C: at 1,000 hosts (bench/fleet.py) the pure-Python loop's socket writes alone were a
    # tenth of the API's busy time (py-spy), and h11 parsed every request in Python
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve())


@handle_errors
def serve_worker(data_dir: Annotated[Path, typer.Option()]) -> None:
    """Internal: the job worker that `up` runs."""
    from tenantry.cli.worker import run_worker, threads
    from tenantry.core.runtime import make_runtime

    configure_logging()
    settings = load_settings(data_dir=data_dir)
    delays.delay("worker.start")
    asyncio.run(run_worker(make_runtime(settings, pool_size=threads())))
