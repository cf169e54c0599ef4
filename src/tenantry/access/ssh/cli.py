"""`tenantry ssh cert|revoke|list`: short-lived SSH certificates for your own key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from tenantry.cli.client import Client
from tenantry.cli.options import DataDirOpt, JsonOpt
from tenantry.cli.output import emit_json, err, handle_errors, show
from tenantry.core.errors import InvalidInput

app = typer.Typer(help="SSH certificates for operators.", no_args_is_help=True)


_TTL = re.compile(r"^(\d+)([smh]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}
CERT_COLUMNS = ["serial", "username", "host", "principals", "reason", "valid_before",
                "revoked_at"]


def parse_ttl(text: str) -> int:
    """`15m`, `900`, `900s`, `1h` → seconds."""
    match = _TTL.fullmatch(text.strip())
    if not match or int(match[1]) == 0:
        raise InvalidInput("ttl must look like 15m, 900s or 1h", field="ttl")
    return int(match[1]) * _UNITS[match[2]]


def default_key() -> Path:
    ssh = Path.home() / ".ssh"
    for name in ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"):
        if (ssh / name).exists():
            return ssh / name
    return ssh / "id_ed25519.pub"


def cert_path(key: Path) -> Path:
    """Where ssh looks for a key's certificate: `id_ed25519.pub` → `id_ed25519-cert.pub`."""
    stem = key.name.removesuffix(".pub")
    return key.with_name(f"{stem}-cert.pub")


@app.command("cert")
@handle_errors
def cert(host: str,
         reason: Annotated[str, typer.Option(help="Why you need the host (audited).")],
         ttl: Annotated[str, typer.Option(help="Validity: 15m at most (1h for admins).")]
         = "15m",
         key: Annotated[Path | None, typer.Option(
             help="Your public key (default ~/.ssh/id_ed25519.pub).")] = None,
         out: Annotated[Path | None, typer.Option(
             help="Where to write the certificate (default: next to the key).")] = None,
         json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Get a certificate for your own key, valid for minutes on one host."""
    key = key or default_key()
    if not key.exists():
        raise InvalidInput(f"no public key at {key}: pass --key", field="key")
    issued = Client.from_env(data_dir).post("/ssh/certs", {
        "host": host, "public_key": key.read_text().strip(), "reason": reason,
        "ttl_seconds": parse_ttl(ttl)})
    target = out or cert_path(key)
    target.write_text(issued["certificate"] + "\n")
    issued["path"] = str(target)
    if json_:
        emit_json(issued)
        return
    err.print(f"certificate {issued['serial']} for {', '.join(issued['principals'])}, valid "
              f"until {issued['valid_before']}, written to {target}\n"
              f"log in with: ssh {issued['login']}@{host}")


@app.command("revoke")
@handle_errors
def revoke(serial: int, json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Revoke a certificate; hosts refuse it within a minute."""
    show(Client.from_env(data_dir).post(f"/ssh/certs/{serial}/revoke"), json_, CERT_COLUMNS)


@app.command("list")
@handle_errors
def list_(all_: Annotated[bool, typer.Option("--all", help="Expired and revoked too.")]
          = False, json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """List certificates you may see (valid ones unless --all)."""
    show(Client.from_env(data_dir).get("/ssh/certs", all="true" if all_ else None), json_,
         CERT_COLUMNS)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="ssh")
