"""Nothing runs twice, nothing is overwritten: a job reaped under a running attempt (a
wall-clock jump), a daemon cut off from its store, a second daemon in another PID
namespace or refused at start, and two editions of one album."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mutagen.flac import FLAC

from tests.helpers import DaemonProcess, FakeProcess, RedisServer, await_until, wait_until
from tests.test_daemon import submit, wait_status
from tests.test_pipeline import audio_files, job, make_pipeline, no_report
from tidalq.attempt import ActiveJob
from tidalq.config import load_settings
from tidalq.daemon import Daemon
from tidalq.errors import StoreUnavailable
from tidalq.media import tags
from tidalq.models import Claim, Failure, Job, LeaseState, now_ms
from tidalq.store.memory import MemoryStore
from tidalq.testing.fakeapi import RunningFake


async def start_daemon(tmp_path: Path, fake: RunningFake, store: MemoryStore,
                       **flags: Any) -> Daemon:
    settings = load_settings({
        "download_dir": str(tmp_path / "lib"), "socket": str(tmp_path / "run" / "q.sock"),
        "api_urls": [fake.url], "cover_url": fake.url, "lease": "2s", "poll_interval": 1,
        **flags}, env={})
    daemon = Daemon(settings, store=store)
    await daemon.startup()
    return daemon


def staged_files(library: Path) -> list[Path]:
    return [p for p in (library / ".tidalq" / "staging").rglob("*") if p.is_file()]


def assert_whole(path: Path, md5: bytes) -> None:
    """The file decodes in full and holds exactly the fake's source audio."""
    subprocess.run(["flac", "-t", "-s", str(path)], check=True, capture_output=True)
    assert FLAC(path).info.md5_signature.to_bytes(16, "big") == md5


async def test_a_job_reaped_under_its_running_attempt_runs_once(
        tmp_path: Path, fake: RunningFake) -> None:
    """The wall clock jumps an hour: the store reaps the job its own daemon is running and
    the daemon claims it again. The old attempt stops; one whole file is published."""
    fake.faults.throttle_bps = 120_000
    store = MemoryStore()
    daemon = await start_daemon(tmp_path, fake, store)
    try:
        sock = daemon.settings.socket
        job_id = await submit(sock, {"type": "track", "trackId": 1003})
        library = daemon.settings.download_dir
        await await_until(lambda: _true(bool(staged_files(library))), 10, "a download started")
        store._clock = lambda: now_ms() + 3_600_000  # the wall clock jumps forward
        assert await store.reap() == [job_id]
        daemon.pool_or_raise.wake()
        done = await wait_status(sock, job_id, "completed", 30)
        path = Path(done["result"]["path"])
        assert_whole(path, fake.upstream.source_md5(1003))
        assert audio_files(library) == [path]
        await asyncio.sleep(0.5)  # a stale attempt would still be writing now
        assert_whole(path, fake.upstream.source_md5(1003))
        assert staged_files(library) == []
    finally:
        await daemon.shutdown()


async def _true(value: bool) -> bool:
    return value


class CutOffStore(MemoryStore):
    """A memory store whose worker calls fail while ``down`` (the network to Redis is cut)."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("the store cannot be reached")

    async def renew(self, job_id: str, token: str, lease_s: float) -> LeaseState:
        self._check()
        return await super().renew(job_id, token, lease_s)

    async def report_progress(self, job_id: str, token: str, progress: float,
                              track_progress: Any = None, titles: Any = None) -> LeaseState:
        self._check()
        return await super().report_progress(job_id, token, progress, track_progress, titles)

    async def claim(self, worker: str, lease_s: float) -> Claim | None:
        self._check()
        return await super().claim(worker, lease_s)

    async def complete(self, job_id: str, token: str, result: Any = None,
                       track_progress: Any = None) -> Job:
        self._check()
        return await super().complete(job_id, token, result, track_progress)

    async def fail(self, job_id: str, token: str, failure: Failure,
                   track_progress: Any = None) -> Job:
        self._check()
        return await super().fail(job_id, token, failure, track_progress)


async def cut_off_mid_download(daemon: Daemon, store: CutOffStore, stop_within_s: float
                               ) -> tuple[str, ActiveJob]:
    """Submit track 1001, cut the store off once its download is under way, and wait for
    the attempt to stop; (the job id, the attempt that stopped)."""
    job_id = await submit(daemon.settings.socket, {"type": "track", "trackId": 1001})
    library, pool = daemon.settings.download_dir, daemon.pool_or_raise
    await await_until(lambda: _true(bool(staged_files(library))), 10, "a download started")
    attempt = next(iter(pool.active.values()))
    store.down = True
    await await_until(lambda: _true(not pool.active), stop_within_s, "the attempt stopped")
    return job_id, attempt


async def test_a_daemon_cut_off_from_its_store_stops_before_its_lease_ends(
        tmp_path: Path, fake: RunningFake) -> None:
    fake.faults.throttle_bps = 60_000
    store = CutOffStore()
    daemon = await start_daemon(tmp_path, fake, store)
    try:
        sock, library, pool = daemon.settings.socket, daemon.settings.download_dir, \
            daemon.pool_or_raise
        job_id, attempt = await cut_off_mid_download(daemon, store, 3)
        # the lease is 2 s from its last renewal: the work stopped before the store could
        # give the job to anyone else
        assert time.monotonic() < attempt.renewed_at + 2.0
        assert audio_files(library) == [] and staged_files(library) == []
        fake.faults.throttle_bps = None
        store.down = False
        await store.reap()
        pool.wake()
        done = await wait_status(sock, job_id, "completed", 30)
        assert_whole(Path(done["result"]["path"]), fake.upstream.source_md5(1001))
    finally:
        store.down = False
        await daemon.shutdown()


class HangingStore(CutOffStore):
    """While ``down``, a renewal never answers (a Redis connection that hangs)."""

    async def renew(self, job_id: str, token: str, lease_s: float) -> LeaseState:
        if self.down:
            await asyncio.sleep(3600)
        return await super().renew(job_id, token, lease_s)


async def test_a_store_that_hangs_stops_the_work_within_its_lease_and_a_second(
        tmp_path: Path, fake: RunningFake) -> None:
    """A renewal past the local deadline may keep the work (the token proves the lease
    is still ours), but one that hangs delays the stop by one second at most, and nothing
    is published meanwhile."""
    fake.faults.throttle_bps = 60_000
    store = HangingStore()
    daemon = await start_daemon(tmp_path, fake, store)
    try:
        _, attempt = await cut_off_mid_download(daemon, store, 5)
        library = daemon.settings.download_dir
        assert time.monotonic() < attempt.renewed_at + 2.0 * 0.8 + 1.0 + 0.3
        assert audio_files(library) == []
    finally:
        store.down = False
        fake.faults.throttle_bps = None
        await daemon.shutdown()


# -- two daemons --------------------------------------------------------------------------

@pytest.fixture
def two_daemons_env(tmp_path: Path, fake_proc: FakeProcess,
                    redis_server: RedisServer) -> dict[str, str]:
    return {**fake_proc.env(), "TIDAL_DOWNLOADS": str(tmp_path / "lib"),
            "TIDALQ_STORE": redis_server.url.replace("/0", "/3"), "TIDALQ_LEASE": "30s",
            "TIDALQ_POLL_INTERVAL": "1"}


def test_a_daemon_in_another_pid_namespace_never_takes_a_live_daemons_job(
        tmp_path: Path, fake_proc: FakeProcess, two_daemons_env: dict[str, str],
        redis_server: RedisServer) -> None:
    subprocess.run(["redis-cli", "-p", str(redis_server.port), "-n", "3", "flushdb"],
                   check=True, capture_output=True)
    fake_proc.faults(throttle_bps=150_000)
    first = DaemonProcess(tmp_path, two_daemons_env, "first")
    second = DaemonProcess(tmp_path, two_daemons_env, "second")
    second.wrapper = ["unshare", "--pid", "--fork"]
    try:
        first.start()
        job_id = first.cli("add", "album", "100").stdout.strip()
        wait_until(lambda: first.json("show", job_id)["status"] == "processing", 10, "started")
        holder = first.json("show", job_id)["worker"]
        second.start()
        second.cli("status")
        wait_until(lambda: "ready on" in second.log(), 10, "second daemon ready")
        shown = first.json("show", job_id)
        assert shown["worker"] == holder and shown["attempts"] == 1
        fake_proc.faults(throttle_bps=None)
        assert first.cli("wait", job_id, "--timeout", "60").returncode == 0
        assert first.json("show", job_id)["attempts"] == 1
    finally:
        fake_proc.faults(throttle_bps=None)
        first.stop()
        second.stop()


def test_a_refused_second_daemon_touches_nothing(
        tmp_path: Path, make_daemon: Any, fake_proc: FakeProcess) -> None:
    fake_proc.faults(throttle_bps=150_000)
    first = make_daemon("first", TIDALQ_LEASE="30s")
    job_id = first.cli("add", "album", "100").stdout.strip()
    library = tmp_path / "lib"
    wait_until(lambda: bool(staged_files(library)), 10, "a download started")
    env = {k: v for k, v in first.env.items() if k != "TIDALQ_SOCKET"}
    second = DaemonProcess(tmp_path, {**env, "TIDALQ_STORE": "memory:"}, "first")
    second.log_path = tmp_path / "second.log"
    second.start(wait=False)
    assert second.wait_exit(20) != 0
    assert "already running" in second.log()
    assert staged_files(library), "the running download's staging file is still there"
    # another daemon with its own socket and store on the same library cleans nothing
    third = make_daemon("third", TIDALQ_STORE="memory:")
    assert staged_files(library)
    third.stop()
    fake_proc.faults(throttle_bps=None)
    assert first.cli("wait", job_id, "--timeout", "60").returncode == 0
    shown = first.json("show", job_id)
    assert shown["status"] == "completed" and shown["completedTracks"] == 3


# -- editions -----------------------------------------------------------------------------

async def test_two_editions_of_an_album_keep_their_own_files(
        session: aiohttp.ClientSession, fake: RunningFake, tmp_path: Path) -> None:
    library = tmp_path / "lib"
    pipe = make_pipeline(session, fake, library)
    first = await pipe.run_album_job(job("album", 100), no_report)
    second = await pipe.run_album_job(job("album", 110), no_report)
    assert len(audio_files(library)) == 6
    for entries, album_id in ((first, 100), (second, 110)):
        for entry in entries:
            path = Path(entry["path"])
            assert tags.read_identity(path)[0] == str(entry["trackId"])
            assert not entry["skipped"]
            assert (f"[{album_id}]" in path.parent.name) == (album_id == 110)
    # both run again: each finds its own files, nothing is downloaded or moved
    before = fake.upstream.count("/cdn/")
    again = await pipe.run_album_job(job("album", 110), no_report)
    again += await pipe.run_album_job(job("album", 100), no_report)
    assert all(e["skipped"] for e in again) and fake.upstream.count("/cdn/") == before
    # a single track of the second edition finds the second edition's file
    single = await pipe.run_track_job(job("track", 1101), no_report)
    assert single["skipped"] and "[110]" in single["path"]


async def test_two_editions_downloading_at_once_keep_their_own_files(
        session: aiohttp.ClientSession, fake: RunningFake, tmp_path: Path) -> None:
    library = tmp_path / "lib"
    pipe = make_pipeline(session, fake, library)
    both = await asyncio.gather(pipe.run_album_job(job("album", 100), no_report),
                                pipe.run_album_job(job("album", 110), no_report),
                                pipe.run_track_job(job("track", 1101), no_report))
    assert len(audio_files(library)) == 6
    for entry in [*both[0], *both[1], both[2]]:
        track_id = entry.get("trackId", 1101)
        assert tags.read_identity(Path(entry["path"]))[0] == str(track_id)
    folders = {Path(e["path"]).parent.name for e in both[1]}
    assert len(folders) == 1, "an album is never split between two folders"


async def test_a_broken_file_in_the_library_is_never_taken_as_already_there(
        session: aiohttp.ClientSession, fake: RunningFake, tmp_path: Path) -> None:
    library = tmp_path / "lib"
    pipe = make_pipeline(session, fake, library)
    first = await pipe.run_track_job(job("track", 1003), no_report)
    path = Path(first["path"])
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)  # damage the audio, keep the tags
    path.write_bytes(bytes(data))
    again = await pipe.run_track_job(job("track", 1003), no_report)
    assert not again["skipped"]
    assert_whole(path, fake.upstream.source_md5(1003))
