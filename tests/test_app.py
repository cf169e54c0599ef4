"""The composition root and the shape it holds the code to: core imports no domain, every
domain has the same anatomy, and every part a front-end asks for loads with the right type."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import typer
from fastapi import APIRouter

from tenantry import app as composition
from tenantry.core.domain import PARTS, Domain

SRC = Path(composition.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_core_imports_nothing_above_it() -> None:
    offenders = {
        f"{path.relative_to(SRC)} imports {name}"
        for path in (SRC / "core").rglob("*.py")
        for name in _imports(path)
        if name.startswith("tenantry.") and not name.startswith("tenantry.core")
    }
    assert offenders == set()


def test_the_check_would_see_an_import_of_a_domain(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from tenantry.platforms.models import Platform\n")
    assert "tenantry.platforms.models" in _imports(sample)


@pytest.mark.parametrize("domain", composition.DOMAINS, ids=lambda d: d.name)
def test_every_domain_has_the_same_files(domain: Domain) -> None:
    root = SRC / domain.name.replace(".", "/")
    missing = [part for part in PARTS
               if not (root / f"{part}.py").exists() and not (root / part).is_dir()]
    assert missing == []


@pytest.mark.parametrize("domain", composition.DOMAINS, ids=lambda d: d.name)
def test_every_part_loads_with_its_type(domain: Domain) -> None:
    assert isinstance(domain.router(), APIRouter)
    assert isinstance(domain.pages(), APIRouter)
    root = typer.Typer()
    domain.register_cli(root)
    assert root.registered_groups or root.registered_commands
    for part in ("models", "schemas", "service"):
        domain.part(part)
    assert all(kind.steps for kind in domain.job_kinds())
    assert all(task.every > 0 for task in domain.periodic())


def test_the_front_ends_read_the_root() -> None:
    from tenantry.cli.main import build

    names = {g.name for g in build().registered_groups}
    names |= {c.name for c in build().registered_commands}
    assert {"platform", "isv", "host", "job", "events", "user", "token", "audit", "ssh",
            "secrets", "cert", "support", "up", "agent"} <= names
    assert {"create", "upgrade", "rollback", "stop", "start", "destroy"} <= set(
        composition.job_kinds())
    assert {"mark hosts offline", "ship the audit head offsite",
            "warn of expiring certificates"} <= {t.name for t in composition.periodic()}
    tables = set(composition.metadata().tables)
    assert {"platforms", "jobs", "events", "users", "audit_entries", "data_keys"} <= tables


def test_the_cli_loads_neither_fastapi_nor_the_store() -> None:
    """Every command builds the whole Typer root: it must stay light (about 0.5 s)."""
    import subprocess
    import sys

    probe = ("import sys; from tenantry.cli.main import build; build(); "
             "print(sorted(m for m in ('fastapi', 'sqlalchemy', 'jinja2') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
