"""Which signals stop `tenantry up` cleanly: a closed terminal (SIGHUP) does, unless SIGHUP
is ignored, as `nohup` leaves it, where closing the terminal must stop nothing."""

from __future__ import annotations

import signal
import subprocess
import sys


def _signals_in_a_child(preexec: str) -> str:
    code = (f"import signal; {preexec}; from tenantry.cli.serve import stop_signals; "
            "print(sorted(s.name for s in stop_signals()))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_closed_terminal_stops_up_as_ctrl_c_does() -> None:
    assert _signals_in_a_child("pass") == str(["SIGHUP", "SIGINT", "SIGTERM"])


def test_under_nohup_a_closed_terminal_stops_nothing() -> None:
    ignored = _signals_in_a_child("signal.signal(signal.SIGHUP, signal.SIG_IGN)")
    assert ignored == str(["SIGINT", "SIGTERM"])
    assert signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN  # this process untouched
