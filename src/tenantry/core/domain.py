"""A domain: a package with the common anatomy, named once in the composition root.

Every domain package has the same files (DESIGN.md, "Layout"):

    models.py   its tables              api.py     its API router (`router`)
    schemas.py  pydantic in/out         pages.py   its portal pages (`router`)
    service.py  the use cases           cli.py     `register(root)`: its Typer groups
    jobs.py     `KINDS` (job kinds) and `PERIODIC` (work a worker repeats)

`tenantry.app.DOMAINS` lists the domains; the API, the portal, the CLI, the worker and the
migrations read that list and load only the parts they serve, so the CLI never imports
FastAPI and nothing is wired by an import's side effect.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FunctionType, ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI loads this module: it must not pull in FastAPI or the store
    from fastapi import APIRouter
    from typer import Typer

    from tenantry.core.jobs import JobKind, Periodic

PARTS = ("models", "schemas", "service", "api", "pages", "cli", "jobs")


@dataclass(frozen=True)
class Domain:
    package: str  # "tenantry.platforms"

    @property
    def name(self) -> str:
        return self.package.removeprefix("tenantry.")

    def part(self, name: str) -> ModuleType:
        assert name in PARTS, name
        return importlib.import_module(f"{self.package}.{name}")

    def _attribute(self, part: str, attribute: str, kind: type | tuple[type, ...]) -> Any:
        value = getattr(self.part(part), attribute, None)
        if not isinstance(value, kind):
            raise TypeError(f"{self.package}.{part}.{attribute} must be a {kind}, "
                            f"not {type(value).__name__}")
        return value

    def router(self) -> APIRouter:
        from fastapi import APIRouter

        router: APIRouter = self._attribute("api", "router", APIRouter)
        return router

    def pages(self) -> APIRouter:
        from fastapi import APIRouter

        router: APIRouter = self._attribute("pages", "router", APIRouter)
        return router

    def register_cli(self, root: Typer) -> None:
        register: Callable[[Typer], None] = self._attribute("cli", "register", FunctionType)
        register(root)

    def job_kinds(self) -> Sequence[JobKind]:
        kinds: tuple[JobKind, ...] = self._attribute("jobs", "KINDS", tuple)
        return kinds

    def periodic(self) -> Sequence[Periodic]:
        tasks: tuple[Periodic, ...] = self._attribute("jobs", "PERIODIC", tuple)
        return tasks
