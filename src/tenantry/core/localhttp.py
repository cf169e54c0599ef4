"""Plain-HTTP calls to services on this machine (an app's health path, Prometheus,
Alertmanager) through one client per process.

`httpx.get` makes a client for each call, and with it a TLS context: about 35 ms of CPU
here, for a plain-HTTP request that then costs 1.4 ms. At a health probe per platform every
few seconds that was most of an idle agent's CPU. Connections are not kept alive: an app's
server may give each open connection a worker of its own.
"""

from __future__ import annotations

import threading

import httpx

_client: httpx.Client | None = None
_lock = threading.Lock()


def client() -> httpx.Client:
    """The process's client (thread-safe); give each call its own `timeout`."""
    global _client
    with _lock:
        if _client is None:
            _client = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0),
                                   timeout=10.0)
        return _client
