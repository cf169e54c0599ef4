"""Alerts for the NOC console's tests, posted as Alertmanager posts them (payload version 4)
to the running control plane's webhook, with the token `up` gave Alertmanager.

The worker closes an open alert that Prometheus itself does not have after
`sync.CLOSE_AFTER` (30 s): a test fires its alert just before it looks for it.
Each alert is a series of its own (an `instance` label), so that tests firing one check on
one platform again and again are not damped as a flapping check.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

import httpx

from tests.conftest import ControlPlaneProcess


@dataclass
class Injected:
    id: int
    fingerprint: str
    body: dict[str, Any]  # the alert as Alertmanager sent it


def _post(plane: ControlPlaneProcess, alert: dict[str, Any]) -> int:
    token = (plane.data_dir / "monitoring" / "secrets" / "webhook-token").read_text().strip()
    answer = httpx.post(f"{plane.url}/api/v1/monitoring/alertmanager", timeout=30,
                        headers={"Authorization": f"Bearer {token}"},
                        json={"version": "4", "groupKey": "{}:{}", "status": alert["status"],
                              "receiver": "tenantry", "groupLabels": {}, "alerts": [alert]})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["changed"])


def fire(plane: ControlPlaneProcess, platform: str, *, check: str = "responding",
         level: str = "overloaded", summary: str = "instance not responding") -> Injected:
    """A platform alert (`platform` is ISV/NAME on host `local`); its id in the history."""
    now = dt.datetime.now(dt.UTC)
    fingerprint = secrets.token_hex(8)
    labels = {"alertname": f"{check}_{level}", "check": check, "level": level,
              "kind": "platform", "host": "local", "region": "local", "scope": "default",
              "isv": platform.split("/")[0], "platform": platform,
              "instance": f"test-{fingerprint}"}
    body = {"status": "firing", "labels": labels,
            "annotations": {"summary": f"{summary} ({level})", "value": "0", "threshold": "1"},
            "startsAt": now.isoformat(), "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": fingerprint}
    assert _post(plane, body) == 1
    with plane.api() as api:
        found = [a for a in api.get("/alerts", params={"platform": platform, "open": "true"})
                 .json() if a["check"] == check]
    assert found, f"the posted alert is not in the history of {platform}"
    return Injected(id=found[0]["id"], fingerprint=fingerprint, body=body)


def resolve(plane: ControlPlaneProcess, alert: Injected) -> None:
    """Alertmanager's resolution (nothing changes if the worker closed it already)."""
    _post(plane, {**alert.body, "status": "resolved",
                  "endsAt": dt.datetime.now(dt.UTC).isoformat()})
