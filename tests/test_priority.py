"""`tidalq priority JOB high|normal|low` and the HTTP action that does the same: a waiting
job moves in the queue, observed by the order the daemon starts the jobs in."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.helpers import free_port


def patch(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="PATCH",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_priority_moves_waiting_jobs(make_daemon: Any) -> None:
    port = free_port()
    d = make_daemon(TIDALQ_MAX_CONCURRENT="1", TIDALQ_HTTP=f"127.0.0.1:{port}")
    d.cli("pause")
    first, second, third, fourth = (d.cli("add", "track", str(n)).stdout.strip()
                                    for n in (1001, 1002, 1003, 2001))
    assert d.cli("priority", third[:16], "high").stdout.strip() == f"{third} priority high"
    d.cli("priority", first, "LOW")
    status, body = patch(f"http://127.0.0.1:{port}/api/download-queue/{fourth}",
                         {"action": "set_priority", "priority": "high"})
    assert status == 200 and body["success"], body
    assert patch(f"http://127.0.0.1:{port}/api/download-queue/{fourth}",
                 {"action": "set_priority", "priority": "urgent"})[0] == 400
    d.cli("resume")
    d.cli("wait", first, second, third, fourth, "--timeout", "60")
    started = sorted((d.json("show", j)["startedAt"], j) for j in (first, second, third, fourth))
    assert [j for _, j in started] == [third, fourth, second, first]

    done = d.cli("priority", third, "low", check=False)
    assert done.returncode == 1 and "it is completed" in done.stderr
    assert patch(f"http://127.0.0.1:{port}/api/download-queue/{third}",
                 {"action": "set_priority", "priority": "low"})[0] == 409
    assert d.cli("priority", third, "urgent", check=False).returncode == 2
