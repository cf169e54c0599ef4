"""The control plane's agent listener: HTTPS with client certificates (mutual TLS).

`tenantry up --agent-tls-listen HOST:PORT` serves the same app a second time on that
address, with a server certificate from tenantry's CA, and asks each client for a
certificate from the same CA. An agent enrolls there with its one-time token and a CSR and
gets a client certificate naming its host id; from then on every agent route on this
listener needs that certificate *and* the host's token, and the two must name the same
host (see platforms.agent_api.get_host_id). People's routes work there too, without one.

uvicorn does not hand the peer certificate to the app, so `PeerCertH11Protocol` puts the
verified certificate (DER) into the request scope as `scope["extensions"]["tls"]`.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from tenantry.core.crypto import write_private
from tenantry.core.runtime import Runtime

TLS_EXTENSION = "tls"


class PeerCertH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        peer = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        inner = self.app
        tls = {"client_cert_der": peer}

        async def with_peer(scope: Scope, receive: Receive, send: Send) -> None:
            extensions = {**(scope.get("extensions") or {}), TLS_EXTENSION: tls}
            await inner({**scope, "extensions": extensions}, receive, send)

        self.app = with_peer


def server_files(runtime: Runtime, host: str) -> tuple[Path, Path, Path]:
    """Write the listener's certificate (for `host`, localhost and 127.0.0.1) and key;
    returns (certificate chain, key, CA) paths."""
    directory = runtime.settings.data_dir / "agent-tls"
    directory.mkdir(mode=0o700, exist_ok=True)
    names = list(dict.fromkeys([host, "localhost", "127.0.0.1"]))
    names = [n for n in names if n not in ("0.0.0.0", "::", "")]
    issued = runtime.ca.issue_server_cert(names)
    cert, key = directory / "server.pem", directory / "server-key.pem"
    cert.write_text(issued.cert_pem)
    write_private(key, issued.key_pem.encode())
    return cert, key, runtime.settings.data_dir / "ca.pem"


def ssl_options(runtime: Runtime, host: str) -> dict[str, Any]:
    cert, key, ca = server_files(runtime, host)
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key), "ssl_ca_certs": str(ca),
            "ssl_cert_reqs": ssl.CERT_OPTIONAL, "http": PeerCertH11Protocol}


def client_common_name(scope: Any) -> tuple[bool, str | None]:
    """(came through the agent listener, the verified client certificate's common name)."""
    extensions = scope.get("extensions") or {}
    if TLS_EXTENSION not in extensions:
        return False, None
    der = extensions[TLS_EXTENSION].get("client_cert_der")
    if not der:
        return True, None
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
        NameOID.COMMON_NAME)
    return True, str(names[0].value) if names else None
