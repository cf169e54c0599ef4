#!/usr/bin/env python3
"""Write the bodyshop bundle directory for one release.

    python examples/bodyshop/build.py 1.0.0 OUTDIR

There is one source tree; a release is the tree plus `bodyshop/_version.py` naming its
version and features, minus the migrations that belong to later releases. The wheels come
from examples/bodyshop/wheels/, which scripts/fetch-example-wheels fills.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# version -> (last migration shipped, features switched on)
RELEASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "1.0.0": ("0001", ()),
    "1.1.0": ("0002", ("estimate",)),
}

MANIFEST = """\
[app]
name = "bodyshop"
version = "{version}"

[processes]
web = "python -m bodyshop.server"

[release]
command = "python -m bodyshop.migrate"

[health]
path = "/health"

[backup]
smoke = "python -m bodyshop.smoke"

[python]
requirements = "requirements.txt"
wheels = "wheels"
"""


def build(version: str, out: Path) -> None:
    if version not in RELEASES:
        raise SystemExit(f"build: unknown version {version!r}; known: {', '.join(RELEASES)}")
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"build: {out} exists and is not empty")
    last_migration, features = RELEASES[version]

    requirements = (HERE / "requirements.txt").read_text()
    pins = [
        line.split("==")[0].strip()
        for line in requirements.splitlines()
        if line.strip() and not line.startswith("#")
    ]
    wheels = sorted((HERE / "wheels").glob("*.whl")) if (HERE / "wheels").is_dir() else []
    for pin in pins:
        norm = pin.lower().replace("-", "_")
        if not any(w.name.lower().startswith(norm + "-") for w in wheels):
            raise SystemExit(
                f"build: no wheel for {pin} in {HERE / 'wheels'}; run scripts/fetch-example-wheels"
            )

    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        HERE / "bodyshop",
        out / "bodyshop",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    for migration in (out / "bodyshop" / "migrations").glob("*.sql"):
        if migration.name[:4] > last_migration:
            migration.unlink()
    (out / "bodyshop" / "_version.py").write_text(
        "# Written by build.py.\n"
        f"VERSION = {version!r}\n"
        f"FEATURES: frozenset[str] = frozenset({sorted(features)!r})\n"
    )
    (out / "tenantry.toml").write_text(MANIFEST.format(version=version))
    (out / "requirements.txt").write_text(requirements)
    (out / "wheels").mkdir()
    for wheel in wheels:
        shutil.copy2(wheel, out / "wheels" / wheel.name)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: build.py VERSION OUTDIR")
    build(sys.argv[1], Path(sys.argv[2]))
