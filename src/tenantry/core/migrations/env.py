"""Alembic environment: the connection (and, to autogenerate, every table) is handed in by
tenantry.core.migrate."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
metadata = context.config.attributes.get("metadata")  # only autogenerate needs the tables


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """procrastinate manages its own tables; autogenerate must never touch them."""
    return not (type_ == "table" and name is not None and name.startswith("procrastinate_"))


context.configure(connection=connection, target_metadata=metadata, compare_type=True,
                  include_name=include_name)
with context.begin_transaction():
    context.run_migrations()
