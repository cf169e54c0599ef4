from __future__ import annotations

import datetime as dt
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tenantry.agent import converge, ingress
from tenantry.agent.supervisord import SupervisordManager
from tests.conftest import ControlPlaneProcess

HOST = "app.isv.localhost"
HOST2 = "other.isv.localhost"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca_and_leaf(hostname: str) -> tuple[str, str, str]:
    """(ca_pem, leaf_cert_pem, leaf_key_pem), valid for an hour."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("tenantry test CA"))
        .issuer_name(_name("tenantry test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(hostname))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return ca.public_bytes(pem).decode(), leaf.public_bytes(pem).decode(), key_pem


def test_render_config_is_deterministic_and_route_hides_key() -> None:
    _, cert, key = make_ca_and_leaf(HOST)
    a = ingress.Route(hostname=HOST, upstreams=("127.0.0.1:9002", "127.0.0.1:9001"),
                      cert_pem=cert, key_pem=key)  # fmt: skip
    b = ingress.Route(hostname="b.isv.localhost", upstreams=("127.0.0.1:9003",),
                      cert_pem=cert, key_pem=key)  # fmt: skip
    one = ingress.render_config(listen="127.0.0.1:8443", admin="unix//x/a.sock", routes=[a, b],
                                storage_dir="/x/data")
    two = ingress.render_config(listen="127.0.0.1:8443", admin="unix//x/a.sock", routes=[b, a],
                                storage_dir="/x/data")
    assert one == two
    routes = one["apps"]["http"]["servers"]["ingress"]["routes"]
    assert [r["match"][0]["host"] for r in routes[:2]] == [[HOST], ["b.isv.localhost"]]
    assert routes[0]["handle"][0]["upstreams"] == [
        {"dial": "127.0.0.1:9001"}, {"dial": "127.0.0.1:9002"}
    ]  # fmt: skip
    assert routes[-1]["handle"][0]["status_code"] == 404
    assert key not in repr(a) and "PRIVATE" not in repr(a)


def _serve(port: int, directory: Path) -> subprocess.Popen[bytes]:
    """A plain HTTP server of `directory` on `port`, once it listens (it may take a while
    to start on a busy machine)."""
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                             "127.0.0.1", "--directory", str(directory)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)


@pytest.fixture
def upstream(short_tmp: Path, free_port: Callable[[], int]) -> Iterator[int]:
    site = short_tmp / "site"
    site.mkdir()
    (site / "index.html").write_text("hello from upstream\n")
    port = free_port()
    proc = _serve(port, site)
    try:
        yield port
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def caddy(supervisor: SupervisordManager, short_tmp: Path,
          wait_for: Callable[..., None]) -> Iterator[tuple[str, ingress.CaddyAdmin]]:
    """Caddy run by supervisord under `short_tmp/caddy`, its admin API up: (the admin
    address, a client of it)."""
    root = short_tmp / "caddy"
    admin = f"unix/{root}/admin.sock"
    spec = ingress.program_spec(name="caddy", root=root, admin=admin, log_file=None)
    assert spec.environment["HOME"].startswith(str(root))
    supervisor.put(spec)
    client = ingress.CaddyAdmin(admin)
    wait_for(client.is_up, timeout=20, what="caddy admin API")
    try:
        yield admin, client
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed")
def test_caddy_routes_by_host_with_our_certificate(
    caddy: tuple[str, ingress.CaddyAdmin], short_tmp: Path, free_port: Callable[[], int],
    upstream: int,
) -> None:
    ca_pem, cert, key = make_ca_and_leaf(HOST)
    _, cert2, key2 = make_ca_and_leaf(HOST2)
    admin, admin_api = caddy
    port = free_port()
    site2 = short_tmp / "site2"
    site2.mkdir()
    (site2 / "index.html").write_text("hello from the other\n")
    upstream2 = free_port()
    other = _serve(upstream2, site2)
    route = ingress.Route(hostname=HOST, upstreams=(f"127.0.0.1:{upstream}",),
                          cert_pem=cert, key_pem=key)  # fmt: skip
    route2 = ingress.Route(hostname=HOST2, upstreams=(f"127.0.0.1:{upstream2}",),
                           cert_pem=cert2, key_pem=key2)  # fmt: skip
    config = ingress.render_config(
        listen=f"127.0.0.1:{port}", admin=admin, routes=[route, route2],
        storage_dir=str(ingress.storage_of(short_tmp / "caddy")),
        log_file=str(short_tmp / "caddy" / "caddy.log"),
    )
    try:
        admin_api.load(config)
    except BaseException:
        other.kill()
        raise
    assert admin_api.current() == config

    ctx = ssl.create_default_context(cadata=ca_pem)
    with httpx.Client(verify=ctx, timeout=10) as client:

        def get(host: str) -> httpx.Response:
            return client.get(
                f"https://127.0.0.1:{port}/",
                headers={"Host": host},
                extensions={"sni_hostname": HOST},
            )

        try:
            ok = get(HOST)
            assert ok.status_code == 200 and ok.text == "hello from upstream\n"
            assert get("nobody.isv.localhost").status_code == 404
            # By Host, whatever name the connection was opened under (the agent's prober
            # shares its kept connections among a host's platforms on this)
            other_route = get(HOST2)
            assert other_route.status_code == 200
            assert other_route.text == "hello from the other\n"
        finally:
            other.kill()
            other.wait()

    bad = dict(config, apps={"http": {"servers": {"x": {"listen": ["not an address"]}}}})
    with pytest.raises(Exception, match="Caddy rejected"):
        admin_api.load(bad)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed")
def test_a_process_back_from_a_restart_is_served_at_once_and_a_dead_one_of_two_is_skipped(
    caddy: tuple[str, ingress.CaddyAdmin], short_tmp: Path, free_port: Callable[[], int],
    upstream: int,
) -> None:
    """A request that failed while a slot's only process was down (the prober's, say) must
    not make the next ones fail once it is back: Caddy's passive health check left it out
    for 2 s, and a rolled-back upgrade answered 503 right after its job said it served.
    With two processes, a request to the dead one goes to the other."""
    ca_pem, cert, key = make_ca_and_leaf(HOST)
    admin, admin_api = caddy
    port, restarting, dead = free_port(), free_port(), free_port()
    two = "two.isv.localhost"
    admin_api.load(ingress.render_config(listen=f"127.0.0.1:{port}", admin=admin, routes=[
        ingress.Route(hostname=HOST, upstreams=(f"127.0.0.1:{restarting}",), cert_pem=cert,
                      key_pem=key),
        ingress.Route(hostname=two, upstreams=(f"127.0.0.1:{dead}", f"127.0.0.1:{upstream}"),
                      cert_pem=cert, key_pem=key)],
        storage_dir=str(ingress.storage_of(short_tmp / "caddy"))))
    ctx = ssl.create_default_context(cadata=ca_pem)
    with httpx.Client(verify=ctx, timeout=10) as client:

        def get(host: str) -> int:
            return client.get(f"https://127.0.0.1:{port}/", headers={"Host": host},
                              extensions={"sni_hostname": host}).status_code

        assert get(HOST) == 502  # down: said at once
        server = _serve(restarting, short_tmp)
        try:
            assert get(HOST) == 200  # back: served at once, not 503 for the next 2 s
        finally:
            server.kill()
            server.wait()
        assert [get(two) for _ in range(6)] == [200] * 6


def test_a_kept_admin_connection_closed_under_a_question_is_asked_again() -> None:
    """Each config load replaces Caddy's admin server, which closes the connections it kept:
    a question sent on one just then gets no answer. It is asked again on a new connection,
    so the ingress is not called unreachable (or frozen) for it."""
    import threading

    body = b'{"admin": {}}'
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)
    served: list[str] = []

    def serve(listener: socket.socket) -> None:
        first, _ = listener.accept()  # answers once, keeps the connection, then drops the
        first.recv(4096)              # next question on it unanswered
        first.sendall(answer)
        served.append("first")
        first.recv(4096)
        first.close()
        served.append("dropped")
        second, _ = listener.accept()
        with second:
            second.recv(4096)
            second.sendall(answer)
            served.append("second")

    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=serve, args=(listener,), daemon=True)
        server.start()
        with ingress.CaddyAdmin(f"127.0.0.1:{listener.getsockname()[1]}") as admin:
            assert admin.current() == {"admin": {}}
            assert admin.current() == {"admin": {}}
        server.join(timeout=10)  # it notes "second" after sending the answer the client read
    assert served == ["first", "dropped", "second"]


@pytest.mark.slow
def test_the_hosts_ingress_keeps_its_state_in_the_data_dir_not_beside_its_socket(
    plane: ControlPlaneProcess,
) -> None:
    """The config the agent loads into Caddy told it to keep its state (its local CA's
    private keys among it) beside the admin socket, in the agent's socket dir under /tmp:
    outside the data dir, and left there after the data dir was gone (found in /tmp after
    test runs). It is the ingress dir's `data/`, as Caddy's bootstrap config says."""
    paths = converge.HostPaths(plane.data_dir / "agent")
    admin = ingress.CaddyAdmin(paths.ingress_admin())
    try:  # the host is online before its agent's first pass has loaded Caddy's config
        deadline, loaded = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            loaded = admin.current() if admin.is_up() else None
            if loaded is not None and "http" in loaded.get("apps", {}):
                break  # the agent's, not Caddy's bootstrap config (which has no routes)
            time.sleep(0.2)
    finally:
        admin.close()
    assert loaded is not None and "http" in loaded["apps"], loaded
    assert loaded["storage"] == {"module": "file_system",
                                 "root": str(paths.ingress.absolute() / "data")}
    assert (paths.ingress / "data" / "pki" / "authorities" / "local").is_dir()
    assert not (paths.sockets / "data").exists()
