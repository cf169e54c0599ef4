"""Apply the numbered SQL migrations in bodyshop/migrations, each in its own transaction.

    python -m bodyshop.migrate        (needs DATABASE_URL)

Applied versions are recorded in `schema_migrations`, so a second run does nothing. A
database migrated by a newer release is left alone: its extra migrations are reported, not
undone, which lets an older release run again after a rollback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg

MIGRATIONS = Path(__file__).parent / "migrations"
LOCK_ID = 0x626F6479  # "body": one migrator at a time


def pending(applied: set[str]) -> list[Path]:
    return [
        p for p in sorted(MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql")) if p.stem not in applied
    ]


def migrate(url: str) -> list[str]:
    done: list[str] = []
    with psycopg.connect(url, connect_timeout=10, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_ID,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        known = {p.stem for p in MIGRATIONS.glob("*.sql")}
        newer = sorted(applied - known)
        if newer:
            print(f"migrate: database has newer migrations {', '.join(newer)}; leaving them")
        for path in pending(applied):
            sql = path.read_text()
            try:
                with conn.transaction():
                    conn.execute(sql.encode())  # no parameters: may hold several statements
                    conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES (%s)", (path.stem,)
                    )
            except psycopg.Error as exc:
                raise RuntimeError(f"migration {path.stem} failed: {exc}".strip()) from exc
            print(f"migrate: applied {path.stem}")
            done.append(path.stem)
    return done


def main() -> int:
    url = os.environ.get("DATABASE_URL")
    if not url:
        print("migrate: DATABASE_URL is not set", file=sys.stderr)
        return 2
    try:
        done = migrate(url)
    except RuntimeError as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"migrate: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    if not done:
        print("migrate: nothing to do")
    return 0


if __name__ == "__main__":
    sys.exit(main())
