"""Photos of a repair job, kept in the platform's files directory (TENANTRY_FILES_DIR).

    <files>/photos/<job id>/<UTC time>-<first 16 hex of the SHA-256>.<jpg|png|webp>

A photo is written to a temporary name, flushed to disk and renamed into place, so a crash
never leaves half a photo under a real name. Names are made here, never taken from the
client, and the kind is read from the image's own first bytes, not from its Content-Type.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

from bodyshop.jobs import Invalid

MAX_BYTES = 10 * 2**20
KINDS = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
NAME = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{16}\.(jpg|png|webp)$")


def kind_of(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def from_env(cls) -> Store | None:
        path = os.environ.get("TENANTRY_FILES_DIR")
        return cls(Path(path)) if path and Path(path).is_dir() else None

    def _dir(self, job_id: int) -> Path:
        return self.root / "photos" / str(job_id)

    def add(self, job_id: int, data: bytes, content_type: str) -> dict[str, Any]:
        if not data:
            raise Invalid("the body must be the photo (JPEG, PNG or WebP)", "body")
        kind = kind_of(data)
        if kind is None:
            raise Invalid("the body is not a JPEG, PNG or WebP image", "body")
        declared = content_type.split(";")[0].strip().lower()
        if declared and declared != "application/octet-stream" and declared != KINDS[kind]:
            raise Invalid(f"Content-Type {declared} does not match the image ({KINDS[kind]})",
                          "Content-Type")
        digest = hashlib.sha256(data).hexdigest()
        name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{digest[:16]}.{kind}"
        folder = self._dir(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / name
        if not final.exists():
            temp = folder / f".{name}.{os.getpid()}.tmp"
            with temp.open("wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            temp.rename(final)
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return self._public(job_id, final)

    def list(self, job_id: int) -> list[dict[str, Any]]:
        folder = self._dir(job_id)
        if not folder.is_dir():
            return []
        return [self._public(job_id, p) for p in sorted(folder.iterdir()) if NAME.match(p.name)]

    def read(self, job_id: int, name: str) -> tuple[bytes, str] | None:
        if not NAME.match(name):
            return None
        path = self._dir(job_id) / name
        try:
            return path.read_bytes(), KINDS[path.suffix[1:]]
        except OSError:
            return None

    def _public(self, job_id: int, path: Path) -> dict[str, Any]:
        data = path.read_bytes()
        return {"name": path.name, "job": job_id, "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(), "type": KINDS[path.suffix[1:]],
                "url": f"/api/jobs/{job_id}/photos/{path.name}"}
