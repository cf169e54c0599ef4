"""Where a platform's backups go and with which key: the control plane's half of the host
contract's `backup` part (the agent's half is `tenantry.agent.backups`).

The repository comes from the settings (`TENANTRY_BACKUP_URL` and its companions); each
ISV gets its own prefix under it, each platform its own directory under that:
`<url>/<isv>/<platform id>`. The ISV's passphrase is made on its first backup, kept
encrypted with the ISV's data key (`isvs.backup_key`), and sent to the agent only inside
the desired state, over TLS.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from tenantry.core.config import Settings
from tenantry.core.crypto import SecretBox, new_password
from tenantry.core.errors import InvalidInput
from tenantry.core.objectstore import parse_store_url
from tenantry.platforms.contract import BackupRepo, BackupTask, StoredBackup
from tenantry.platforms.models import Isv, Platform

KEEP_TASKS = 10  # the desired state remembers this many backup tasks per platform


def repository(settings: Settings, isv: str, platform_id: str) -> BackupRepo:
    url = settings.backup_url
    location = parse_store_url(url) if url else settings.data_dir / "backups"
    if isinstance(location, Path):
        return BackupRepo(type="posix", path=str(location / isv / platform_id))
    endpoint = settings.backup_endpoint or f"https://s3.{settings.backup_region}.amazonaws.com"
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    ca_pem = None
    if settings.backup_ca_file is not None:
        try:
            ca_pem = settings.backup_ca_file.read_text()
        except OSError as exc:
            raise InvalidInput(f"cannot read {settings.backup_ca_file}: {exc.strerror}",
                               field="backup_ca_file") from None
    prefix = "/".join(p for p in (location.prefix, isv, platform_id) if p)
    return BackupRepo(type="s3", path=f"/{prefix}", bucket=location.bucket,
                      endpoint=f"{host}:{parts.port}" if parts.port else host,
                      region=settings.backup_region, key_id=settings.backup_access_key_id,
                      ca_pem=ca_pem)


def isv_key(session: Session, secrets: SecretBox, isv_id: str) -> str:
    """The ISV's pgBackRest passphrase, encrypted; made once."""
    return _isv_secret(session, secrets, isv_id, Isv.backup_key)


def isv_files_key(session: Session, secrets: SecretBox, isv_id: str) -> str:
    """The ISV's restic password, encrypted; made once."""
    return _isv_secret(session, secrets, isv_id, Isv.files_key)


def _isv_secret(session: Session, secrets: SecretBox, isv_id: str,
                column: InstrumentedAttribute[str | None]) -> str:
    """Read the ISV's secret, or make it with a conditional UPDATE: the first writer wins,
    and a second one (blocked until the first commits) changes nothing and reads the
    winner's. No `SELECT ... FOR UPDATE` of the ISV's row: a job holds its platform's row,
    and such a lock conflicts with the key-share lock that any insert referencing the ISV
    and the platform takes (a support grant, say): the two deadlocked. An UPDATE of a
    column that is no key takes a lock that key-share locks do not wait for."""
    current = session.scalar(select(column).where(Isv.id == isv_id))
    if current is not None:
        return current
    session.execute(update(Isv).where(Isv.id == isv_id, column.is_(None))
                    .values({column: secrets.encrypt(new_password(32), org=isv_id)})
                    .execution_options(synchronize_session=False))
    made = session.scalar(select(column).where(Isv.id == isv_id))
    assert made is not None, f"no ISV {isv_id}"
    return made


def configured(settings: Settings, secrets: SecretBox, session: Session,
               platform: Platform) -> StoredBackup | None:
    """The `backup` part the platform's desired state should hold, or None when it holds
    it already (the encrypted secrets differ on every encryption, so they are compared in
    clear)."""
    repo = repository(settings, platform.isv.name, platform.id)
    secret = settings.backup_secret_access_key
    current = platform.desired.backup
    if current is not None and current.repo == repo and current.files_cipher is not None \
            and current.archive_timeout == settings.backup_archive_timeout and (
            (current.secret_key is None and secret is None) or (
                current.secret_key is not None and secret is not None
                and secrets.decrypt(current.secret_key).get_secret_value()
                == secret.get_secret_value())):
        return None
    return StoredBackup(
        repo=repo, cipher=current.cipher if current else isv_key(session, secrets,
                                                                   platform.isv_id),
        secret_key=secrets.encrypt(secret) if secret is not None else None,
        archive_timeout=settings.backup_archive_timeout,
        files_cipher=current.files_cipher if current and current.files_cipher else
        isv_files_key(session, secrets, platform.isv_id))


def with_task(tasks: list[BackupTask], task: BackupTask) -> list[BackupTask] | None:
    """The task list with `task` added (the oldest dropped past KEEP_TASKS), or None when it
    is there already."""
    if any(t.id == task.id for t in tasks):
        return None
    return [*tasks, task][-KEEP_TASKS:]


# pgBackRest's words for a refused or unreachable store, and the setting to look at.
_HINTS = (
    (("InvalidAccessKeyId", "unknown key"), "TENANTRY_BACKUP_ACCESS_KEY_ID"),
    (("SignatureDoesNotMatch",), "TENANTRY_BACKUP_SECRET_ACCESS_KEY"),
    (("AccessDenied", "403"), "TENANTRY_BACKUP_ACCESS_KEY_ID (the key may not use the bucket)"),
    (("NoSuchBucket",), "TENANTRY_BACKUP_URL (no such bucket)"),
    (("unable to get address", "unable to connect", "Connection refused", "timeout",
      "timed out", "did not finish"),
     "TENANTRY_BACKUP_ENDPOINT (the store does not answer)"),
    (("certificate", "TLS", "SSL"), "TENANTRY_BACKUP_CA_FILE (the store's certificate)"),
    (("unable to decrypt", "cipher"), "the ISV's backup key (tenantry backup key ISV)"),
)


def explain(error: str) -> str:
    """pgBackRest's message, with the setting most likely to blame when one is."""
    for words, setting in _HINTS:
        if any(w.lower() in error.lower() for w in words):
            return f"{error} (check {setting})"
    return error
