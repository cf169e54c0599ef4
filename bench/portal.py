"""Portal page latency: how long each page takes to render, logged in, with real data.

Starts a fresh `tenantry up`, creates ISV bms with N platforms (default 5), logs in as
admin through the form (with its CSRF token), then requests each page R times (default 20)
and reports the server round trip p50/p95/max per page. Target: p50 ≤ 100 ms.

    .venv/bin/python bench/portal.py [--platforms 5] [--repeat 20]
"""

from __future__ import annotations

import argparse
import re
import shutil
import time

import httpx
from _common import (
    append_report,
    create_platform,
    machine_facts,
    md_table,
    setup_isv,
    short_tmp,
    start_plane,
    summary,
    wait_job,
)

TARGET = 0.100


def login(client: httpx.Client, password: str) -> None:
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert token, "no CSRF token on the login page"
    answer = client.post("/login", data={"username": "admin", "password": password,
                                         "csrf": token.group(1), "next": "/"})
    assert answer.status_code == 303, answer.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--platforms", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    root = short_tmp("tnb-")
    cp = start_plane(root)
    try:
        setup_isv(cp, root)
        created = [create_platform(cp, f"p{i}") for i in range(args.platforms)]
        for result in created:
            wait_job(cp, result["job_id"])
        platform_id = created[0]["id"]
        job_id = created[0]["job_id"]
        pages = ["/", "/?isv=bms", "/platforms/new", f"/platforms/{platform_id}",
                 f"/platforms/{platform_id}/live", "/jobs", f"/jobs/{job_id}", "/events"]
        password = (cp.data_dir / "admin-password").read_text().strip()
        rows = []
        with httpx.Client(base_url=cp.url, timeout=30) as client:
            login(client, password)
            for page in pages:
                client.get(page)  # warm
                took = []
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    assert client.get(page).status_code == 200, page
                    took.append(time.perf_counter() - start)
                s = summary(took)
                verdict = "PASS" if s["p50"] <= TARGET else "FAIL"
                rows.append([page, f"{s['p50'] * 1000:.1f}", f"{s['p95'] * 1000:.1f}",
                             f"{s['max'] * 1000:.1f}", verdict])
                print(f"{page:<40} p50 {s['p50'] * 1000:6.1f} ms  p95 {s['p95'] * 1000:6.1f} ms")
        body = (f"{args.platforms} ready platforms, {args.repeat} requests a page after one "
                "warm-up, logged in through the form; time is the full HTTP round trip on "
                "loopback.\n\n" +
                md_table(["page", "p50 ms", "p95 ms", "max ms", "vs p50 ≤ 100 ms"], rows))
        append_report("Portal page latency (bench/portal.py)", machine_facts(), body)
    finally:
        cp.cleanup()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
