"""Logins and sudo runs read from a host's logs, as audit events for tenantry.

sshd (LogLevel VERBOSE) names each certificate it accepts by key id and serial; tenantry
sets the key id to `<username>/<serial>`, so a login is traced to a person and to the
certificate (and its reason) without trusting anything the client says. sudo writes one
line per run to its own log file (see agent.sshd.render_sudoers). The agent tails both,
parses lines with `parse_line` and posts the events to POST /api/v1/ssh/agent/events.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

_ACCEPTED = re.compile(
    r"Accepted publickey for (?P<account>\S+) from (?P<addr>\S+) port \d+ \S+: "
    r"\S+-CERT \S+ ID (?P<key_id>\S+) \(serial (?P<serial>\d+)\)")
_FAILED = re.compile(r"(?:Failed publickey|Invalid user|"
                     r"User (?P<denied>\S+) from \S+ not allowed)"
                     r"(?: for (?:invalid user )?(?P<account>\S+))?(?: from (?P<addr>\S+))?")
_REVOKED = re.compile(r"Authentication key \S+ \S+ revoked by file")
_CERT_REFUSED = re.compile(r"(?:Certificate invalid|cert: Certificate invalid): (?P<why>.*)$")
# TTY= is missing when the command came without a terminal (`ssh host sudo ...`)
_SUDO = re.compile(r"(?P<account>[\w.-]+) : (?:(?P<problem>[^;:=]*?) ; )?(?:TTY=\S+ ; )?PWD=\S+ ; "
                   r"USER=(?P<runas>\S+) ; COMMAND=(?P<command>.*)$")


def parse_line(line: str) -> dict[str, Any] | None:
    """One log line → an event (`action`, `actor`, `account`, ...), or None if it is noise."""
    if m := _ACCEPTED.search(line):
        key_id = m["key_id"]
        return {"action": "ssh.login", "actor": key_id.split("/", 1)[0],
                "account": m["account"], "serial": int(m["serial"]), "from": m["addr"]}
    if _REVOKED.search(line):
        return {"action": "ssh.login.failed", "actor": None, "reason": "revoked"}
    if m := _CERT_REFUSED.search(line):
        return {"action": "ssh.login.failed", "actor": None, "reason": m["why"].strip()}
    if m := _FAILED.search(line):
        account = m["account"] or m["denied"]
        return {"action": "ssh.login.failed", "actor": None, "account": account,
                "from": m["addr"]}
    if m := _SUDO.search(line):
        event: dict[str, Any] = {"action": "host.sudo", "actor": None,
                                 "account": m["account"], "runas": m["runas"],
                                 "command": m["command"].strip()}
        if m["problem"]:
            event["refused"] = m["problem"].strip()
        return event
    return None


def parse_lines(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        event = parse_line(line)
        if event is not None:
            yield event
