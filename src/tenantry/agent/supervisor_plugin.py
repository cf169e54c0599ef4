"""An XML-RPC namespace loaded into the agent's supervisord: `tenantry.readProgram(name)`.

supervisord's own way to take in a new or changed program file is `reloadConfig`, which
parses every file of every program again: on a host of 300 platforms (600 programs) about
0.65 s of supervisord's single thread, twice on the way of each new platform to serving
(its database, its app) and once more after. `readProgram` parses the one file
`programs/<name>.conf` and answers what `reloadConfig` would have answered for that name,
so the agent's put and remove cost the same on a full host as on an empty one.

This file runs inside supervisord, under the system's Python (Debian's package), not
tenantry's: it imports only the standard library and supervisor. The agent copies it beside
supervisord's config and names its directory in PYTHONPATH when it starts supervisord
(tenantry.agent.supervisord); on import it takes PYTHONPATH out of supervisord's
environment again, so that no program inherits it. supervisor is not typed: mypy is told to
take its names as they are (pyproject.toml).
"""

from __future__ import annotations

import os
from typing import Any

from supervisor.options import UnhosedConfigParser
from supervisor.states import SupervisorStates
from supervisor.xmlrpc import Faults, RPCError

# What the agent set to import this module; the programs must not inherit it.
if os.environ.get("PYTHONPATH") == os.path.dirname(os.path.abspath(__file__)):
    del os.environ["PYTHONPATH"]


class TenantryNamespace:
    def __init__(self, supervisord: Any, programs: str) -> None:
        self.supervisord = supervisord
        self.programs = programs

    def readProgram(self, name: str) -> list[list[list[str]]]:  # noqa: N802 - XML-RPC name
        """Read programs/<name>.conf alone into supervisord's configuration, as a reread
        would read it (or forget it, when the file is gone).

        @param string name  the program (each is its own group here)
        @return array result  [[added, changed, removed]], as reloadConfig, for this name only
        """
        if self.supervisord.options.mood < SupervisorStates.RUNNING:
            raise RPCError(Faults.SHUTDOWN_STATE)
        if not name or "/" in name or name.startswith("."):
            raise RPCError(Faults.BAD_NAME, name)
        options = self.supervisord.options
        path = os.path.join(self.programs, f"{name}.conf")
        new = None
        if os.path.exists(path):
            parser = UnhosedConfigParser()
            parser.expansions = options.environ_expansions
            try:
                if not parser.read(path):
                    raise ValueError(f"could not read {path}")
                parser.expand_here(os.path.dirname(path))
                groups = options.process_groups_from_parser(parser)
            except Exception as exc:  # what a reread says of a bad file: CANT_REREAD
                raise RPCError(Faults.CANT_REREAD, f"{path}: {exc}") from None
            if [g.name for g in groups] != [name]:
                raise RPCError(Faults.CANT_REREAD, f"{path} does not hold [program:{name}]")
            new = groups[0]
            common = getattr(options.configroot.supervisord, "environment", None) or {}
            for proc in new.process_configs:  # as a reread merges [supervisord] environment
                env = dict(common)
                env.update(proc.environment or {})
                proc.environment = env
        kept = [c for c in options.process_group_configs if c.name != name]
        options.process_group_configs = kept + ([new] if new is not None else [])
        active = self.supervisord.process_groups.get(name)
        added = [name] if new is not None and active is None else []
        changed = [name] if new is not None and active is not None and \
            active.config != new else []
        removed = [name] if new is None and active is not None else []
        return [[added, changed, removed]]


def make_tenantry_rpcinterface(supervisord: Any, **config: str) -> TenantryNamespace:
    return TenantryNamespace(supervisord, config["programs"])
