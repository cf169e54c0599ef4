"""`tenantry secrets ...` (run on the control-plane machine) and `tenantry cert ...`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer
from pydantic import SecretStr

from tenantry.cli.client import Client
from tenantry.cli.options import DataDirOpt, JsonOpt
from tenantry.cli.output import emit_json, err, handle_errors, show
from tenantry.core.errors import InvalidInput

app = typer.Typer(help="Secrets at rest and the master key.", no_args_is_help=True)
cert_app = typer.Typer(help="Certificates for an ISV's own domains.", no_args_is_help=True)

CERT_COLUMNS = ["domain", "issuer", "not_after", "days_left", "fingerprint"]


def _new_key(path: Path | None) -> SecretStr | None:
    from tenantry.core.crypto import read_private

    if path is not None:
        return read_private(path, field="new_key_file")
    env = os.environ.get("TENANTRY_NEW_MASTER_KEY")
    return SecretStr(env.strip()) if env else None


@app.command("rotate-master")
@handle_errors
def rotate_master(
        new_key_file: Annotated[Path | None, typer.Option(
            help="The new key (mode 0600); else $TENANTRY_NEW_MASTER_KEY; else a new random "
                 "key (key-file setups only).")] = None,
        json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Re-wrap every data key under a new master key, without stopping anything.

    Runs on the control-plane machine, against the store of the data dir (which must be
    running). With DATA_DIR/master.key the file is replaced at the end; with
    $TENANTRY_MASTER_KEY, set it to the new key and restart tenantry afterwards.
    """
    from tenantry.access.keys.service import rotate_master as rotate
    from tenantry.core.config import load_settings
    from tenantry.core.crypto import MasterKey
    from tenantry.core.runtime import make_runtime

    settings = load_settings(data_dir=data_dir)
    new_key = _new_key(new_key_file)
    if new_key is None:
        if settings.master_key is not None:
            raise InvalidInput("the master key comes from TENANTRY_MASTER_KEY: give the new "
                               "one with --new-key-file or TENANTRY_NEW_MASTER_KEY",
                               field="new_key_file")
        new_key = MasterKey.generate()
    runtime = make_runtime(settings, pool_size=1)
    try:
        result = rotate(sessions=runtime.sessions, box=runtime.secrets, new_key=new_key)
    finally:
        runtime.engine.dispose()
    if json_:
        emit_json(result.model_dump())
        return
    err.print(f"re-wrapped {result.data_keys} data keys: {result.old_master_key_id} -> "
              f"{result.new_master_key_id}" + (f"; converted {result.converted} older secrets"
                                                if result.converted else ""))
    if result.key_file:
        err.print(f"{result.key_file} now holds the new key"
                  + (f"; delete {new_key_file} or keep it offline" if new_key_file else ""))
    else:
        err.print("now set TENANTRY_MASTER_KEY to the new key and restart tenantry; until "
                  "then running processes work from their cached data keys")


@app.command("status")
@handle_errors
def status(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """The master key in use and how many data keys each master key wraps."""
    from tenantry.access.keys.service import data_key_summary
    from tenantry.core.config import load_settings
    from tenantry.core.runtime import make_runtime

    runtime = make_runtime(load_settings(data_dir=data_dir), pool_size=1)
    try:
        with runtime.sessions() as session:
            rows = data_key_summary(session)
        current = runtime.secrets.master.key_id
    finally:
        runtime.engine.dispose()
    for row in rows:
        row["current"] = "yes" if row["master_key_id"] == current else "NO"
    show(rows, json_, ["master_key_id", "data_keys", "current"])


@cert_app.command("upload")
@handle_errors
def cert_upload(isv: str, domain: str,
                cert: Annotated[Path, typer.Option(
                    "--cert", help="PEM: the site's certificate, then each issuer.")],
                key: Annotated[Path, typer.Option("--key", help="PEM: its private key.")],
                json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Upload (or replace) the certificate for one of an ISV's domains; it is checked first."""
    body = {"domain": domain, "certificate_pem": cert.read_text(), "key_pem": key.read_text()}
    show(Client.from_env(data_dir).post(f"/isvs/{quote(isv, safe='')}/certificates", body), json_,
         CERT_COLUMNS)


@cert_app.command("list")
@handle_errors
def cert_list(isv: str, json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """An ISV's certificates, with the days each has left."""
    show(Client.from_env(data_dir).get(f"/isvs/{quote(isv, safe='')}/certificates"), json_,
         CERT_COLUMNS)


@cert_app.command("delete")
@handle_errors
def cert_delete(isv: str, domain: str, data_dir: DataDirOpt = None) -> None:
    """Forget the certificate of a domain."""
    Client.from_env(data_dir).delete(
        f"/isvs/{quote(isv, safe='')}/certificates/{quote(domain, safe='')}")
    err.print(f"deleted the certificate for {domain}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="secrets")
    root.add_typer(cert_app, name="cert")
