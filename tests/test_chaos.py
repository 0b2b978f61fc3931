"""Chaos: several albums while the daemon is SIGKILLed at 20 random moments and the wall
clock jumps an hour once under a running daemon (libfaketime; the monotonic clock goes on).
Afterwards every job completed exactly once, every file decodes to the fake's source audio,
staging is empty and no track exists twice. Prints its figures as one JSON line."""

from __future__ import annotations

import glob
import hashlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DaemonProcess, FakeProcess
from tidalq.media import tags
from tidalq.testing.fakeapi import FakeUpstream

ALBUMS = {300: 210, 100: 3, 110: 3, 200: 4, 600: 2, 410: 1}
HIRES_ALBUMS = {600}
KILLS = 20
JUMP_AT = 9  # the clock jumps under the daemon started for this round
RECLAIMED = "claimed again while running here"


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        raise RuntimeError("libfaketime is not installed; run scripts/test")
    return found[0]


def decoded_md5(path: Path) -> bytes:
    pcm = subprocess.run(["flac", "-d", "-c", "-s", "--force-raw-format", "--endian=little",
                          "--sign=signed", str(path)], check=True, capture_output=True).stdout
    return hashlib.md5(pcm).digest()


@pytest.mark.slow
def test_kill_nine_twenty_times_and_a_clock_jump(tmp_path: Path, fake_proc: FakeProcess,
                                                 media_cache: Path) -> None:
    rng = random.Random(20261129)
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    library, db = tmp_path / "lib", tmp_path / "queue.db"
    env = {**fake_proc.env(), "TIDAL_DOWNLOADS": str(library), "TIDALQ_STORE": f"sqlite:///{db}",
           "TIDALQ_LEASE": "3s", "TIDALQ_POLL_INTERVAL": "0.5",
           # twenty kills in a minute would rightly fail a job as a poison pill (its own
           # test covers that); here every kill is the operator's, not the job's
           "TIDALQ_MAX_STALLS": "100",
           "LD_PRELOAD": libfaketime(), "FAKETIME_TIMESTAMP_FILE": str(clock),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    fake_proc.faults(throttle_bps=2_000_000)
    daemon = DaemonProcess(tmp_path, env, "chaos")
    began = time.monotonic()
    daemon.start()
    job_ids = [daemon.cli("add", "album", str(a), "--quality",
                          "HI_RES_LOSSLESS" if a in HIRES_ALBUMS else "LOSSLESS").stdout.strip()
               for a in ALBUMS]
    job_ids += [daemon.cli("add", "track", "1003").stdout.strip()]  # also on album 100
    kills = 0
    for round_no in range(KILLS):
        if round_no:
            daemon.start()
        if round_no == JUMP_AT:
            # a laptop suspended past the lease: the wall clock jumps an hour on resume
            daemon.signal(signal.SIGSTOP)
            clock.write_text("+3600\n")
            time.sleep(4.0)  # longer than the 3 s lease, by the real clock
            daemon.signal(signal.SIGCONT)
        time.sleep(rng.uniform(0.5, 2.0))  # a random moment: the point of the test
        daemon.signal(signal.SIGKILL)
        daemon.wait_exit(10)
        kills += 1
    fake_proc.faults(throttle_bps=None)
    daemon.start()
    try:
        out = daemon.cli("wait", *job_ids, "--timeout", "180", check=False, timeout=240)
        assert out.returncode == 0, out.stdout + out.stderr + daemon.log()[-3000:]
        elapsed = time.monotonic() - began
        jobs = [daemon.json("show", j) for j in job_ids]
    finally:
        daemon.stop()

    assert all(j["status"] == "completed" for j in jobs)
    with sqlite3.connect(db) as conn:
        completions = Counter(job for (job,) in conn.execute(
            "SELECT job_id FROM events WHERE kind = 'completed'"))
    assert all(completions[j] == 1 for j in job_ids), completions

    files = sorted(p for p in library.rglob("*.flac") if ".tidalq" not in p.parts)
    track_ids = [tags.read_identity(p)[0] for p in files]
    paths = {str(Path(t["path"])) for j in jobs for t in j.get("trackProgress") or []}
    assert len(set(track_ids)) == len(files)
    assert len(files) == sum(ALBUMS.values()), sorted(paths - {str(p) for p in files})
    source = FakeUpstream(media_cache)
    for path, track_id in zip(files, track_ids, strict=True):
        assert track_id is not None
        hires = source.catalog.tracks[int(track_id)].album_id in HIRES_ALBUMS
        assert decoded_md5(path) == source.source_md5(int(track_id), hires), path
        subprocess.run(["flac", "-t", "-s", str(path)], check=True, capture_output=True)
    assert [p for p in (library / ".tidalq" / "staging").rglob("*") if p.is_file()] == []
    log = daemon.log()
    print(json.dumps({"bench": "chaos", "kills": kills, "clock_jump_s": 3600,
                      "jobs": len(job_ids), "tracks": len(files),
                      "attempts": sum(j["attempts"] for j in jobs),
                      "stopped_on_lease_deadline": log.count("lease not renewed"),
                      "reclaimed_while_running": log.count(RECLAIMED),
                      "elapsed_s": round(elapsed, 1)}))


def test_libfaketime_moves_the_wall_clock_and_not_the_monotonic_one(tmp_path: Path) -> None:
    """The chaos test's clock jump is real for the process that sees it."""
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    code = ("import time,pathlib,sys;w,m=time.time(),time.monotonic();"
            f"pathlib.Path({str(clock)!r}).write_text('+3600\\n');"
            "print(round(time.time()-w), round(time.monotonic()-m))")
    out = subprocess.run(["python3", "-c", code], capture_output=True, text=True, check=True,
                         env={"LD_PRELOAD": libfaketime(), "FAKETIME_TIMESTAMP_FILE": str(clock),
                              "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                              "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["3600", "0"]


def test_a_wall_clock_jump_never_makes_a_daemon_redo_its_own_job(
        tmp_path: Path, fake_proc: FakeProcess) -> None:
    """The wall clock jumps 60 s forward (lease 30 s), three times, while a track download
    waits on a stalled CDN (no progress, so only the lease/3 renewals touch the lease):
    the daemon's maintenance (every 5 s) must never reap the job it runs itself. One
    fetch. (Before the fix, each jump was reaped with odds of about 3 in 4.)"""
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    env = {**fake_proc.env(), "TIDAL_DOWNLOADS": str(tmp_path / "lib"),
           "TIDALQ_STORE": f"sqlite:///{tmp_path}/queue.db", "TIDALQ_LEASE": "30s",
           "LD_PRELOAD": libfaketime(), "FAKETIME_TIMESTAMP_FILE": str(clock),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    fake_proc.faults(cdn_stall_s=20.0)
    daemon = DaemonProcess(tmp_path, env, "jump")
    daemon.start()
    try:
        job = daemon.cli("add", "track", "1001").stdout.strip()

        def downloading() -> bool:
            return any(r["path"].startswith("/cdn/1001/") for r in fake_proc.requests())

        deadline = time.monotonic() + 20
        while not downloading():
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.05)
        for jump in (60, 120, 180):
            clock.write_text(f"+{jump}\n")
            time.sleep(5.5)  # a maintenance round passes between jumps
        out = daemon.cli("wait", job, "--timeout", "120", check=False, timeout=150)
        shown = daemon.json("show", job)
    finally:
        fake_proc.faults(cdn_stall_s=0.0)
        daemon.stop()
    assert out.returncode == 0 and shown["status"] == "completed", shown
    fetches = [r for r in fake_proc.requests() if r["path"].startswith("/cdn/1001/")]
    assert len(fetches) == 1, fetches
    assert RECLAIMED not in daemon.log() and shown["attempts"] == 1


def test_a_stopped_daemons_job_waits_for_it_on_sqlite(tmp_path: Path,
                                                      fake_proc: FakeProcess) -> None:
    """Two daemons on one SQLite store and library: one is stopped (SIGSTOP) past its
    lease mid-download. Its instance lock proves it alive, so the other never takes its
    job; continued, it finishes with one fetch."""
    env = {**fake_proc.env(), "TIDAL_DOWNLOADS": str(tmp_path / "lib"),
           "TIDALQ_STORE": f"sqlite:///{tmp_path}/queue.db", "TIDALQ_LEASE": "2s",
           "TIDALQ_POLL_INTERVAL": "0.5"}
    fake_proc.faults(cdn_stall_s=4.0)
    first, second = DaemonProcess(tmp_path, env, "first"), DaemonProcess(tmp_path, env, "second")
    first.start()
    try:
        job = first.cli("add", "track", "1001").stdout.strip()
        deadline = time.monotonic() + 20
        while not any(r["path"].startswith("/cdn/1001/") for r in fake_proc.requests()):
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.05)
        first.signal(signal.SIGSTOP)
        second.start()
        time.sleep(7.0)  # past the lease, and past a maintenance round of the second
        assert second.json("show", job)["status"] == "processing"
        first.signal(signal.SIGCONT)
        out = second.cli("wait", job, "--timeout", "60", check=False)
        shown = second.json("show", job)
    finally:
        fake_proc.faults(cdn_stall_s=0.0)
        first.stop()
        second.stop()
    assert out.returncode == 0 and shown["status"] == "completed", shown
    assert len([r for r in fake_proc.requests() if r["path"].startswith("/cdn/1001/")]) == 1


def test_a_daemon_answers_while_another_process_holds_the_sqlite_write_lock(
        make_daemon: Any, tmp_path: Path) -> None:
    """A daemon stopped mid-commit holds SQLite's write lock: another daemon on the file
    still starts and answers `status` (its reads never wait for a writer); its writes wait."""
    first = make_daemon("first")
    first.stop()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN IMMEDIATE')\n"
         "c.execute(\"UPDATE meta SET value=value WHERE key='schema_version'\")\n"
         "print('holding', flush=True)\n"
         "time.sleep(30)\n", str(tmp_path / "queue.db")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        began = time.monotonic()
        second = make_daemon("second")  # ready: `status` answered
        assert time.monotonic() - began < 10
        assert "queued 0" in second.cli("status", timeout=10).stdout
    finally:
        holder.kill()
        holder.communicate(timeout=10)
