"""Object-store requests of backups, and the repository's size after a week (issue 8).

A real `tenantry up` backing up into a real S3-compatible server (moto, signatures checked,
behind a Caddy TLS front, as in the tests); moto logs every request, and the bench counts
the lines. With --platforms idle bodyshop platforms:

1. idle: nothing written for --minutes; every request in that time is WAL archiving and
   checking of idle clusters (PostgreSQL writes a little WAL at each checkpoint, and
   archive_timeout ships a segment when there was any);
2. the schedule: one of each scheduled task (full, diff, incr, verify, restore-test) on an
   idle platform, its requests counted; the default schedule's daily share of them
   (a full every 7 days, a differential on the other days, 5 incrementals, a verify, a restore
   test every 7 days) is added to the idle rate: requests per idle platform per hour
   (aim: <= 120);
3. a week on one platform: 2 MB of new repair jobs every 4 hours and the backup the default
   schedule takes then (a differential each day, incrementals in between, after the
   creation's full), 42 backups in all; then the repository's objects and bytes in the store.

    .venv/bin/python bench/backup_requests.py [--platforms 3] [--minutes 10] [--report]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ISV,
    TENANT,
    ControlPlaneProcess,
    append_report,
    free_port,
    machine_facts,
    md_table,
    other_tenantry_ups,
    setup_isv,
    short_tmp,
)
from dr_drill import superuser  # noqa: E402
from tests.s3server import moto_server, tls_front  # noqa: E402

REQUEST = re.compile(r'"(?:\x1b\[[0-9;]*m)?(GET|PUT|HEAD|POST|DELETE) /')
# The default schedule's tasks per day (backups.jobs.EVERY): a full every 7 days, a
# differential on the 6 other days, 5 incrementals between, a verify, a restore test weekly.
PER_DAY = {"full": 1 / 7, "diff": 6 / 7, "incr": 5, "verify": 1, "restore-test": 1 / 7}


def count(log: Path) -> int:
    return len(REQUEST.findall(log.read_text(errors="replace")))


def cli_json(cp: ControlPlaneProcess, *args: str) -> Any:
    return json.loads(cp.cli(*args, "--json", timeout=3600).stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--platforms", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--days", type=int, default=7, help="of the simulated week")
    ap.add_argument("--report", action="store_true", help="append to docs/benchmarks.md")
    args = ap.parse_args()
    others = other_tenantry_ups()
    facts = machine_facts()
    root = short_tmp("tnb-s3-")
    with moto_server() as s3, tls_front(s3.endpoint) as front:
        assert s3.log is not None
        bucket = s3.new_bucket(lock=False)
        env = {"TENANTRY_BACKUP_URL": f"s3://{bucket}/backups",
               "TENANTRY_BACKUP_ENDPOINT": front.endpoint,
               "TENANTRY_BACKUP_REGION": s3.region,
               "TENANTRY_BACKUP_ACCESS_KEY_ID": s3.access_key_id,
               "TENANTRY_BACKUP_SECRET_ACCESS_KEY": s3.secret_access_key,
               "TENANTRY_BACKUP_CA_FILE": str(front.ca_file)}
        cp = ControlPlaneProcess(data_dir=root / "data", listen_port=free_port(),
                                 ingress_port=free_port(), extra_env=env)
        try:
            cp.start()
            setup_isv(cp, root)
            made = [cli_json(cp, "platform", "create", ISV, "--tenant", TENANT, "--name",
                             f"idle{i}", "--app", "bodyshop@1.0.0", "--wait")
                    for i in range(args.platforms)]
            time.sleep(30)  # the creations' last WAL shipped
            mark = count(s3.log)
            started = time.monotonic()
            time.sleep(args.minutes * 60)
            idle = count(s3.log) - mark
            hours = (time.monotonic() - started) / 3600
            idle_rate = idle / args.platforms / hours
            print(f"idle: {idle} requests from {args.platforms} platforms in "
                  f"{hours * 60:.1f} min: {idle_rate:.1f} per platform per hour", flush=True)

            per_task: dict[str, int] = {}
            for kind in ("incr", "diff", "full", "verify", "restore-test"):
                mark = count(s3.log)
                ran = cli_json(cp, "backup", "run", f"{ISV}/idle0", "--type", kind, "--wait")
                assert ran["state"] == "succeeded", ran
                time.sleep(2)
                per_task[kind] = count(s3.log) - mark
            print("requests per task:", per_task, flush=True)
            scheduled_rate = sum(PER_DAY[k] * per_task[k] for k in PER_DAY) / 24

            week = made[-1]
            ref = f"{ISV}/{week['name']}"
            mark = count(s3.log)
            for day in range(args.days):
                for slot in range(6):
                    with superuser(cp, week) as conn:
                        conn.execute(
                            "INSERT INTO jobs (registration, customer) SELECT 'WK ' || g, "
                            "array_to_string(ARRAY(SELECT gen_random_uuid()::text FROM "
                            "generate_series(1, 28) WHERE g > 0), '') "
                            "FROM generate_series(1, 2000) g")
                    kind = "diff" if slot == 0 else "incr"
                    ran = cli_json(cp, "backup", "run", ref, "--type", kind, "--wait")
                    assert ran["state"] == "succeeded", ran
                print(f"day {day + 1} of the week backed up", flush=True)
            week_requests = count(s3.log) - mark
            prefix = f"backups/{ISV}/{week['id']}/"
            objects, size = 0, 0
            for page in s3.client().get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    objects += 1
                    size += int(obj["Size"])
            with superuser(cp, week) as conn:
                db = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            db_size = int(db[0]) if db else 0
            backups = cli_json(cp, "backup", "list", ref)
        finally:
            cp.stop()
            cp.cleanup()
            shutil.rmtree(root, ignore_errors=True)

    total_rate = idle_rate + scheduled_rate
    body = (
        md_table(["measure", "value"], [
            ("idle platforms", args.platforms),
            ("idle time", f"{hours * 60:.1f} min"),
            ("requests while idle", idle),
            ("idle: requests per platform per hour", f"{idle_rate:.1f}"),
            *((f"requests of one {k}", v) for k, v in per_task.items()),
            ("schedule: requests per platform per hour (default schedule's daily share / 24)",
             f"{scheduled_rate:.1f}"),
            ("**total per idle platform per hour** (aim <= 120)", f"**{total_rate:.1f}**"),
            (f"{args.days} days: backups (the creation's full, then a diff and 5 incr a day)",
             len(backups)),
            (f"{args.days} days: requests of its {6 * args.days} backups", week_requests),
            (f"{args.days} days: database size at the end", f"{db_size / 2**20:.1f} MiB"),
            (f"{args.days} days: repository objects", objects),
            (f"{args.days} days: repository size", f"{size / 2**20:.1f} MiB"),
        ]) + "\n\nThe week writes 2,000 repair jobs (about 2 MB of random notes) every 4 hours "
             "before each backup; the repository holds the database's backups (lz4, "
             "AES-256), its WAL and the files snapshots.\n")
    print("\n" + body)
    if others:
        print("other tenantry runs were active:", *others, sep="\n  ")
    if args.report:
        append_report("Object-store requests and a week's repository", {
            **facts, "other tenantry runs during it": str(len(others))}, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
