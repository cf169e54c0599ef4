"""The `data_keys` table, and a KeyStore for `SecretBox` on it.

Each call runs in a short transaction of its own, apart from the caller's: a data key
created for a use case that then fails is simply unused.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String, Text, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from tenantry.core.crypto import StaleMasterKey, WrappedKey
from tenantry.core.db import Base, utcnow


class DataKey(Base):
    """One data key per organisation (an ISV id, or "provider"), wrapped by the master key."""

    __tablename__ = "data_keys"

    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    org: Mapped[str] = mapped_column(String(20), unique=True)
    wrapped: Mapped[str] = mapped_column(Text)
    master_key_id: Mapped[str] = mapped_column(String(24))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    rotated_at: Mapped[dt.datetime | None]


def _wrapped(row: DataKey) -> WrappedKey:
    return WrappedKey(id=row.id, org=row.org, wrapped=row.wrapped,
                      master_key_id=row.master_key_id)


class SqlKeyStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def __repr__(self) -> str:
        return "SqlKeyStore()"

    def get(self, key_id: str) -> WrappedKey | None:
        with self._sessions() as session:
            row = session.get(DataKey, key_id)
            return _wrapped(row) if row else None

    def for_org(self, org: str) -> WrappedKey | None:
        with self._sessions() as session:
            row = session.scalar(select(DataKey).where(DataKey.org == org))
            return _wrapped(row) if row else None

    def add(self, key: WrappedKey) -> WrappedKey:
        with self._sessions() as session:
            # Serialises with other creators and with a master-key rotation (which takes
            # EXCLUSIVE), so no key is ever wrapped by a master key that was just retired.
            session.execute(text("LOCK TABLE data_keys IN SHARE ROW EXCLUSIVE MODE"))
            other = session.scalar(select(DataKey.master_key_id)
                                   .where(DataKey.master_key_id != key.master_key_id).limit(1))
            if other is not None:
                session.rollback()
                raise StaleMasterKey(other)
            session.execute(insert(DataKey).values(
                id=key.id, org=key.org, wrapped=key.wrapped, master_key_id=key.master_key_id,
            ).on_conflict_do_nothing(index_elements=["org"]))
            row = session.scalar(select(DataKey).where(DataKey.org == key.org))
            assert row is not None
            result = _wrapped(row)
            session.commit()
            return result
