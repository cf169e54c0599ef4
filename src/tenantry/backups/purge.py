"""Repositories of destroyed platforms: kept for a while, then deleted.

Destroying a platform leaves its repository (`<url>/<isv>/<platform id>`: pgBackRest's
archive and backups, restic's files) in the backup store, so that a platform destroyed by
mistake can still be brought back by hand: the ISV's passphrases stay escrowed
(`tenantry backup key`). Once nothing has been written to it for
`TENANTRY_BACKUP_KEEP_DESTROYED_DAYS` (default 30; 0 keeps it for ever), the worker deletes
it, hourly, and says so in a `BACKUP_REPOSITORY_DELETED` event.

A repository is a destroyed platform's when its directory is named like a platform id and
the store has no platform of that id. Nothing else under the URL is touched.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from tenantry.core.config import Settings
from tenantry.core.events import emit
from tenantry.core.jobs import Periodic
from tenantry.core.objectstore import S3ObjectStore, parse_store_url
from tenantry.core.runtime import Runtime
from tenantry.platforms.models import Isv, Platform

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

log = logging.getLogger(__name__)

PLATFORM_ID = re.compile(r"p[0-9a-f]{10}")


@dataclass(frozen=True)
class Repository:
    isv: str
    platform_id: str
    last_write: dt.datetime | None  # None: empty
    objects: int
    size: int  # bytes

    def describe(self) -> str:
        when = self.last_write.strftime("%Y-%m-%d %H:%M UTC") if self.last_write else "never"
        return (f"{self.isv}/{self.platform_id}: {self.objects} objects, "
                f"{self.size / 2**20:.1f} MiB, last written {when}")


class _Directories:
    """Repositories in a directory (the default `DATA_DIR/backups`, or a shared mount)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> Iterator[tuple[str, str]]:
        if not self.root.is_dir():
            return
        for isv in sorted(self.root.iterdir()):
            if isv.is_dir() and not isv.is_symlink():
                for repo in sorted(isv.iterdir()):
                    if repo.is_dir() and not repo.is_symlink():
                        yield isv.name, repo.name

    def look(self, isv: str, platform_id: str) -> Repository:
        newest, count, size = 0.0, 0, 0
        for folder, _, files in os.walk(self.root / isv / platform_id):
            for name in files:
                try:
                    st = os.lstat(os.path.join(folder, name))
                except OSError:
                    continue
                newest, count, size = max(newest, st.st_mtime), count + 1, size + st.st_size
        return Repository(isv, platform_id, dt.datetime.fromtimestamp(newest, dt.UTC)
                          if count else None, count, size)

    def delete(self, isv: str, platform_id: str) -> None:
        shutil.rmtree(self.root / isv / platform_id)


class _Bucket:
    """Repositories under an S3 prefix: one listing per ISV, whole listings only for the
    repositories of destroyed platforms."""

    def __init__(self, store: S3ObjectStore) -> None:
        self.store = store
        self.base = f"{store.prefix}/" if store.prefix else ""

    def _folders(self, prefix: str) -> list[str]:
        try:
            pages = self.store.client().get_paginator("list_objects_v2").paginate(
                Bucket=self.store.bucket, Prefix=prefix, Delimiter="/")
            return [str(c["Prefix"])[len(prefix):].rstrip("/") for page in pages
                    for c in page.get("CommonPrefixes", []) if "Prefix" in c]
        except Exception as exc:
            self.store._fail(exc, f"listing {prefix or '/'}")

    def names(self) -> Iterator[tuple[str, str]]:
        for isv in self._folders(self.base):
            for repo in self._folders(f"{self.base}{isv}/"):
                yield isv, repo

    def _objects(self, isv: str, platform_id: str) -> Iterator[dict[str, object]]:
        prefix = f"{self.base}{isv}/{platform_id}/"
        try:
            pages = self.store.client().get_paginator("list_objects_v2").paginate(
                Bucket=self.store.bucket, Prefix=prefix)
            for page in pages:
                yield from page.get("Contents", [])  # type: ignore[misc]
        except Exception as exc:
            self.store._fail(exc, f"listing {prefix}")

    def look(self, isv: str, platform_id: str) -> Repository:
        newest: dt.datetime | None = None
        count = size = 0
        for obj in self._objects(isv, platform_id):
            modified = obj.get("LastModified")
            if isinstance(modified, dt.datetime) and (newest is None or modified > newest):
                newest = modified
            count, size = count + 1, size + int(str(obj.get("Size", 0)))
        return Repository(isv, platform_id, newest, count, size)

    def delete(self, isv: str, platform_id: str) -> None:
        keys = [str(o["Key"]) for o in self._objects(isv, platform_id)]
        for start in range(0, len(keys), 1000):
            batch: list[ObjectIdentifierTypeDef] = [{"Key": k}
                                                    for k in keys[start:start + 1000]]
            try:
                done = self.store.client().delete_objects(
                    Bucket=self.store.bucket, Delete={"Objects": batch, "Quiet": True})
            except Exception as exc:
                self.store._fail(exc, f"deleting {isv}/{platform_id}")
            if done.get("Errors"):
                first = done["Errors"][0]
                raise RuntimeError(f"the store kept {len(done['Errors'])} object(s) of "
                                   f"{isv}/{platform_id}: {first.get('Code')}: "
                                   f"{first.get('Message')}")


def _repositories(settings: Settings) -> _Directories | _Bucket:
    location = parse_store_url(settings.backup_url) if settings.backup_url else \
        settings.data_dir / "backups"
    if isinstance(location, Path):
        return _Directories(location)
    return _Bucket(S3ObjectStore(
        bucket=location.bucket, prefix=location.prefix, endpoint=settings.backup_endpoint,
        region=settings.backup_region, access_key_id=settings.backup_access_key_id,
        secret_access_key=settings.backup_secret_access_key, lock_days=0, setting="backup",
        timeout=15.0, ca_file=settings.backup_ca_file))


def purge_destroyed(runtime: Runtime, *, now: dt.datetime | None = None) -> list[Repository]:
    """Delete the repositories of destroyed platforms not written to for the keep period;
    returns what was deleted."""
    days = runtime.settings.backup_keep_destroyed_days
    if not days:
        return []
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=days)
    repos = _repositories(runtime.settings)
    names = [n for n in repos.names() if PLATFORM_ID.fullmatch(n[1])]
    with runtime.sessions() as session:
        live = set(session.scalars(select(Platform.id).where(
            Platform.id.in_([pid for _, pid in names]))))
    deleted = []
    for isv, platform_id in names:
        if platform_id in live:
            continue
        repo = repos.look(isv, platform_id)
        if repo.last_write is not None and repo.last_write > cutoff:
            continue
        repos.delete(isv, platform_id)
        deleted.append(repo)
        log.info("deleted the repository of destroyed platform %s", repo.describe())
        with runtime.sessions() as session:
            isv_id = session.scalar(select(Isv.id).where(Isv.name == isv))
            emit(session, "BACKUP_REPOSITORY_DELETED",
                 f"backup repository of destroyed platform {repo.describe()}: deleted after "
                 f"{days} days without a write", isv_id=isv_id, platform_id=platform_id)
            session.commit()
    return deleted


PURGE = Periodic("delete the repositories of destroyed platforms", purge_destroyed,
                 every=3600.0, retry_every=600.0)
