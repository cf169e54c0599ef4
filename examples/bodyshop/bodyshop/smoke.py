"""The smoke check tenantry runs against a restored copy (`[backup] smoke` in the manifest).

    python -m bodyshop.smoke        (needs DATABASE_URL; TENANTRY_FILES_DIR when files came back)

It reads what a user relies on: every repair job, each in a known stage, and the photos of the
jobs that have some. A photo whose job is gone, or a stage nobody knows, fails the check.
Prints one line of counts; exits 1 with the reason otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg

from bodyshop import STAGES


def check(url: str, files: Path | None) -> str:
    with psycopg.connect(url, connect_timeout=10) as conn:
        rows = conn.execute("SELECT id, stage FROM jobs").fetchall()
    unknown = sorted({stage for _, stage in rows if stage not in STAGES})
    if unknown:
        raise ValueError(f"jobs in unknown stages: {', '.join(unknown)}")
    ids = {str(job_id) for job_id, _ in rows}
    photos = 0
    folder = files / "photos" if files is not None else None
    if folder is not None and folder.is_dir():
        for job_dir in folder.iterdir():
            if job_dir.name not in ids:
                raise ValueError(f"photos of job {job_dir.name}, which the database lacks")
            photos += sum(1 for p in job_dir.iterdir() if p.is_file())
    return f"{len(rows)} jobs, {photos} photos"


def main() -> int:
    url = os.environ.get("DATABASE_URL")
    if not url:
        print("DATABASE_URL is not set", file=sys.stderr)
        return 2
    files = os.environ.get("TENANTRY_FILES_DIR")
    try:
        print(check(url, Path(files) if files else None))
    except (psycopg.Error, OSError, ValueError) as exc:
        print(f"smoke check failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
