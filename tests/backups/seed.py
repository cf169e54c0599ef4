"""A store with what a platform row needs: ISV `bms` (id i1), its app and release 1.0.0 (r1),
and region `local` (g1)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from tenantry.platforms.models import App, Isv, Region, Release
from tests.conftest import store_runtime


@contextlib.contextmanager
def seeded_store(prefix: str) -> Iterator[Any]:
    with store_runtime(prefix) as runtime:
        with runtime.sessions() as session:
            isv = Isv(id="i1", name="bms")
            app = App(id="a1", isv=isv, name="bodyshop")
            session.add_all([isv, app, Region(id="g1", name="local"), Release(
                id="r1", app=app, version="1.0.0", digest="sha256:" + "ab" * 32,
                manifest={"name": "bodyshop", "version": "1.0.0", "processes": {"web": ["x"]},
                          "health_path": "/health"})])
            session.commit()
        yield runtime
