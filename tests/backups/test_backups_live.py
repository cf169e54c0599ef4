"""Backups against a real `tenantry up` and the real pgBackRest: every new platform ends its
creation backed up, WAL is archived within seconds, backups on demand, the recoverable
window, the ISV's escrowed key, and one ISV never reaching another's backups."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ControlPlaneProcess, api_as, person_token, wait_until

pytestmark = pytest.mark.slow


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _repo(plane: ControlPlaneProcess, isv: str, pid: str) -> Path:
    return plane.data_dir / "backups" / isv / pid


def _info(repo: Path, stanza: str, cipher: str, tmp: Path) -> dict[str, Any]:
    """`pgbackrest info` with nothing of tenantry's: the repository and a passphrase."""
    conf = tmp / f"pgbackrest-{cipher[:4]}.conf"
    conf.write_text(f"[global]\nrepo1-path={repo}\nrepo1-cipher-type=aes-256-cbc\n"
                    f"repo1-cipher-pass={cipher}\nlock-path={tmp}\nlog-path={tmp}\n"
                    "log-level-file=off\n")
    done = subprocess.run(["pgbackrest", f"--config={conf}", f"--stanza={stanza}",
                           "--output=json", "info"], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # A wrong passphrase still answers, with the stanza's status "other" (99).
    found: dict[str, Any] = json.loads(done.stdout.decode(errors="replace"), strict=False)[0]
    return found


def test_a_new_platform_is_backed_up_archives_wal_and_backs_up_on_demand(
        plane: ControlPlaneProcess, isv: str, tmp_path: Path) -> None:
    created = plane.cli_json("platform", "create", isv, "--tenant", "t1",
                             "--app", "bodyshop@1.0.0", "--wait")
    assert created["state"] == "ready"
    ref, host = f"{isv}/t1", f"t1.{isv}.localhost"
    create_job = next(j for j in plane.cli_json("job", "list", "--platform", ref)
                      if j["kind"] == "create")
    steps = plane.cli_json("job", "show", str(create_job["id"]))["steps"]
    assert steps[-1]["name"] == "backup" and steps[-1]["state"] == "done"

    first: list[dict[str, Any]] = plane.cli_json("backup", "list", ref)
    assert [(b["type"], b["status"]) for b in first] == [("full", "ok")]
    assert first[0]["size"] > 1_000_000 and 0 < first[0]["stored"] <= first[0]["size"]
    # The files directory was snapshot with it (empty but for tenantry's marker).
    assert first[0]["files"] is not None and first[0]["files"]["files"] == 1
    window = plane.cli_json("backup", "window", ref)
    # The window opens the second after the first backup stopped (pgBackRest's stop times
    # are whole seconds, and it restores only from a backup that stopped before the target).
    assert _ts(window["earliest"]) == _ts(first[0]["finished_at"]) + 1

    # A commit is archived within seconds (archive_timeout 10 s): the window reaches it.
    made = plane.https(host, "/api/jobs", "POST", json={"registration": "AB 1",
                                                       "customer": "Ana"})
    assert made.status_code == 201, made.text
    committed = time.time()
    took = wait_until(lambda: _ts(plane.cli_json("backup", "window", ref)["latest"])
                      >= committed, 40, "the commit's WAL archived", every=1)
    print(f"commit archived within {took:.1f} s")

    ran = plane.cli_json("backup", "run", ref, "--type", "incr", "--wait")
    assert ran["state"] == "succeeded", ran
    after = plane.cli_json("backup", "list", ref)
    assert [b["type"] for b in after] == ["full", "incr"]
    assert after[-1]["label"] == ran["label"] and after[-1]["label"].startswith(
        first[0]["label"])  # an incremental names the full it builds on
    assert after[-1]["stored"] < first[0]["stored"]
    kinds = [e["kind"] for e in plane.cli_json("events", "--platform", ref)]
    assert kinds.count("BACKUP") == 1 and "BACKUP_REQUESTED" in kinds

    # The repository is encrypted: its files are OpenSSL's salted format, and the
    # ISV's escrowed passphrase opens it with pgBackRest alone; another does not.
    repo = _repo(plane, isv, created["id"])
    info_file = repo / "backup" / created["id"] / "backup.info"
    assert info_file.read_bytes().startswith(b"Salted__")
    keys = plane.cli_json("backup", "key", isv)
    opened = _info(repo, created["id"], keys["pgbackrest_cipher_pass"], tmp_path)
    assert opened["status"]["code"] == 0, opened
    assert [b["label"] for b in opened["backup"]] == [b["label"] for b in after]
    refused = _info(repo, created["id"], "not-" + keys["pgbackrest_cipher_pass"], tmp_path)
    assert refused["status"]["code"] != 0 and not refused["backup"]
    assert "BACKUP_KEY_EXPORTED" in [e["kind"] for e in plane.cli_json("events", "--isv", isv)]

    # pgBackRest's configuration holds the passphrase: only the platform's user reads it.
    conf = plane.data_dir / "agent" / "platforms" / created["id"] / "backup" / "pgbackrest.conf"
    assert conf.stat().st_mode & 0o077 == 0

    # Prometheus has the backup's age and the archive's lag, and rules that page on them.
    prometheus = json.loads((plane.data_dir / "monitoring" / "stack.json").read_text())[
        "prometheus"]

    def series(metric: str) -> list[dict[str, Any]]:
        found = httpx.get(f"{prometheus}/api/v1/query", params={
            "query": f'{metric}{{platform="{ref}"}}'}, timeout=5).json()
        return list(found["data"]["result"])
    def newest() -> float | None:
        found = series("tenantry_backup_last_timestamp_seconds")
        return float(found[0]["value"][1]) if found else None
    # The agent renders /metrics every 2 s and Prometheus scrapes it every 3 s: the first
    # backup's time may still be there for a few seconds after the second one ended.
    wait_until(lambda: newest() == pytest.approx(_ts(after[-1]["finished_at"]), abs=1), 30,
               "the newest backup's end scraped")
    assert float(series("tenantry_backup_archive_lag_seconds")[0]["value"][1]) < 60
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    names = {r["labels"].get("check") for g in rules for r in g["rules"] if "labels" in r}
    assert {"backup_age", "archive_lag", "backup_check"} <= names


def test_another_isv_never_reaches_a_platforms_backups(
        plane: ControlPlaneProcess, isv: str, bundles: dict[str, Path]) -> None:
    from tests.conftest import make_isv

    plane.cli_json("platform", "create", isv, "--tenant", "t2", "--app", "bodyshop@1.0.0",
                   "--wait")
    other = make_isv(plane, bundles)
    _, stranger = person_token(plane, "isv-admin", other)
    _, viewer = person_token(plane, "isv-viewer", isv)
    with api_as(plane, stranger) as api:
        for method, path in (("GET", f"/platforms/{isv}/t2/backups"),
                             ("GET", f"/platforms/{isv}/t2/backups/window"),
                             ("POST", f"/platforms/{isv}/t2/backups"),
                             ("POST", f"/platforms/{isv}/t2/recover"),
                             ("GET", f"/platforms/{isv}/t2/backups/schedule"),
                             ("PUT", f"/platforms/{isv}/t2/backups/schedule"),
                             ("GET", f"/isvs/{isv}/backup-keys")):
            answer = api.request(method, path, json={} if method in ("POST", "PUT") else None)
            assert answer.status_code == 404, (method, path, answer.text)
    with api_as(plane, viewer) as api:
        assert api.get(f"/platforms/{isv}/t2/backups").status_code == 200
        assert api.post(f"/platforms/{isv}/t2/backups", json={}).status_code == 403
        assert api.get(f"/isvs/{isv}/backup-keys").status_code == 403
        assert api.get(f"/platforms/{isv}/t2/backups/schedule").json()["incr"] == "4h"
        assert api.put(f"/platforms/{isv}/t2/backups/schedule",
                       json={"incr": "1h"}).status_code == 403
        bad = api.post(f"/platforms/{isv}/t2/backups", json={"type": "weekly"})
        assert bad.status_code in (403, 422)
    with plane.api() as api:
        bad = api.post(f"/platforms/{isv}/t2/backups", json={"type": "weekly"})
        assert bad.status_code == 422 and "type" in bad.text
        assert len(api.get(f"/platforms/{isv}/t2/backups").json()) == 1  # nothing was started

    # A platform's own schedule: shown, changed by an operator, refused when out of bounds
    # (nothing changes), and back to the defaults.
    ref = f"{isv}/t2"
    assert plane.cli_json("backup", "schedule", ref)["overridden"] == []
    changed = plane.cli_json("backup", "schedule", ref, "--incr", "1h", "--restore-test", "2d")
    assert (changed["incr"], changed["restore_test"], changed["full"]) == ("1h", "2d", "1w")
    assert changed["overridden"] == ["incr", "restore_test"]
    bad = plane.cli("backup", "schedule", ref, "--incr", "1m", check=False)
    assert bad.returncode == 2 and "incr" in bad.stderr and "15m" in bad.stderr
    assert plane.cli_json("backup", "schedule", ref)["incr"] == "1h"
    assert plane.cli_json("backup", "schedule", ref, "--reset")["overridden"] == []
    assert "BACKUP_SCHEDULE" in [e["kind"] for e in plane.cli_json("events", "--platform", ref)]


def _registrations(plane: ControlPlaneProcess, host: str) -> list[str]:
    return sorted(j["registration"] for j in plane.https(host, "/api/jobs").json())


def _photo(plane: ControlPlaneProcess, host: str, job: int) -> str:
    """A repair photo uploaded through the ingress into the platform's files directory."""
    png = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(20_000)
    sent = plane.https(host, f"/api/jobs/{job}/photos", "POST", content=png,
                       headers={"Content-Type": "image/png"})
    assert sent.status_code == 201, sent.text
    return str(sent.json()["name"])


def _photos(plane: ControlPlaneProcess, host: str, job: int) -> list[str]:
    listed = plane.https(host, f"/api/jobs/{job}/photos")
    assert listed.status_code == 200, listed.text
    return [p["name"] for p in listed.json()]


def test_restore_in_place_to_a_chosen_second(plane: ControlPlaneProcess, isv: str) -> None:
    plane.cli_json("platform", "create", isv, "--tenant", "t3", "--app", "bodyshop@1.0.0",
                   "--wait")
    ref, host = f"{isv}/t3", f"t3.{isv}.localhost"
    kept = plane.https(host, "/api/jobs", "POST", json={"registration": "KEEP 1",
                                                        "customer": "Ana"})
    assert kept.status_code == 201
    job = kept.json()["id"]
    before = _photo(plane, host, job)  # files come back as of the last snapshot before
    assert plane.cli_json("backup", "run", ref, "--type", "incr", "--wait")["state"] == \
        "succeeded"
    time.sleep(1.5)
    chosen = dt.datetime.now(dt.UTC).replace(microsecond=0)
    time.sleep(1.5)
    assert plane.https(host, "/api/jobs", "POST",
                       json={"registration": "LOSE 2", "customer": "Bo"}).status_code == 201
    lost = _photo(plane, host, job)
    after = time.time()
    wait_until(lambda: _ts(plane.cli_json("backup", "window", ref)["latest"]) >= after, 40,
               "the second commit archived", every=1)
    assert _registrations(plane, host) == ["KEEP 1", "LOSE 2"]
    assert sorted(_photos(plane, host, job)) == sorted([before, lost])

    # Outside the window: refused with the window in the message, and nothing started.
    window = plane.cli_json("backup", "window", ref)
    jobs_before = plane.cli_json("job", "list", "--platform", ref)
    early = plane.cli("backup", "restore", ref, "--to-time", "2020-01-01T00:00:00Z",
                      check=False)
    assert early.returncode == 2, early.stderr
    assert "outside the recoverable window" in early.stderr
    assert window["earliest"][:19] in early.stderr.replace("Z", "")
    assert plane.cli_json("job", "list", "--platform", ref) == jobs_before
    both = plane.cli("backup", "restore", ref, "--latest", "--to-time", chosen.isoformat(),
                     check=False)
    assert both.returncode == 2 and "to_time" in both.stderr

    started = time.monotonic()
    done = plane.cli_json("backup", "restore", ref, "--to-time", chosen.isoformat(), "--wait")
    print(f"restore in place took {time.monotonic() - started:.1f} s")
    assert done["state"] == "succeeded", done
    assert _registrations(plane, host) == ["KEEP 1"]
    assert _photos(plane, host, job) == [before]
    shown = plane.cli_json("platform", "show", ref)
    assert shown["state"] == "ready" and shown["error"] is None
    job = plane.cli_json("job", "show", str(done["job_id"]))
    assert [s["name"] for s in job["steps"]] == ["configure", "stop app", "safety backup",
                                                 "stop database", "restore", "start", "health"]
    kinds = [e["kind"] for e in plane.cli_json("events", "--platform", ref)]
    assert "RESTORE" in kinds
    # The safety backup is in the list, and the platform goes on writing and archiving.
    assert len(plane.cli_json("backup", "list", ref)) == 3
    assert plane.https(host, "/api/jobs", "POST",
                       json={"registration": "NEW 3", "customer": "Cy"}).status_code == 201
    assert _registrations(plane, host) == ["KEEP 1", "NEW 3"]


def test_dr_drill_destroys_the_database_and_recovers_it_from_the_repository(
        plane: ControlPlaneProcess, isv: str) -> None:
    plane.cli_json("platform", "create", isv, "--tenant", "t1", "--app", "bodyshop@1.0.0",
                   "--wait")
    ref, host = f"{isv}/t1", f"t1.{isv}.localhost"
    assert plane.https(host, "/api/jobs", "POST",
                       json={"registration": "DR 1", "customer": "Ana"}).status_code == 201
    pgdata = next((plane.data_dir / "agent" / "platforms").glob("*/pgdata"), None)
    assert pgdata is not None
    moved = plane.cli("dr", "drill", ref, "--host", "elsewhere", check=False)
    assert moved.returncode == 2 and "host" in moved.stderr

    drill = plane.cli_json("dr", "drill", ref, "--host", "local", "--seconds", "15")
    print("drill:", drill)
    assert drill["result"] == "ok", drill
    assert drill["acked_commits"] > 50  # the load really ran
    assert 0 <= drill["lost_commits"] < drill["acked_commits"]
    assert drill["rpo_seconds"] is not None and drill["rpo_seconds"] <= 15
    assert drill["rto_seconds"] is not None and 0 < drill["rto_seconds"] < 180
    assert drill["same_host"] is True
    # The app serves its data again, and the drill is on the platform's record.
    assert _registrations(plane, host) == ["DR 1"]
    assert plane.cli_json("platform", "show", ref)["state"] == "ready"
    assert [d["job_id"] for d in plane.cli_json("dr", "drills", ref)] == [drill["job_id"]]
    assert "DRILL" in [e["kind"] for e in plane.cli_json("events", "--platform", ref)]
    # It goes on being backed up: a new backup of the recovered cluster works.
    assert plane.cli_json("backup", "run", ref, "--type", "full", "--wait")["state"] == \
        "succeeded"


def test_verify_and_restore_test_prove_the_backups(plane: ControlPlaneProcess,
                                                   isv: str) -> None:
    plane.cli_json("platform", "create", isv, "--tenant", "t2", "--app", "bodyshop@1.0.0",
                   "--wait")
    ref, host = f"{isv}/t2", f"t2.{isv}.localhost"
    for i in range(3):
        made = plane.https(host, "/api/jobs", "POST", json={
            "registration": f"RT {i}", "customer": "Ana"})
        assert made.status_code == 201
    _photo(plane, host, made.json()["id"])
    assert plane.cli_json("backup", "run", ref, "--type", "incr", "--wait")["state"] == \
        "succeeded"
    verified = plane.cli_json("backup", "run", ref, "--type", "verify", "--wait")
    assert verified["state"] == "succeeded", verified
    tested = plane.cli_json("backup", "run", ref, "--type", "restore-test", "--wait")
    assert tested["state"] == "succeeded", tested
    drills = plane.cli_json("dr", "drills", ref)
    assert [(d["kind"], d["result"]) for d in drills] == [("restore-test", "ok")]
    # The restored copy was read: the app's jobs table with its 3 rows among the rest.
    assert "tables" in drills[0]["detail"] and " rows " in drills[0]["detail"]
    rows = int(drills[0]["detail"].split(" tables, ")[1].split(" rows")[0])
    assert rows >= 3
    assert ", 1 files (" in drills[0]["detail"], drills[0]["detail"]  # the photo, restored
    # and the app's own smoke check (`[backup] smoke`) read them in the copy
    assert "the app's smoke check passed (3 jobs, 1 photos)" in drills[0]["detail"]
    events = plane.cli_json("events", "--platform", ref)
    assert any(e["kind"] == "BACKUP" and "verify" in e["message"] for e in events)
    assert any(e["kind"] == "DRILL" and "restore test" in e["message"] for e in events)
    # Nothing of the scratch cluster is left: no directory, no process.
    pid = plane.cli_json("platform", "show", ref)["id"]
    assert not list((plane.data_dir / "agent" / "platforms" / pid).glob("scratch-*"))
    assert plane.https(host, "/health").status_code == 200


def test_clone_a_platform_as_it_was_at_a_chosen_second(plane: ControlPlaneProcess,
                                                       isv: str) -> None:
    source = plane.cli_json("platform", "create", isv, "--tenant", "t1", "--name", "prod",
                            "--app", "bodyshop@1.0.0", "--wait")
    ref, host = f"{isv}/prod", f"prod.{isv}.localhost"
    orig = plane.https(host, "/api/jobs", "POST", json={"registration": "ORIG 1",
                                                        "customer": "Ana"})
    assert orig.status_code == 201
    job = orig.json()["id"]
    photo = _photo(plane, host, job)
    assert plane.cli_json("backup", "run", ref, "--type", "incr", "--wait")["state"] == \
        "succeeded"
    time.sleep(1.5)
    chosen = dt.datetime.now(dt.UTC).replace(microsecond=0)
    time.sleep(1.5)
    assert plane.https(host, "/api/jobs", "POST",
                       json={"registration": "LATER 2", "customer": "Bo"}).status_code == 201
    after = time.time()
    wait_until(lambda: _ts(plane.cli_json("backup", "window", ref)["latest"]) >= after, 40,
               "the second commit archived", every=1)
    early = plane.cli("platform", "clone", ref, "--name", "old", "--to-time",
                      "2020-01-01T00:00:00Z", check=False)
    assert early.returncode == 2 and "outside the recoverable window" in early.stderr
    bad = plane.cli("platform", "clone", ref, "--name", "Not A Name", check=False)
    assert bad.returncode == 2 and "name" in bad.stderr

    clone = plane.cli_json("platform", "clone", ref, "--name", "staging", "--to-time",
                           chosen.isoformat(), "--wait")
    assert clone["state"] == "ready", clone
    assert clone["id"] != source["id"] and clone["release"] == "bodyshop@1.0.0"
    staging = f"staging.{isv}.localhost"
    assert _registrations(plane, staging) == ["ORIG 1"]
    assert _photos(plane, staging, job) == [photo]  # the files came with the database
    assert _registrations(plane, host) == ["LATER 2", "ORIG 1"]
    # The copy is a platform of its own: its own writes, its own backups.
    assert plane.https(staging, "/api/jobs", "POST",
                       json={"registration": "STAGE 3", "customer": "Cy"}).status_code == 201
    assert _registrations(plane, host) == ["LATER 2", "ORIG 1"]
    assert [b["type"] for b in plane.cli_json("backup", "list", f"{isv}/staging")] == ["full"]
