"""How the monitoring programs run: argv, ports, files and data under one root.

Every program listens on loopback on ports tenantry chose, reads config under `root`, and
keeps data there: on a systemd host, Debian starts its own copies on the default ports (9090,
9093, 9100, 9115, 9187), which tenantry neither uses nor disturbs. The specs are the agent's
`ProgramSpec`, so supervisord (or systemd) supervises them like any other program.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tenantry.agent.services import ProgramSpec
from tenantry.core.errors import Unavailable

BINARIES = {
    "prometheus": "prometheus",
    "alertmanager": "prometheus-alertmanager",
    "node_exporter": "prometheus-node-exporter",
    "blackbox_exporter": "prometheus-blackbox-exporter",
    "postgres_exporter": "prometheus-postgres-exporter",
}


def binary(program: str) -> str:
    name = BINARIES[program]
    return shutil.which(name) or f"/usr/bin/{name}"


@dataclass(frozen=True)
class StackPorts:
    prometheus: int
    alertmanager: int
    node_exporter: int
    blackbox_exporter: int
    postgres_exporter: int


@dataclass(frozen=True)
class StackLayout:
    """Files under `root`; `prepare()` creates the directories."""

    root: Path

    @property
    def prometheus_yml(self) -> Path:
        return self.root / "prometheus.yml"

    @property
    def rules_dir(self) -> Path:
        return self.root / "rules"

    @property
    def alertmanager_yml(self) -> Path:
        return self.root / "alertmanager.yml"

    @property
    def blackbox_yml(self) -> Path:
        return self.root / "blackbox.yml"

    @property
    def sd_token_file(self) -> Path:
        """Prometheus's bearer token for the control plane's SD endpoints."""
        return self.root / "secrets" / "sd-token"

    @property
    def webhook_token_file(self) -> Path:
        """Alertmanager's bearer token for tenantry's webhook."""
        return self.root / "secrets" / "webhook-token"

    def data(self, program: str) -> Path:
        return self.root / "data" / program

    def log(self, program: str) -> Path:
        return self.root / "log" / f"{program}.log"

    def prepare(self) -> None:
        for d in (self.rules_dir, self.root / "secrets", self.root / "log",
                  *(self.data(p) for p in ("prometheus", "alertmanager", "textfile"))):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "secrets", 0o700)


def write_if_changed(path: Path, text: str, *, mode: int = 0o644) -> bool:
    """Write atomically (rename), only when the content differs; True when it changed, so
    callers reload only then."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _listen(host: str, port: int) -> str:
    return f"--web.listen-address={host}:{port}"


def programs(layout: StackLayout, ports: StackPorts, *, retention: str = "15d",
             postgres_dsns: Sequence[str] = (), host: str = "127.0.0.1",
             name_prefix: str = "mon-") -> list[ProgramSpec]:
    """The stack's programs. The postgres exporter runs only when there are clusters to
    watch: one exporter for all of a host's clusters (a comma-separated DATA_SOURCE_NAME;
    each cluster's series carry a `server` label), far cheaper than one per platform."""
    specs = [
        ProgramSpec(f"{name_prefix}prometheus", (
            binary("prometheus"),
            f"--config.file={layout.prometheus_yml}",
            f"--storage.tsdb.path={layout.data('prometheus')}",
            f"--storage.tsdb.retention.time={retention}",
            _listen(host, ports.prometheus),
            "--web.enable-lifecycle",
            # Firing alerts are re-sent this often: an Alertmanager that restarted knows them
            # again within seconds (the default is a minute).
            "--rules.alert.resend-delay=5s",
        ), log_file=str(layout.log("prometheus"))),
        ProgramSpec(f"{name_prefix}alertmanager", (
            binary("alertmanager"),
            f"--config.file={layout.alertmanager_yml}",
            f"--storage.path={layout.data('alertmanager')}",
            _listen(host, ports.alertmanager),
            # Empty: no gossip listener (it would take 0.0.0.0:9094, the system copy's port).
            "--cluster.listen-address=",
        ), log_file=str(layout.log("alertmanager"))),
        node_exporter(f"{name_prefix}node-exporter", host=host, port=ports.node_exporter,
                      textfile_dir=layout.data("textfile"),
                      log_file=str(layout.log("node_exporter"))),
        ProgramSpec(f"{name_prefix}blackbox-exporter", (
            binary("blackbox_exporter"),
            f"--config.file={layout.blackbox_yml}",
            _listen(host, ports.blackbox_exporter),
        ), log_file=str(layout.log("blackbox_exporter"))),
    ]
    if postgres_dsns:
        specs.append(postgres_exporter(f"{name_prefix}postgres-exporter", host=host,
                                       port=ports.postgres_exporter, dsns=postgres_dsns,
                                       log_file=str(layout.log("postgres_exporter"))))
    return specs


def node_exporter(name: str, *, host: str, port: int, textfile_dir: Path | None = None,
                  log_file: str | None = None) -> ProgramSpec:
    argv = [binary("node_exporter"), _listen(host, port)]
    if textfile_dir is not None:
        argv.append(f"--collector.textfile.directory={textfile_dir}")
    return ProgramSpec(name, tuple(argv), log_file=log_file)


POSTGRES_QUERIES = Path(__file__).with_name("postgres_queries.yaml")


def postgres_exporter(name: str, *, host: str, port: int, dsns: Sequence[str],
                      log_file: str | None = None) -> ProgramSpec:
    """One exporter for several clusters. A DSN must not hold a comma (the separator), and
    one that does not answer costs its scrape about a second (0.11 retries, one DSN after
    the other): give it only clusters that run."""
    return ProgramSpec(name, (
        binary("postgres_exporter"),
        _listen(host, port),
        # 0.11's new-style collectors label nothing by server: with two DSNs their
        # series collide and the whole /metrics answers 500 (checked on Debian 12).
        "--no-collector.bgwriter",
        "--no-collector.database",
        # Only what the checks read: ~8 series a cluster instead of ~500, for the exporter
        # to query and Prometheus to ingest every scrape (see the file).
        "--disable-default-metrics",
        "--disable-settings-metrics",
        f"--extend.query-path={POSTGRES_QUERIES}",
    ), environment={"DATA_SOURCE_NAME": ",".join(dsns)}, log_file=log_file)


def reload(url: str, *, timeout: float = 10) -> None:
    """POST /-/reload (Prometheus and Alertmanager with lifecycle enabled; blackbox too).
    A config the program refuses raises Unavailable with its message; the old config stays
    in force."""
    try:
        r = httpx.post(f"{url.rstrip('/')}/-/reload", timeout=timeout)
    except httpx.HTTPError as e:
        raise Unavailable(f"reload {url}: {e}") from e
    if r.status_code != 200:
        raise Unavailable(f"reload {url}: {r.status_code} {r.text.strip()}")


def ready(url: str, *, timeout: float = 2) -> bool:
    """GET /-/ready: 200 once Prometheus has replayed its WAL (Alertmanager: config loaded)."""
    try:
        return httpx.get(f"{url.rstrip('/')}/-/ready", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_ready(url: str, *, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready(url):
        if time.monotonic() > deadline:
            raise Unavailable(f"{url} not ready after {timeout:g} s")
        time.sleep(0.2)
