"""Several machines, one library: three daemons on one Redis and one library folder, one of
them reaching Redis through a proxy the test cuts for twice the lease and heals, another
killed with SIGKILL (and restarted, as systemd would), the same tracks asked at two
qualities through different daemons. Afterwards every job completed exactly once, each
track is once in the library at the best quality asked, every file decodes to the fake's
source audio, staging is empty and no daemon died. Prints its figures as one JSON line."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from tests.helpers import CuttableProxy, DaemonProcess, FakeProcess, RedisServer, wait_until
from tests.test_chaos import decoded_md5
from tidalq.media import tags
from tidalq.testing.fakeapi import FakeUpstream

ALBUMS = {100: 3, 110: 3, 200: 4, 410: 1}
LEASE_S = 2.0



def test_a_partition_a_kill_and_two_qualities(tmp_path: Path, fake_proc: FakeProcess,
                                             media_cache: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    proxy = CuttableProxy(server.port)
    library = tmp_path / "lib"
    base = {**fake_proc.env(), "TIDAL_DOWNLOADS": str(library), "TIDALQ_LEASE": f"{LEASE_S}s",
            "TIDALQ_POLL_INTERVAL": "0.5", "TIDALQ_MAX_CONCURRENT": "2",
            "TIDALQ_STATE_DIR": str(tmp_path / "state")}
    direct = {**base, "TIDALQ_STORE": server.url}
    proxied = {**base, "TIDALQ_STORE": f"redis://127.0.0.1:{proxy.port}/0"}
    a = DaemonProcess(tmp_path, direct, "a")
    b = DaemonProcess(tmp_path, direct, "b")
    c = DaemonProcess(tmp_path, proxied, "c")
    fake_proc.faults(throttle_bps=300_000)
    began = time.monotonic()
    try:
        for d in (a, b, c):
            d.start()
        jobs = [a.cli("add", "album", str(n)).stdout.strip() for n in ALBUMS]
        # one hi-res album, asked at both qualities through different daemons
        jobs.append(b.cli("add", "album", "600", "--quality", "LOSSLESS").stdout.strip())
        jobs.append(c.cli("add", "album", "600", "--quality", "HI_RES_LOSSLESS").stdout.strip())
        jobs.append(a.cli("add", "track", "6001", "--quality", "LOSSLESS").stdout.strip())

        def c_is_busy() -> bool:
            return any(j.get("daemon") is None for j in c.json("status")["active"])

        wait_until(c_is_busy, 30, "the proxied daemon running a job")
        assert {d["host"] for d in a.json("status")["daemons"]} and \
            len(a.json("status")["daemons"]) == 3, "status lists every live daemon"
        seen_elsewhere = [j for j in a.json("status")["active"] if j.get("daemon")]
        assert seen_elsewhere, "daemon a shows what b and c run"
        text = a.cli("status").stdout
        assert "daemons: " in text and f" on {seen_elsewhere[0]['daemon']}" in text
        proxy.cut()
        cut_at = time.monotonic()
        time.sleep(2 * LEASE_S)
        b.signal(signal.SIGKILL)
        b.wait_exit(10)
        proxy.heal()
        healed_at = time.monotonic()
        b.start()  # as systemd restarts it
        fake_proc.faults(throttle_bps=None)
        out = a.cli("wait", *jobs, "--timeout", "180", check=False, timeout=240)
        assert out.returncode == 0, out.stdout + out.stderr + c.log()[-3000:]
        done_at = time.monotonic()
        shown = [a.json("show", j) for j in jobs]
        alive = [d.proc is not None and d.proc.poll() is None for d in (a, b, c)]
        c_log = c.log()
    finally:
        fake_proc.faults(throttle_bps=None)
        for d in (a, b, c):
            d.stop()
        proxy.close()

    assert all(j["status"] == "completed" for j in shown), [j["status"] for j in shown]
    assert alive == [True, True, True], "no daemon died"
    with redis.Redis(port=server.port, decode_responses=True) as client:
        events = client.xrange("tidalq:events")
    server.stop()
    completions = Counter(e["job"] for _, e in events if e.get("kind") == "completed")
    assert all(completions[j] == 1 for j in jobs), completions

    files = sorted(p for p in library.rglob("*.flac") if ".tidalq" not in p.parts)
    ids = [tags.read_identity(p) for p in files]
    assert len({t for t, _ in ids}) == len(files), "each track once in the library"
    assert len(files) == sum(ALBUMS.values()) + 2
    source = FakeUpstream(media_cache)
    for path, (track_id, quality) in zip(files, ids, strict=True):
        assert track_id is not None
        hires = source.catalog.tracks[int(track_id)].album_id == 600
        assert quality == ("HI_RES_LOSSLESS" if hires else "LOSSLESS"), (path, quality)
        assert decoded_md5(path) == source.source_md5(int(track_id), hires), path
        subprocess.run(["flac", "-t", "-s", str(path)], check=True, capture_output=True)
    assert [p for p in (library / ".tidalq" / "staging").rglob("*") if p.is_file()] == []
    assert "job store is back" in c_log
    print(json.dumps(figures(shown, files, fake_proc, began, cut_at, healed_at, done_at, c_log)))


def figures(shown: list[dict[str, Any]], files: list[Path], fake: FakeProcess, began: float,
            cut_at: float, healed_at: float, done_at: float, c_log: str) -> dict[str, Any]:
    fetched = Counter(r["path"] for r in fake.requests() if r["path"].startswith("/cdn/"))
    return {"bench": "several_machines", "daemons": 3, "jobs": len(shown),
            "tracks": len(files), "attempts": sum(j["attempts"] for j in shown),
            "cdn_requests": sum(fetched.values()),
            "files_fetched_again": sum(n - 1 for n in fetched.values() if n > 1),
            "cut_s": round(healed_at - cut_at, 1),
            "stopped_at_deadline": "lease not renewed" in c_log or "lease lost" in c_log,
            "recover_s": round(done_at - healed_at, 1), "total_s": round(done_at - began, 1)}
