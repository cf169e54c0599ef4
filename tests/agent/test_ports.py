"""Which ports listen: the kernel's netlink answer holds what /proc says, for IPv4 and IPv6,
no connected socket, and not a socket that stopped listening."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tenantry.agent import ports


def _listener(family: socket.AddressFamily, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen()
    return sock


def test_netlink_sees_the_listeners_proc_sees_and_no_connected_socket() -> None:
    v4 = _listener(socket.AF_INET, "127.0.0.1")
    v6 = _listener(socket.AF_INET6, "::1")
    client = socket.create_connection(v4.getsockname()[:2])
    accepted, _ = v4.accept()
    try:
        port4, port6 = v4.getsockname()[1], v6.getsockname()[1]
        found = ports._from_netlink()
        assert {port4, port6} <= found
        assert client.getsockname()[1] not in found  # an established socket is no listener
        # the same listeners as /proc says (others of the machine may come and go between)
        assert {port4, port6} <= ports._from_proc(Path("/proc/net"))
        assert {port4, port6} <= ports.listening_ports()
    finally:
        for s in (client, accepted, v4, v6):
            s.close()
    assert port4 not in ports.listening_ports()


def test_without_netlink_proc_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused() -> set[int]:
        raise OSError("no netlink here")

    monkeypatch.setattr(ports, "_from_netlink", refused)
    v4 = _listener(socket.AF_INET, "127.0.0.1")
    try:
        assert v4.getsockname()[1] in ports.listening_ports()
    finally:
        v4.close()


def test_a_reply_of_several_messages_is_read_to_its_end() -> None:
    """A dump of many listeners comes in several messages, and several replies: the reader
    takes every message of its own request and stops at DONE."""
    def message(kind: int, seq: int, port: int | None = None) -> bytes:
        body = b"" if port is None else bytes(4) + port.to_bytes(2, "big") + bytes(66)
        return ports._HEADER.pack(ports._HEADER.size + len(body), kind, 2, seq, 0) + body

    found: set[int] = set()
    assert not ports._take(message(20, 1, 5432) + message(20, 1, 8080), 1, found)
    assert ports._take(message(20, 1, 443) + message(ports._NLMSG_DONE, 1), 1, found)
    assert found == {5432, 8080, 443}
