"""The `data_keys` table as a KeyStore for `SecretBox`.

Each call runs in a short transaction of its own, apart from the caller's: a data key
created for a use case that then fails is simply unused.
"""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from tenantry.access.keys.models import DataKey
from tenantry.core.crypto import StaleMasterKey, WrappedKey


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
