"""What authorising a request costs: the token check and scoping, over a route without them.

Starts a fresh `tenantry up` and, in the same run, times R requests (default 500, after a
warm-up) of `GET /api/v1/health` (no token, no database) and of `GET /api/v1/me` (bearer
token looked up by hash, user loaded, principal built) on one kept-alive connection.
Target: p50 overhead ≤ 2 ms.

    .venv/bin/python bench/auth_overhead.py [--repeat 500]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

import httpx
from _common import append_report, machine_facts, md_table, short_tmp, start_plane

TARGET_MS = 2.0


def timed(client: httpx.Client, path: str, repeat: int, headers: dict[str, str]) -> list[float]:
    for _ in range(20):
        client.get(path, headers=headers)
    took = []
    for _ in range(repeat):
        start = time.perf_counter()
        answer = client.get(path, headers=headers)
        took.append((time.perf_counter() - start) * 1000)
        assert answer.status_code == 200, answer.text
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=500)
    args = parser.parse_args()
    root = short_tmp("tnb-")
    cp = start_plane(root)
    try:
        with httpx.Client(base_url=f"{cp.url}/api/v1", timeout=30) as client:
            auth = {"Authorization": f"Bearer {cp.token}"}
            rows, p50 = [], {}
            # Interleave the two so that load from elsewhere hits both alike.
            base, authed = [], []
            for _ in range(5):
                base += timed(client, "/health", args.repeat // 5, {})
                authed += timed(client, "/me", args.repeat // 5, auth)
            for name, values in (("GET /api/v1/health (no auth)", base),
                                 ("GET /api/v1/me (token + principal)", authed)):
                ordered = sorted(values)
                p50[name] = statistics.median(values)
                rows.append([name, f"{p50[name]:.2f}",
                             f"{ordered[int(len(ordered) * 0.95) - 1]:.2f}", len(values)])
                print(f"{name:<40} p50 {p50[name]:.2f} ms")
        overhead = p50["GET /api/v1/me (token + principal)"] - p50["GET /api/v1/health (no auth)"]
        verdict = "PASS" if overhead <= TARGET_MS else "FAIL"
        print(f"overhead p50 {overhead:.2f} ms: {verdict}")
        body = (md_table(["route", "p50 ms", "p95 ms", "n"], rows) +
                f"\n\nAuthorisation overhead (p50 difference): **{overhead:.2f} ms** "
                f"vs target ≤ {TARGET_MS} ms: {verdict}\n")
        append_report("API authorisation overhead (bench/auth_overhead.py)", machine_facts(),
                      body)
    finally:
        cp.cleanup()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
