"""What `tidalq status` (and its JSON, and `watch`) says of a running job: bytes done of
the total, speed over a sliding window, ETA; the page's dashboard carries the same."""

from __future__ import annotations

from typing import Any

from tests.helpers import FakeProcess, at_a_terminal, wait_until


def test_status_shows_bytes_speed_and_eta(make_daemon: Any, fake_proc: FakeProcess) -> None:
    fake_proc.faults(throttle_bps=100_000)
    d = make_daemon()
    try:
        job_id = d.cli("add", "track", "1001").stdout.strip()
        seen: dict[str, Any] = {}

        def figures_known() -> bool:
            active = d.json("status")["active"]
            seen.update(active[0] if active else {})
            return bool(seen.get("speedBps")) and seen.get("etaS") is not None

        wait_until(figures_known, 30, "speed and ETA of the running track")
        assert seen["id"] == job_id
        assert 0 < seen["bytesDone"] < seen["bytesTotal"]
        assert 30_000 < seen["speedBps"] < 300_000, "about the 100 kB/s the CDN gives"
        text = d.cli("status").stdout
        assert " of " in text and "kB/s" in text and "ETA" in text
        speeds = []
        for _ in range(6):
            active = d.json("status")["active"]
            if active and active[0].get("speedBps"):
                speeds.append(active[0]["speedBps"])
        assert speeds and max(speeds) < 3 * min(speeds), f"no wild jumps: {speeds}"
    finally:
        fake_proc.faults(throttle_bps=None)


def test_status_on_an_80_column_terminal_says_what_runs(make_daemon: Any,
                                                         fake_proc: FakeProcess) -> None:
    fake_proc.faults(throttle_bps=50_000)
    d = make_daemon()
    try:
        job_id = d.cli("add", "album", "100").stdout.strip()
        wait_until(lambda: any(j.get("speedBps") and j.get("etaS") is not None
                               for j in d.json("status")["active"]), 30,
                   "the album's speed and ETA known")
        narrow = [line for line in at_a_terminal(d, 80, "status") if line.startswith(job_id)]
        assert len(narrow) == 1 and "Test Artist – First Light" in narrow[0], narrow
        assert "ETA" in narrow[0] and "━" not in narrow[0], "the bar goes before the title"
        wide = [line for line in at_a_terminal(d, 160, "status") if line.startswith(job_id)]
        assert len(wide) == 1 and "━" in wide[0] and "/s" in wide[0], wide
        assert "Test Artist – First Light" in wide[0]
    finally:
        fake_proc.faults(throttle_bps=None)
