"""Bad input gets one clear line naming the field, the right exit code, and changes nothing."""

from __future__ import annotations

import io
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import TENANTRY, ControlPlaneProcess, free_port, make_isv, short_tmp

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def isv(plane: ControlPlaneProcess, bundles: dict[str, Path]) -> str:
    """One ISV for the module: every test here must leave it exactly as it found it."""
    return make_isv(plane, bundles)


def snapshot(plane: ControlPlaneProcess, isv: str) -> tuple[object, ...]:
    return (plane.cli_json("platform", "list", "--isv", isv),
            plane.cli_json("app", "list", "--isv", isv),
            plane.cli_json("tenant", "list", isv),
            len(plane.cli_json("job", "list", "--limit", "500")))


@pytest.mark.parametrize(("args", "code", "field"), [
    (["--tenant", "t1", "--app", "bodyshop@1.0.0", "--name", "Bad_Name"], 2, "name"),
    (["--tenant", "t1", "--app", "bodyshop@1.0.0", "--name", "x" * 41], 2, "name"),
    (["--tenant", "nobody", "--app", "bodyshop@1.0.0"], 3, "tenants"),
    (["--tenant", "t1", "--app", "bodyshop@9.9.9"], 3, "app"),
    (["--tenant", "t1", "--app", "otherapp@1.0.0"], 3, "app"),
    (["--tenant", "t1", "--app", "bodyshop"], 2, "app"),
    (["--tenant", "t1", "--app", "bodyshop@1.0.0", "--size", "xl"], 2, "size"),
    (["--tenant", "t1", "--tenant", "t1", "--app", "bodyshop@1.0.0"], 2, "tenants"),
    (["--tenant", "t1", "--app", "bodyshop@1.0.0", "--region", "no-such"], 3, "region"),
])
def test_platform_create_refuses(plane: ControlPlaneProcess, isv: str, args: list[str],
                                 code: int, field: str) -> None:
    before = snapshot(plane, isv)
    done = plane.cli("platform", "create", isv, *args, check=False)
    assert done.returncode == code, done.stderr
    assert f"({field})" in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2
    assert snapshot(plane, isv) == before


def test_unknown_isv_and_duplicates(plane: ControlPlaneProcess, isv: str) -> None:
    done = plane.cli("platform", "create", "no-such-isv", "--tenant", "t1",
                     "--app", "bodyshop@1.0.0", check=False)
    assert done.returncode == 3 and "(isv)" in done.stderr
    assert plane.cli("isv", "create", isv, check=False).returncode == 2
    assert plane.cli("tenant", "create", isv, "t1", check=False).returncode == 2
    assert plane.cli("isv", "create", "UPPER", check=False).returncode == 2
    assert plane.cli("platform", "show", f"{isv}/nothing", check=False).returncode == 3
    assert plane.cli("job", "show", "0", check=False).returncode == 2
    assert plane.cli("job", "show", "987654321", check=False).returncode == 3


def _tar(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


GOOD = (b'[app]\nname = "evil"\nversion = "1.0.0"\n[processes]\nweb = "python -m x"\n'
        b'[health]\npath = "/health"\n')


@pytest.mark.parametrize(("bundle", "field"), [
    (_tar({"tenantry.toml": b'[app]\nname = "x"\n'}), "manifest"),
    (_tar({"tenantry.toml": GOOD.replace(b'"evil"', b'"Evil!"')}), "manifest.app.name"),
    (_tar({"tenantry.toml": GOOD, "../escape.txt": b"x"}), "bundle"),
    (_tar({"tenantry.toml": GOOD, "/etc/owned": b"x"}), "bundle"),
    (_tar({"tenantry.toml": GOOD}, links={"link": "../../../etc/passwd"}), "bundle"),
    (b"this is not an archive", "bundle"),
])
def test_bad_bundles_are_refused(plane: ControlPlaneProcess, isv: str, tmp_path: Path,
                                 bundle: bytes, field: str) -> None:
    before = snapshot(plane, isv)
    path = tmp_path / "bundle.tar.gz"
    path.write_bytes(bundle)
    done = plane.cli("app", "release", isv, str(path), check=False)
    assert done.returncode == 2, done.stderr
    assert f"({field}" in done.stderr
    assert snapshot(plane, isv) == before
    assert not (tmp_path / "escape.txt").exists()


def test_api_errors_have_one_shape(plane: ControlPlaneProcess, isv: str) -> None:
    api = plane.api()
    resp = api.post(f"/isvs/{isv}/platforms", json={"tenants": [], "app": "bodyshop@1.0.0"})
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == "tenants"
    resp = api.post(f"/isvs/{isv}/platforms", json={"tenants": ["t1"], "app": "bodyshop@1.0.0",
                                                     "surprise": 1})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "surprise"
    resp = api.post(f"/isvs/{isv}/platforms", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert resp.status_code == 422 and set(resp.json()["error"]) == {"code", "message", "field"}
    assert api.get("/platforms/no-such-isv/x").status_code == 404
    assert api.get("/jobs/0").status_code == 422
    anonymous = plane.api()
    anonymous.headers.pop("Authorization")
    assert anonymous.get("/platforms").status_code == 401
    anonymous.headers["Authorization"] = "Bearer tnt_wrong"
    assert anonymous.get("/platforms").json()["error"]["code"] == "unauthenticated"


def test_up_refuses_bad_settings_before_starting_anything(plane: ControlPlaneProcess) -> None:
    root = short_tmp("tnu-")

    def up(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*TENANTRY, "up", *args], capture_output=True, text=True,
                              timeout=60, env={**plane.env, "TENANTRY_DATA_DIR": str(root / "d")})

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = up("--listen", f"127.0.0.1:{port}", "--ingress-port", str(free_port()))
        assert done.returncode == 2 and "(listen)" in done.stderr and "not free" in done.stderr
        done = up("--listen", f"127.0.0.1:{free_port()}", "--ingress-port", str(port))
        assert done.returncode == 2 and "(ingress_port)" in done.stderr
        done = up("--listen", f"127.0.0.1:{free_port()}", "--ingress-port", str(free_port()),
                  "--agent-tls-listen", f"127.0.0.1:{port}")
        assert done.returncode == 2 and "(agent_tls_listen)" in done.stderr
    # A second `up` on a data dir that one runs on is refused before it touches anything.
    second = subprocess.run([*TENANTRY, "up", "--listen", f"127.0.0.1:{free_port()}",
                             "--ingress-port", str(free_port())], capture_output=True,
                            text=True, timeout=60, env=plane.env)
    assert second.returncode == 2 and "(data_dir)" in second.stderr, second.stderr
    assert "another tenantry up" in second.stderr
    assert plane.api().get("/hosts").status_code == 200  # the first one serves on
    done = up("--agent-tls-listen", "nonsense")
    assert done.returncode == 2 and "agent_tls_listen" in done.stderr
    done = up("--listen", "nonsense")
    assert done.returncode == 2 and "(listen)" in done.stderr
    done = up("--data-dir", "/proc/tenantry-cannot-be-here")
    assert done.returncode == 2 and "(data_dir)" in done.stderr
    no_caddy = subprocess.run([*TENANTRY, "up", "--listen", f"127.0.0.1:{free_port()}"],
                              capture_output=True, text=True, timeout=60,
                              env={**plane.env, "TENANTRY_DATA_DIR": str(root / "d"),
                                   "PATH": str(root)})
    assert no_caddy.returncode == 1
    assert "install the Debian package caddy" in no_caddy.stderr
    assert not (root / "d" / "controlplane").exists()
