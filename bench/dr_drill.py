"""Disaster-recovery drills on a large platform, and backup/restore throughput (issue 8).

A real `tenantry up` with one bodyshop platform whose database is grown to --size-gib
(default 1 GiB: repair jobs with 1 kB of random notes each, written with SQL through the cluster's
own socket), then backed up in full. Then:

- throughput: the full backup's MB/s (pgBackRest with tenantry's settings: lz4, two
  processes, AES-256 encryption, into the local repository), a restore of it into a scratch
  directory (`pgbackrest restore`, as the agent runs it), and in the same run the baseline:
  plain `pg_basebackup` of the same cluster to local disk (plain format, WAL fetched), and a
  copy of that (`cp -a`) as its "restore"; the ratios tenantry / baseline;
- --drills (default 5) `tenantry dr drill` runs: a write load, the database destroyed without
  warning (SIGKILL of the postmaster, data directory and WAL spool deleted), recovered from
  the repository alone; each reports acknowledged and lost commits, RPO and RTO.

Targets: RPO <= 15 s and RTO <= 3 min, median and worst.

    .venv/bin/python bench/dr_drill.py [--size-gib 1] [--drills 5] [--report]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ISV,
    TENANT,
    append_report,
    machine_facts,
    md_table,
    other_tenantry_ups,
    setup_isv,
    short_tmp,
    start_plane,
)

from tenantry.agent.converge import HostPaths  # noqa: E402


def cli_json(cp: Any, *args: str, timeout: float = 3600) -> Any:
    return json.loads(cp.cli(*args, "--json", timeout=timeout).stdout)


def when_free(cp: Any, *args: str, timeout: float = 900) -> Any:
    """The command once the platform is free: a scheduled backup or restore test may hold
    it (the platform runs one job at a time)."""
    deadline = time.monotonic() + timeout
    while True:
        done = cp.cli(*args, "--json", timeout=3600, check=False)
        if done.returncode == 0:
            return json.loads(done.stdout)
        if "busy with another job" not in done.stderr or time.monotonic() > deadline:
            raise SystemExit(f"tenantry {' '.join(args)}: {done.stderr.strip()}")
        time.sleep(2)


def superuser(cp: Any, platform: dict[str, Any]) -> psycopg.Connection[Any]:
    """The platform's cluster through its socket, as its superuser (what the agent uses)."""
    paths = HostPaths(cp.data_dir / "agent")
    sock = paths.socket_dir(platform["id"])
    port = int(next(p.name.rsplit(".", 1)[1] for p in sock.glob(".s.PGSQL.*")
                    if not p.name.endswith(".lock")))
    return psycopg.connect(host=str(sock), port=port, user="postgres", dbname="app",
                           autocommit=True)


def grow(cp: Any, platform: dict[str, Any], gib: float) -> float:
    """Fill the jobs table until the database is `gib` GiB; returns its size in bytes."""
    target = gib * 2**30
    with superuser(cp, platform) as conn:
        while True:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            assert size is not None
            if size[0] >= target:
                return float(size[0])
            # 1 kB of notes per job, random (so that it compresses like real text would
            # not: a worst case for the backup's size).
            conn.execute(
                "INSERT INTO jobs (registration, customer, stage) "
                "SELECT 'BN ' || g, array_to_string(ARRAY(SELECT gen_random_uuid()::text "
                "FROM generate_series(1, 28) WHERE g > 0), ''), 'repair' "
                "FROM generate_series(1, 50000) g")


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=7200, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr[-800:]}")
    return time.monotonic() - started


def throughput(cp: Any, platform: dict[str, Any], root: Path, size: float) -> dict[str, float]:
    """MB/s of tenantry's full backup and restore, and of pg_basebackup and a copy of it."""
    full = cli_json(cp, "backup", "run", f"{ISV}/{platform['name']}", "--type", "full",
                    "--wait")
    assert full["state"] == "succeeded", full
    listed = cli_json(cp, "backup", "list", f"{ISV}/{platform['name']}")
    backup = next(b for b in listed if b["label"] == full["label"])
    pdir = cp.data_dir / "agent" / "platforms" / platform["id"]
    scratch = root / "restore-scratch"
    scratch.mkdir()
    restore = timed(["pgbackrest", f"--config={pdir / 'backup' / 'pgbackrest.conf'}",
                     f"--stanza={platform['id']}", f"--pg1-path={scratch}",
                     f"--set={full['label']}", "--type=immediate",
                     f"--lock-path={root}", f"--log-path={root}", "restore"])
    shutil.rmtree(scratch)
    paths = HostPaths(cp.data_dir / "agent")
    sock = paths.socket_dir(platform["id"])
    port = next(p.name.rsplit(".", 1)[1] for p in sock.glob(".s.PGSQL.*")
                if not p.name.endswith(".lock"))
    base = root / "basebackup"
    # tenantry's pg_hba.conf allows no replication connection: one for this measure only.
    hba = pdir / "pgdata" / "pg_hba.conf"
    kept = hba.read_text()
    hba.write_text(kept + "local replication postgres peer map=tenantry\n")
    with superuser(cp, platform) as conn:
        conn.execute("SELECT pg_reload_conf()")
    try:
        basebackup = timed(["/usr/lib/postgresql/15/bin/pg_basebackup", "-h", str(sock),
                            "-p", port, "-U", "postgres", "-D", str(base), "-X", "fetch",
                            "-c", "fast"])
    finally:
        hba.write_text(kept)
        with superuser(cp, platform) as conn:
            conn.execute("SELECT pg_reload_conf()")
    copy = timed(["cp", "-a", str(base), str(root / "basebackup-copy")])
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(root / "basebackup-copy", ignore_errors=True)
    mb = size / 1e6
    return {"size_mb": mb, "backup_s": backup["duration_seconds"],
            "backup_mb_s": mb / backup["duration_seconds"],
            "stored_mb": backup["stored"] / 1e6,
            "restore_s": restore, "restore_mb_s": mb / restore,
            "basebackup_s": basebackup, "basebackup_mb_s": mb / basebackup,
            "copy_s": copy, "copy_mb_s": mb / copy}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--drills", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=20.0,
                    help="write load before each kill (plus 0-10 s at random)")
    ap.add_argument("--report", action="store_true", help="append to docs/benchmarks.md")
    args = ap.parse_args()

    others = other_tenantry_ups()
    root = short_tmp("tnb-dr-")
    facts = machine_facts()
    cp = start_plane(root)
    try:
        setup_isv(cp, root)
        platform = cli_json(cp, "platform", "create", ISV, "--tenant", TENANT, "--name",
                            "drill", "--app", "bodyshop@1.0.0", "--wait")
        started = time.monotonic()
        size = grow(cp, platform, args.size_gib)
        print(f"database grown to {size / 2**30:.2f} GiB in {time.monotonic() - started:.0f} s",
              flush=True)
        tp = throughput(cp, platform, root, size)
        print("throughput:", json.dumps({k: round(v, 1) for k, v in tp.items()}), flush=True)
        drills = []
        for i in range(args.drills):
            # The destruction falls anywhere between two forced WAL switches (archive_timeout
            # 10 s): a load of a fixed whole number of periods would always hit just after one.
            seconds = round(args.seconds + random.uniform(0, 10), 1)
            drill = when_free(cp, "dr", "drill", f"{ISV}/drill", "--seconds", str(seconds))
            print(f"drill {i + 1}: {drill['result']} acked {drill['acked_commits']} lost "
                  f"{drill['lost_commits']} RPO {drill['rpo_seconds']} s RTO "
                  f"{drill['rto_seconds']} s", flush=True)
            drills.append(drill)
    finally:
        cp.stop()
        cp.cleanup()
        shutil.rmtree(root, ignore_errors=True)

    ok = [d for d in drills if d["result"] == "ok"]
    rpo = [float(d["rpo_seconds"]) for d in ok]
    rto = [float(d["rto_seconds"]) for d in ok]
    rows = [(i + 1, d["result"], d["acked_commits"], d["lost_commits"], d["rpo_seconds"],
             d["rto_seconds"]) for i, d in enumerate(drills)]
    body = (
        f"Database {tp['size_mb']:.0f} MB (bodyshop jobs with 1 kB of random notes), local "
        "repository.\n\n"
        + md_table(["drill", "result", "acked commits", "lost", "RPO s", "RTO s"], rows)
        + "\n\n"
        + (f"RPO median {statistics.median(rpo):.1f} s, worst {max(rpo):.1f} s (target "
           f"<= 15 s); RTO median {statistics.median(rto):.1f} s, worst {max(rto):.1f} s "
           "(target <= 180 s).\n\n" if ok else "No drill succeeded.\n\n")
        + md_table(["", "seconds", "MB/s", "baseline", "baseline MB/s", "ratio"], [
            ("backup (full)", f"{tp['backup_s']:.1f}", f"{tp['backup_mb_s']:.0f}",
             "pg_basebackup", f"{tp['basebackup_mb_s']:.0f}",
             f"{tp['backup_mb_s'] / tp['basebackup_mb_s']:.2f}"),
            ("restore", f"{tp['restore_s']:.1f}", f"{tp['restore_mb_s']:.0f}",
             "cp -a of it", f"{tp['copy_mb_s']:.0f}",
             f"{tp['restore_mb_s'] / tp['copy_mb_s']:.2f}")])
        + f"\n\nThe full backup stored {tp['stored_mb']:.0f} MB (lz4, encrypted) of "
          f"{tp['size_mb']:.0f} MB.\n")
    print("\n" + body)
    if others:
        print("other tenantry runs were active:", *others, sep="\n  ")
    if args.report:
        append_report("DR drills and backup throughput", {
            **facts, "other tenantry runs during it": str(len(others))}, body)
    return 0 if len(ok) == len(drills) else 1


if __name__ == "__main__":
    sys.exit(main())
