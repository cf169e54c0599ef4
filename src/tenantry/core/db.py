"""The control-plane store: SQLAlchemy 2 on PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import DateTime, MetaData, create_engine, event
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import JSON, TypeDecorator

from tenantry.core.errors import InvalidInput

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: DateTime(timezone=True), dict[str, Any]: JSON}


M = TypeVar("M", bound=BaseModel)


class PydanticJSON(TypeDecorator[M], Generic[M]):
    """A JSON column that holds one pydantic model: stored as the model's JSON, read back
    through the model, so a document that does not validate fails where it is read.

    The ORM sees a change only when a *different* model is assigned: edit a deep copy
    (`model_copy(deep=True)`) and assign it back; a model changed in place is not saved.
    """

    impl = JSON
    cache_ok = True
    should_evaluate_none = True  # None is stored as JSON null

    def __init__(self, model: type[M]) -> None:
        super().__init__(none_as_null=False)
        self.model = model

    def process_bind_param(self, value: M | None, dialect: Dialect) -> Any:
        return None if value is None else value.model_dump(mode="json")

    def process_result_value(self, value: Any, dialect: Dialect) -> M | None:
        return None if value is None else self.model.model_validate(value)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def sqlalchemy_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and select the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    engine = create_engine(sqlalchemy_url(url), pool_pre_ping=True, **kwargs)
    event.listen(engine, "before_cursor_execute", _refuse_nul)
    return engine


def _refuse_nul(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
    """PostgreSQL text cannot hold NUL; say so as bad input instead of failing inside."""
    batches = parameters if executemany else [parameters]
    for params in batches:
        values = params.values() if isinstance(params, dict) else (params or ())
        for value in values:
            if isinstance(value, str) and "\x00" in value:
                raise InvalidInput("text may not contain NUL characters")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    session = factory()
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def rowcount(result: object) -> int:
    """Rows an UPDATE, DELETE or INSERT ... ON CONFLICT touched (typed Results hide it)."""
    return int(getattr(result, "rowcount", 0) or 0)
