"""Object stores: where tenantry keeps what must survive the loss of the control plane.

One small contract (`ObjectStore`: put, get, list) and three implementations:

- `S3ObjectStore`: any S3-compatible server (path-style addressing, custom endpoint). When
  the bucket has Object Lock, every put is retained in COMPLIANCE mode for `lock_days`, so
  whoever controls the control plane (and so holds the store's credentials) cannot delete
  or rewrite what was shipped; keys named in `mutable_keys` (a "latest" pointer) are
  written without retention and simply gain a version each time.
- `DirectoryObjectStore`: a local directory. The default `DATA_DIR/offsite` is *not*
  offsite: it is for the demo and for one-machine installs that accept the risk.
- `MemoryObjectStore`: the fake for unit tests.

`open_offsite(settings)` builds the store the `offsite_*` settings name. Errors of the
S3 server become `Unavailable` naming the setting to check, and never carry the secret.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

from pydantic import SecretStr

from tenantry.core.errors import InvalidInput, Unavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tenantry.core.config import Settings

log = logging.getLogger(__name__)


class ObjectStore(ABC):
    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such key."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with `prefix`, sorted."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"{key!r} is not an object key", field="key")
    return key


class DirectoryObjectStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"DirectoryObjectStore({str(self.root)!r})"

    def put(self, key: str, data: bytes) -> None:
        path = self.root / _check_key(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def get(self, key: str) -> bytes | None:
        path = self.root / _check_key(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None  # "a/b" under a file "a", or a directory: no such object either

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                if p.is_file() and not p.name.startswith("."))
        return sorted(k for k in keys if k.startswith(prefix))


class MemoryObjectStore(ObjectStore):
    """The fake for unit tests; `puts` records every write in order."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts: list[str] = []

    def put(self, key: str, data: bytes) -> None:
        self.objects[_check_key(key)] = data
        self.puts.append(key)

    def get(self, key: str) -> bytes | None:
        return self.objects.get(_check_key(key))

    def list(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))


# ---------------------------------------------------------------- locations

@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str = ""  # no leading or trailing slash


# Bucket names as S3 allows them (3-63 lowercase letters, digits, dots and hyphens).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


# Messages say it without brackets: the CLI prints errors as Rich markup.
_URL_FORMS = "must be s3://BUCKET or s3://BUCKET/PREFIX, or an absolute directory path"


def parse_store_url(value: str) -> S3Location | Path:
    """`s3://BUCKET[/PREFIX]` or an absolute directory path; ValueError says what is wrong."""
    if "://" not in value:
        path = Path(value).expanduser()
        if not path.is_absolute():
            raise ValueError(_URL_FORMS)
        return path
    parts = urlsplit(value)
    if parts.scheme != "s3":
        raise ValueError(f"scheme {parts.scheme!r} is not supported: {_URL_FORMS}")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"{_URL_FORMS}, with no credentials, query or fragment")
    if not _BUCKET.fullmatch(parts.netloc) or ".." in parts.netloc:
        raise ValueError(f"{parts.netloc!r} is not an S3 bucket name")
    prefix = parts.path.strip("/")
    if prefix:
        try:
            _check_key(prefix)
        except InvalidInput:
            raise ValueError(f"{prefix!r} is not a key prefix") from None
    return S3Location(parts.netloc, prefix)


def check_endpoint(value: str) -> str:
    """An `http(s)://HOST[:PORT]` URL with nothing else in it (credentials never go here)."""
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (parts.scheme not in ("http", "https") or not parts.hostname or port == -1
            or parts.username is not None or parts.path not in ("", "/") or parts.query
            or parts.fragment):
        raise ValueError("must be an http:// or https:// URL of host and port only, "
                         "e.g. https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000")
    return value.rstrip("/")


# ---------------------------------------------------------------- S3

# Error codes that mean "these credentials": the setting to check, and what to say.
_AUTH_CODES = {
    "InvalidAccessKeyId": ("access_key_id", "the server does not know this key id"),
    "SignatureDoesNotMatch": ("secret_access_key", "the secret does not match the key id"),
    "AccessDenied": ("access_key_id", "the key may not do this on the bucket (it needs "
                     "s3:GetObject, s3:PutObject, s3:ListBucket, "
                     "s3:GetBucketObjectLockConfiguration and s3:PutObjectRetention)"),
    "AuthorizationHeaderMalformed": ("region", "the region does not match the server's"),
    "ExpiredToken": ("access_key_id", "the key has expired"),
    "InvalidToken": ("access_key_id", "the key is not valid"),
}
_MISSING_KEY = frozenset({"NoSuchKey", "404", "NotFound"})


class S3ObjectStore(ObjectStore):
    """A bucket (and key prefix) on an S3-compatible server.

    Thread-safe; the client is made on first use, so building a store touches no network.
    Timeouts are short and retries few: the worker's housekeeping loop waits on each call,
    so a black-holed endpoint costs it about 2 x `timeout`, not minutes.
    `setting` names the settings in error messages (`offsite` → TENANTRY_OFFSITE_URL ...).
    """

    def __init__(self, *, bucket: str, prefix: str = "", endpoint: str | None = None,
                 region: str = "us-east-1", access_key_id: str | None = None,
                 secret_access_key: SecretStr | None = None, lock_days: int = 365,
                 mutable_keys: Collection[str] = (), setting: str = "offsite",
                 timeout: float = 5.0, ca_file: Path | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.region = region
        self.access_key_id = access_key_id
        self._secret = secret_access_key
        self.lock_days = lock_days
        self.mutable_keys = frozenset(mutable_keys)
        self.setting = setting
        self.timeout = timeout
        self.ca_file = ca_file  # a private CA the endpoint's certificate chains to
        self._client: S3Client | None = None
        self._locked: bool | None = None  # the bucket has Object Lock (asked once)
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return (f"S3ObjectStore(endpoint={self.endpoint!r}, bucket={self.bucket!r}, "
                f"prefix={self.prefix!r}, region={self.region!r}, "
                f"access_key_id={self.access_key_id!r}, secret_access_key='**********', "
                f"lock_days={self.lock_days})")

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def client(self) -> S3Client:
        with self._mutex:
            if self._client is None:
                import boto3.session
                from botocore.config import Config

                config = Config(
                    s3={"addressing_style": "path"}, connect_timeout=self.timeout,
                    read_timeout=self.timeout, retries={"mode": "standard",
                                                        "total_max_attempts": 2},
                    user_agent_extra="tenantry")
                secret = self._secret.get_secret_value() if self._secret else None
                self._client = boto3.session.Session().client(
                    "s3", endpoint_url=self.endpoint, region_name=self.region,
                    aws_access_key_id=self.access_key_id, aws_secret_access_key=secret,
                    config=config, verify=str(self.ca_file) if self.ca_file else None)
            return self._client

    def put(self, key: str, data: bytes) -> None:
        name = self._key(key)
        lock = key not in self.mutable_keys and self.lock_days > 0 and self._bucket_locked()
        try:
            if lock:
                until = dt.datetime.now(dt.UTC) + dt.timedelta(days=self.lock_days)
                self.client().put_object(Bucket=self.bucket, Key=name, Body=data,
                                         ObjectLockMode="COMPLIANCE",
                                         ObjectLockRetainUntilDate=until)
            else:
                self.client().put_object(Bucket=self.bucket, Key=name, Body=data)
        except Exception as exc:
            self._fail(exc, f"writing {name}")

    def get(self, key: str) -> bytes | None:
        name = self._key(key)
        try:
            return self.client().get_object(Bucket=self.bucket, Key=name)["Body"].read()
        except Exception as exc:
            if _code(exc) in _MISSING_KEY:
                return None
            self._fail(exc, f"reading {name}")

    def list(self, prefix: str = "") -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        keys: list[str] = []
        try:
            pages = self.client().get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base + prefix)
            for page in pages:
                keys.extend(o["Key"][len(base):] for o in page.get("Contents", [])
                            if "Key" in o)
        except Exception as exc:
            self._fail(exc, f"listing {base + prefix or '/'}")
        return sorted(keys)

    def _bucket_locked(self) -> bool:
        if self._locked is None:
            try:
                config = self.client().get_object_lock_configuration(Bucket=self.bucket)
                enabled = config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
                self._locked = enabled == "Enabled"
            except Exception as exc:
                if _code(exc) != "ObjectLockConfigurationNotFoundError":
                    self._fail(exc, "reading the bucket's Object Lock configuration")
                self._locked = False
            if not self._locked:
                log.warning("%s has no Object Lock: what is shipped there can be deleted or "
                            "rewritten by anyone holding its credentials", self.url)
        return self._locked

    def _fail(self, exc: Exception, doing: str) -> NoReturn:
        """Raise `Unavailable` naming the setting to check; the secret never gets in."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        env = f"TENANTRY_{self.setting.upper()}"
        where = self.endpoint or "the default AWS endpoint"
        field = f"{self.setting}_url"
        if isinstance(exc, ClientError):
            code = _code(exc)
            message = str(exc.response.get("Error", {}).get("Message", ""))
            if code == "NoSuchBucket":
                text = (f"bucket {self.bucket!r} does not exist at {where} "
                        f"(check {env}_URL and {env}_ENDPOINT)")
            elif code in _AUTH_CODES:
                setting, why = _AUTH_CODES[code]
                field = f"{self.setting}_{setting}"
                text = (f"{where} refused {doing} ({code}): {why}; check "
                        f"{env}_{setting.upper()}")
            else:
                text = f"{where} failed {doing} ({code}: {message})"
        elif isinstance(exc, NoCredentialsError | PartialCredentialsError):
            field = f"{self.setting}_access_key_id"
            text = f"no credentials: set {env}_ACCESS_KEY_ID and {env}_SECRET_ACCESS_KEY"
        elif isinstance(exc, ConnectionError | HTTPClientError):
            field = f"{self.setting}_endpoint"
            text = f"{where} is unreachable (check {env}_ENDPOINT): {exc}"
        elif isinstance(exc, BotoCoreError):
            text = f"{doing} at {where} failed: {type(exc).__name__}: {exc}"
        else:
            raise exc  # not the store's failure but a bug: keep its traceback
        if self._secret is not None and self._secret.get_secret_value():
            text = text.replace(self._secret.get_secret_value(), "**********")
        # `from None`: botocore's own exception is not kept on the chain of what we raise.
        raise Unavailable(f"{self.setting} store {self.url}: {text}", field=field) from None


def _code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else None


# ---------------------------------------------------------------- from settings

def open_offsite(settings: Settings, *, mutable_keys: Collection[str] = ()) -> ObjectStore:
    """The store `offsite_url` names; DATA_DIR/offsite (a directory) when it is not set."""
    if not settings.offsite_url:
        return DirectoryObjectStore(settings.data_dir / "offsite")
    location = parse_store_url(settings.offsite_url)
    if isinstance(location, Path):
        return DirectoryObjectStore(location)
    return S3ObjectStore(
        bucket=location.bucket, prefix=location.prefix, endpoint=settings.offsite_endpoint,
        region=settings.offsite_region, access_key_id=settings.offsite_access_key_id,
        secret_access_key=settings.offsite_secret_access_key,
        lock_days=settings.offsite_lock_days, mutable_keys=mutable_keys)
