"""Offsite object stores, where signed audit heads are shipped.

One small contract (`ObjectStore`: put, get, list) with a directory implementation and an
in-memory fake for tests. The default is `DATA_DIR/offsite`, which is *not* offsite: a real
deployment points this at an S3 bucket with object lock (write-once), so that whoever can
rewrite the control-plane store cannot also rewrite the shipped heads. No S3 adapter ships
yet because no S3 server is available where this was built.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

from tenantry.core.errors import InvalidInput


class ObjectStore(ABC):
    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes | None: ...

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
        except FileNotFoundError:
            return None

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
        return self.objects.get(key)

    def list(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))
