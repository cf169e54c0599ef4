"""Bring the control-plane schema up to date: our tables (Alembic) and procrastinate's."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK = 7261001  # an advisory lock id: two processes migrating at once take turns


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        exists = conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar()
        if exists is None:
            from procrastinate.schema import SchemaManager

            # Through the driver itself: the schema's '%' signs are not placeholders.
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.execute(SchemaManager.get_schema())


def autogenerate(engine: Engine, message: str, metadata: MetaData) -> None:
    """Developer helper: write a new revision from the models (`tenantry.app.metadata()`)."""
    with engine.begin() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        config.attributes["metadata"] = metadata
        command.revision(config, message=message, autogenerate=True)
