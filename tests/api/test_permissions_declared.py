"""Every route of the app, API and portal, declares the permission it needs.

The app is built by its factory on a store it never connects to: no server is needed. A
route that declares nothing fails `test_every_route_declares_a_permission` by name, and
`REVIEWED` below is the table a reviewer signs: any route that is more than a read-only
view (it changes something, or needs more than `view`, or needs less) is listed with its
permission. docs/permissions.md is generated from the same declarations and checked here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from tenantry.access.principal import ROLES, Principal
from tenantry.api.deps import ACTIONS, RoutePermission, route_permissions
from tenantry.core.errors import NotAllowed

DOC = Path(__file__).resolve().parents[2] / "docs" / "permissions.md"
WRITE_DOCS = "TENANTRY_WRITE_DOCS"

HOW_TO_DECLARE = """\
these routes declare no permission:
{routes}
Declare one, from tenantry.api.deps (portal pages: tenantry.portal.web):
  - take the principal as ViewerDep, OperatorDep, AdminDep, ProviderDep, ProviderAdminDep or
    AuthenticatedDep (any signed-in person, acting on their own account) instead of
    PrincipalDep: the alias authenticates AND answers 403 to a role without the permission;
    portal pages: PageViewer, PageOperator, PageAdmin, PageAccount;
  - a route open to anyone: @router.get(..., dependencies=[Public]);
  - a route for host agents: take the host as HostIdDep (its id), or as HostDep with a
    session (tenantry.platforms.agent_api, tenantry.access.ssh.api).
Declare what the service needs (the action it passes to scoped()/require()); row scoping
stays in the service. Then add the route to REVIEWED in tests/api/test_permissions_declared.py
(unless it is a GET declared "view") and regenerate docs/permissions.md:
  {write}=1 .venv/bin/pytest tests/api/test_permissions_declared.py"""

# (method, path) → permission, for every route that is not a GET declared "view".
REVIEWED: dict[tuple[str, str], str] = {
    # public: no credential; agent: a host's agent token, never a person's
    ("GET", "/api/v1/health"): "public",
    ("GET", "/api/v1/openapi.json"): "public",
    ("GET", "/api/v1/docs"): "public",
    ("GET", "/docs/oauth2-redirect"): "public",
    ("GET", "/static/{path}"): "public",
    ("POST", "/api/v1/auth/login"): "public",
    ("GET", "/api/v1/ssh/ca.pub"): "public",
    ("POST", "/api/v1/agent/enroll"): "public",  # the one-time enroll token is in the body
    ("GET", "/api/v1/agent/desired"): "agent",
    ("POST", "/api/v1/agent/report"): "agent",
    ("GET", "/api/v1/agent/bundles/{digest}"): "agent",
    ("GET", "/api/v1/ssh/agent/config"): "agent",
    ("POST", "/api/v1/ssh/agent/events"): "agent",
    ("GET", "/api/v1/ssh/krl"): "agent",
    ("GET", "/login"): "public",
    ("POST", "/login"): "public",
    ("POST", "/logout"): "public",
    # one's own account and tokens
    ("GET", "/api/v1/me"): "authenticated",
    ("POST", "/api/v1/me/password"): "authenticated",
    ("POST", "/api/v1/me/totp"): "authenticated",
    ("POST", "/api/v1/me/totp/confirm"): "authenticated",
    ("GET", "/api/v1/tokens"): "authenticated",
    ("POST", "/api/v1/tokens"): "authenticated",
    ("POST", "/api/v1/tokens/{token_id}/revoke"): "authenticated",
    ("GET", "/account"): "authenticated",
    ("GET", "/account/setup"): "authenticated",
    ("POST", "/account/password"): "authenticated",
    ("POST", "/account/totp"): "authenticated",
    # the provider's own business
    ("POST", "/api/v1/isvs"): "provider+admin",
    ("GET", "/api/v1/hosts"): "provider",
    ("POST", "/api/v1/hosts/enroll-tokens"): "provider+admin",
    ("GET", "/api/v1/audit/verify"): "provider+admin",
    ("POST", "/api/v1/audit/ship"): "provider+admin",
    # people and the ISV's own set-up
    ("GET", "/api/v1/users"): "admin",
    ("POST", "/api/v1/users"): "admin",
    ("POST", "/api/v1/users/{username}/disable"): "admin",
    ("POST", "/api/v1/users/{username}/role"): "admin",
    ("GET", "/users"): "admin",
    ("POST", "/users"): "admin",
    ("POST", "/users/{username}/disable"): "admin",
    ("POST", "/users/{username}/role"): "admin",
    ("POST", "/api/v1/isvs/{isv}/tenants"): "admin",
    ("POST", "/api/v1/isvs/{isv}/certificates"): "admin",
    ("DELETE", "/api/v1/isvs/{isv}/certificates/{domain}"): "admin",
    # running platforms
    ("POST", "/api/v1/isvs/{isv}/releases"): "operate",
    ("POST", "/api/v1/isvs/{isv}/platforms"): "operate",
    ("POST", "/platforms/new"): "operate",
    **{(method, f"/api/v1/platforms/{ref}{suffix}"): "operate"
       for ref in ("{ref}", "{isv}/{name}")
       for method, suffix in (("POST", "/upgrade"), ("POST", "/rollback"), ("POST", "/stop"),
                              ("POST", "/start"), ("DELETE", ""))},
    # ISV admins grant; the service refuses provider roles (they may not grant themselves)
    ("POST", "/api/v1/hosts/{host}/revoke"): "provider+admin",
    ("POST", "/api/v1/support-grants"): "admin",
    ("POST", "/api/v1/support-grants/{grant_id}/revoke"): "admin",
    # monitoring: the stack's programs carry tokens `up` gave them, never a person's
    ("GET", "/api/v1/monitoring/sd/{job}"): "monitoring-stack",
    ("POST", "/api/v1/monitoring/alertmanager"): "monitoring-stack",
    ("PUT", "/api/v1/thresholds"): "admin",
    ("DELETE", "/api/v1/thresholds"): "admin",
    ("POST", "/api/v1/contacts"): "admin",
    ("DELETE", "/api/v1/contacts/{contact_id}"): "admin",
    ("POST", "/api/v1/maintenance"): "operate",
    ("POST", "/api/v1/maintenance/{maintenance_id}/cancel"): "operate",
    ("POST", "/monitoring/check"): "admin",
    ("POST", "/platforms/{platform_id}/backups/restore"): "operate",
    # backups: running one is an operator's; the ISV's passphrases are its admins' only
    ("POST", "/api/v1/platforms/{isv}/{name}/backups"): "operate",
    ("POST", "/api/v1/platforms/{isv}/{name}/restore"): "operate",
    ("POST", "/api/v1/platforms/{isv}/{name}/drills"): "operate",
    ("POST", "/api/v1/platforms/{isv}/{name}/clone"): "operate",
    ("POST", "/api/v1/platforms/{isv}/{name}/recover"): "operate",
    ("PUT", "/api/v1/platforms/{isv}/{name}/backups/schedule"): "operate",
    ("GET", "/api/v1/isvs/{isv}/backup-keys"): "admin",  # a threshold from the check's page
    ("POST", "/platforms/{platform_id}/support"): "admin",
    ("POST", "/support/{grant_id}/end"): "admin",  # provider admins too: the service decides
    ("GET", "/support"): "provider",  # every ISV's live grants: the provider's own list
    ("POST", "/api/v1/ssh/certs"): "operate",  # viewers never log in to hosts
    # the certificate's owner may revoke it, and admins: the service decides which
    ("POST", "/api/v1/ssh/certs/{serial}/revoke"): "view",
    # billing: the ISV's app sends usage with a usage token (good for nothing else; not a
    # person, so not in this table) or a person with operate on the platform; the price
    # list, subscriptions and invoice runs are the provider's
    ("POST", "/api/v1/usage"): "operate",
    ("POST", "/api/v1/platforms/{isv}/{name}/usage-tokens"): "admin",
    ("GET", "/api/v1/platforms/{isv}/{name}/usage-tokens"): "admin",
    ("POST", "/api/v1/platforms/{isv}/{name}/usage-tokens/{token_id}/revoke"): "admin",
    ("POST", "/api/v1/plans"): "provider+admin",
    ("POST", "/api/v1/isvs/{isv}/subscriptions"): "provider+admin",
    ("POST", "/api/v1/invoices/run"): "provider+admin",
    ("POST", "/billing/run"): "admin",  # the service wants a provider admin
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    from tenantry.api.app import create_app
    from tenantry.core.config import load_settings
    from tenantry.core.crypto import MasterKey, SecretBox
    from tenantry.core.runtime import Runtime

    engine = create_engine("postgresql+psycopg://nobody@/never?host=/nonexistent")
    runtime = Runtime(settings=load_settings(data_dir=tmp_path_factory.mktemp("data")),
                      engine=engine, sessions=sessionmaker(engine),
                      secrets=SecretBox(MasterKey.generate()))
    return create_app(runtime)


@pytest.fixture(scope="module")
def routes(app: FastAPI) -> list[RoutePermission]:
    return route_permissions(app)


def test_every_route_declares_a_permission(routes: list[RoutePermission]) -> None:
    assert len(routes) > 70
    undeclared = [r for r in routes if r.permission is None]
    assert not undeclared, HOW_TO_DECLARE.format(
        write=WRITE_DOCS,
        routes="\n".join(f"  {r.method} {r.path}"
                         + (f" (declares {' and '.join(r.declared)}: choose one)"
                            if r.declared else "") for r in undeclared))


def test_declarations_match_the_reviewed_table(routes: list[RoutePermission]) -> None:
    declared = {(r.method, r.path): r.permission for r in routes if r.permission is not None}
    unreviewed = {k: p for k, p in declared.items()
                  if k not in REVIEWED and (k[0], p) != ("GET", "view")}
    assert not unreviewed, (
        "add these routes, with their permission, to REVIEWED in "
        f"tests/api/test_permissions_declared.py: {sorted(unreviewed.items())}")
    changed = {k: (want, declared.get(k)) for k, want in REVIEWED.items()
               if declared.get(k) != want}
    assert not changed, f"(method, path): (reviewed, declared now): {changed}"


def test_openapi_shows_each_operations_permission(app: FastAPI,
                                                  routes: list[RoutePermission]) -> None:
    declared = {(r.method.lower(), r.path): r.permission for r in routes}
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            if declared[(method, path)] is not None:
                assert operation["x-permission"] == declared[(method, path)], (method, path)


def _may(role: str, action: str) -> bool:
    try:
        Principal(user_id="u", username="u", role=role).require(action)
    except NotAllowed:
        return False
    return True


def permissions_doc(routes: list[RoutePermission]) -> str:
    roles = sorted(ROLES)
    lines = [
        "# Permissions",
        "",
        "What each API route and portal page requires. Generated from the routes' own",
        "declarations (`tenantry.api.deps.route_permissions`); "
        "`tests/api/test_permissions_declared.py`",
        f"fails when it is out of date, and `{WRITE_DOCS}=1` makes that test rewrite it.",
        "The live API shows the same as `x-permission` on each operation of",
        "`/api/v1/openapi.json`.",
        "",
        "A route refuses (403) a caller whose role lacks the permission. Which objects the",
        "caller may then see or change is decided by the services' query layer: an ISV's",
        "people see only their own ISV, and another ISV's object answers 404.",
        "",
        "- **public**: no credential.",
        "- **agent**: a host agent's token (from enrollment); a person's token gets 401.",
        "- **authenticated**: any signed-in person, acting on their own account.",
        "- **view**, **operate**, **admin**, **provider**: what each role may do",
        "  (`a+b` needs both):",
        "",
        "| role | " + " | ".join(ACTIONS) + " |",
        "| --- |" + " --- |" * len(ACTIONS),
        *(f"| {role} | " + " | ".join("yes" if _may(role, a) else "" for a in ACTIONS) + " |"
          for role in roles),
        "",
        "A token bound to one platform may not `admin` or `provider`, whatever its role.",
    ]
    for title, api in (("API", True), ("Portal", False)):
        lines += ["", f"## {title}", "", "| method | route | permission |",
                  "| --- | --- | --- |"]
        lines += [f"| {r.method} | `{r.path}` | {r.permission} |" for r in routes
                  if r.permission is not None and r.path.startswith("/api/v1/") == api]
    return "\n".join(lines) + "\n"


def test_docs_permissions_md_is_current(routes: list[RoutePermission]) -> None:
    wanted = permissions_doc(routes)
    if os.environ.get(WRITE_DOCS):
        DOC.write_text(wanted)
    assert DOC.exists() and DOC.read_text() == wanted, (
        f"docs/permissions.md is out of date: {WRITE_DOCS}=1 .venv/bin/pytest "
        "tests/api/test_permissions_declared.py rewrites it")
