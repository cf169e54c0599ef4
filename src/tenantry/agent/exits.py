"""Unexpected exits of the host's programs, read from what supervisord writes down.

supervisord logs every exit it did not ask for as `exited: NAME (HOW; not expected)`, with
HOW `exit status N` or `terminated by SIGNAL`, and then starts the program again (its
programs all restart by themselves). The agent reads the new lines of that log on each pass,
one read from where it stopped (kept in a small file beside the log, so that an agent
restart neither repeats nor loses one), and sends what it found with its next report; the
control plane makes each a `PROCESS_RESTARTED` event. Stops the agent asked for are logged as
`stopped:` and are not exits.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from pathlib import Path

from tenantry.core.crypto import write_private
from tenantry.platforms.contract import ProcessExit

log = logging.getLogger(__name__)

_EXITED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ exited: (\S+) "
                     r"\((.+); not expected\)$")
MAX_READ = 1 << 20  # a log that grew more than this since the last pass: the rest is skipped
MAX_PENDING = 500  # exits kept while the control plane is away


class ExitLog:
    def __init__(self, log_file: Path, state_file: Path) -> None:
        self.log_file, self.state_file = log_file, state_file
        self._lock = threading.Lock()
        self._pending: list[ProcessExit] = []
        self._inode, self._offset = self._load()

    def _load(self) -> tuple[int, int]:
        try:
            doc = json.loads(self.state_file.read_text())
            return int(doc["inode"]), int(doc["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            try:  # first run: what is in the log already is history, not news
                st = self.log_file.stat()
                return st.st_ino, st.st_size
            except OSError:
                return 0, 0

    def read(self) -> list[ProcessExit]:
        """Take in the exits logged since the last read; those new ones."""
        new: list[ProcessExit] = []
        with self._lock:
            try:
                st = self.log_file.stat()
            except OSError:
                return new
            if st.st_ino != self._inode or st.st_size < self._offset:  # rotated or new
                self._inode, self._offset = st.st_ino, 0
            if st.st_size == self._offset:
                return new
            with self.log_file.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read(MAX_READ)
            end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next read
            if end == 0 and len(chunk) < MAX_READ:
                return new
            for line in chunk[:end].decode(errors="replace").splitlines():
                found = _EXITED.match(line.strip())
                if found is None:
                    continue
                # supervisord writes the host's local time
                when = time.mktime(time.strptime(found.group(1), "%Y-%m-%d %H:%M:%S")) + \
                    int(found.group(2)) / 1000
                new.append(ProcessExit(program=found.group(3), how=found.group(4), at=when))
            self._pending.extend(new)
            del self._pending[:-MAX_PENDING]
            self._offset += end if end else len(chunk)
            try:
                write_private(self.state_file, json.dumps(
                    {"inode": self._inode, "offset": self._offset}).encode())
            except OSError as exc:
                log.warning("cannot keep the position in %s: %s", self.log_file, exc)
        return new

    def take(self) -> list[ProcessExit]:
        """The exits to send now (a report sent at the same time from another thread does
        not send them again); `put_back` them if the report fails."""
        with self._lock:
            taken, self._pending = self._pending, []
            return taken

    def pending(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def put_back(self, exits: list[ProcessExit]) -> None:
        with self._lock:
            self._pending = (exits + self._pending)[-MAX_PENDING:]


def supervisord_log(services_root: Path) -> Path:
    return services_root / "logs" / "supervisord.log"


def state_path(services_root: Path) -> Path:
    return services_root / "exits.json"

