"""The agent rotates the logs programs write themselves, in directories their users own."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from tenantry.agent import logfiles


def test_a_large_log_is_copied_and_cut_and_its_writer_goes_on_at_the_start(
        tmp_path: Path) -> None:
    log = tmp_path / "web.log"
    writer = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)  # as the program
    try:
        os.write(writer, b"a" * 1000 + b"\n")
        assert logfiles.rotate([log], max_bytes=2000) == []  # not large yet
        os.write(writer, b"b" * 1000 + b"\n")
        assert logfiles.rotate([log], max_bytes=2000) == [log]
        assert (tmp_path / "web.log.1").read_bytes() == b"a" * 1000 + b"\nb" + b"b" * 999 + b"\n"
        assert log.stat().st_size == 0
        os.write(writer, b"after\n")
        assert log.read_bytes() == b"after\n", "no hole: the writer appends at the new end"
    finally:
        os.close(writer)


def test_backups_move_up_and_only_so_many_are_kept(tmp_path: Path) -> None:
    log = tmp_path / "web.log"
    for i in range(5):
        log.write_bytes(f"round {i}\n".encode() * 10)
        assert logfiles.rotate_if_large(log, max_bytes=10, backups=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "web.log", "web.log.1", "web.log.2", "web.log.3"]
    assert [(tmp_path / f"web.log.{n}").read_text().splitlines()[0] for n in (1, 2, 3)] == [
        "round 4", "round 3", "round 2"]


def test_a_link_in_the_users_directory_is_never_followed(tmp_path: Path) -> None:
    """A platform's user owns its logs directory and the agent is root: a log replaced by
    a link (or a hard link to another file) must not get that file copied, cut or given
    away."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 100)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "web.log").symlink_to(secret)
    os.link(secret, logs / "worker.log")
    assert logfiles.rotate([logs / "web.log", logs / "worker.log"], max_bytes=10) == []
    logfiles.hand_over(logs / "web.log", "nobody")
    logfiles.hand_over(logs / "worker.log", "nobody")
    assert secret.read_bytes() == b"s" * 100 and secret.stat().st_uid == os.geteuid()
    assert sorted(p.name for p in logs.iterdir()) == ["web.log", "worker.log"]

    # a link planted where the copy goes: it moves up with the copies, nothing is written
    # through it
    (logs / "db.log").write_bytes(b"d" * 100)
    (logs / "db.log.1").symlink_to(secret)
    assert logfiles.rotate_if_large(logs / "db.log", max_bytes=10, backups=3)
    assert (logs / "db.log.2").is_symlink() and secret.read_bytes() == b"s" * 100
    assert (logs / "db.log.1").read_bytes() == b"d" * 100


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives a file away")
def test_a_log_root_wrote_is_handed_to_the_programs_user(tmp_path: Path) -> None:
    log = tmp_path / "web.log"
    log.write_text("from supervisord\n")
    logfiles.hand_over(log, "nobody")
    assert log.stat().st_uid == pwd.getpwnam("nobody").pw_uid
    assert log.read_text() == "from supervisord\n"
    logfiles.hand_over(tmp_path / "absent.log", "nobody")  # the program makes it
    assert not (tmp_path / "absent.log").exists()
