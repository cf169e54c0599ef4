"""`tenantry user ...` and `tenantry token ...`."""

from __future__ import annotations

from typing import Annotated

import typer

from tenantry.cli.client import Client
from tenantry.cli.options import DataDirOpt, JsonOpt
from tenantry.cli.output import emit_json, err, handle_errors, show

user_app = typer.Typer(help="People and their roles.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens: scoped, expiring, revocable.", no_args_is_help=True)

USER_COLUMNS = ["username", "role", "isv", "disabled", "totp_enabled", "created_at"]
TOKEN_COLUMNS = ["id", "name", "username", "role", "platform_id", "expires_at", "revoked_at"]


@user_app.command("create")
@handle_errors
def user_create(username: str,
                role: Annotated[str, typer.Option(help="provider-admin, provider-operator, "
                                                  "isv-admin, isv-operator or isv-viewer")],
                isv: Annotated[str | None, typer.Option(help="The ISV of an ISV role.")] = None,
                json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Create a user; prints the first password once (it must be changed at login)."""
    created = Client.from_env(data_dir).post("/users", {"username": username, "role": role,
                                                "isv": isv})
    if json_:
        emit_json(created)
        return
    show(created["user"], False, USER_COLUMNS)
    err.print(f"first password (shown once, to be changed at login): {created['password']}")


@user_app.command("list")
@handle_errors
def user_list(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """List the users you manage."""
    show(Client.from_env(data_dir).get("/users"), json_, USER_COLUMNS)


@user_app.command("disable")
@handle_errors
def user_disable(username: str, json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Disable a user and revoke all their tokens."""
    show(Client.from_env(data_dir).post(f"/users/{username}/disable"), json_, USER_COLUMNS)


@user_app.command("role")
@handle_errors
def user_role(username: str, role: str, json_: JsonOpt = False,
              data_dir: DataDirOpt = None) -> None:
    """Give a user another role (on the same side: provider or ISV)."""
    show(Client.from_env(data_dir).post(f"/users/{username}/role", {"role": role}), json_,
         USER_COLUMNS)


@token_app.command("create")
@handle_errors
def token_create(name: str,
                 role: Annotated[str | None, typer.Option(help="At most your own role.")] = None,
                 platform: Annotated[str | None, typer.Option(help="Only this platform "
                                                              "(ISV/NAME or id).")] = None,
                 expires_days: Annotated[int, typer.Option(min=1, max=365)] = 90,
                 json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Create an API token for yourself; prints its secret once."""
    created = Client.from_env(data_dir).post("/tokens", {"name": name, "role": role,
                                                 "platform": platform,
                                                 "expires_days": expires_days})
    if json_:
        emit_json(created)
        return
    show(created["token"], False, TOKEN_COLUMNS)
    print(created["secret"])
    err.print("that is the token (shown once): use it as TENANTRY_TOKEN")


@token_app.command("list")
@handle_errors
def token_list(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """List tokens (yours; an admin also sees their users')."""
    show(Client.from_env(data_dir).get("/tokens"), json_, TOKEN_COLUMNS)


@token_app.command("revoke")
@handle_errors
def token_revoke(token_id: str, json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Revoke a token at once."""
    show(Client.from_env(data_dir).post(f"/tokens/{token_id}/revoke"), json_, TOKEN_COLUMNS)


def register(root: typer.Typer) -> None:
    root.add_typer(user_app, name="user")
    root.add_typer(token_app, name="token")
