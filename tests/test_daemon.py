"""The daemon in-process: the RPC surface over its real Unix socket, against the fake."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import await_until
from tidalq.config import load_settings
from tidalq.daemon import Daemon
from tidalq.protocol import ErrorCode
from tidalq.testing.fakeapi import RunningFake

JOB_KEYS = {"id", "job", "status", "priority", "progress", "createdAt", "startedAt",
            "completedAt", "updatedAt", "nextRetryAt", "attempts", "maxAttempts", "error",
            "failureCode"}


async def raw(sock: Path, payload: bytes, read_all: bool = False,
              count: int = 1) -> list[dict[str, Any]]:
    """Send ``payload``; read ``count`` answers, or (``read_all``) until the daemon closes."""
    reader, writer = await asyncio.open_unix_connection(str(sock), limit=1 << 22)
    writer.write(payload)
    await writer.drain()
    answers = []
    try:
        while True:
            line = await asyncio.wait_for(reader.readline(), 10)
            if not line:
                break
            answers.append(json.loads(line))
            if not read_all and len(answers) == count:
                break
    finally:
        writer.close()
    return answers


async def rpc(sock: Path, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    msg = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params or {}}
    answer = (await raw(sock, json.dumps(msg).encode() + b"\n"))[0]
    assert answer["id"] == 7
    return answer


async def submit(sock: Path, job: dict[str, Any]) -> str:
    """Submit one job through the socket; its id."""
    job_id: str = (await rpc(sock, "queue.submit", {"job": job}))["result"]["jobIds"][0]
    return job_id


async def start(tmp_path: Path, fake: RunningFake | None, **flags: Any) -> Daemon:
    settings = load_settings({
        "download_dir": str(tmp_path / "lib"), "store": f"sqlite:///{tmp_path}/q.db",
        "socket": str(tmp_path / "run" / "tidalq.sock"), "lease": "3s", "poll_interval": 1,
        **({"api_urls": [fake.url], "cover_url": fake.url} if fake else {}), **flags}, env={})
    daemon = Daemon(settings)
    await daemon.startup()
    return daemon


@pytest.fixture
async def daemon(tmp_path: Path, fake: RunningFake) -> AsyncIterator[Daemon]:
    d = await start(tmp_path, fake)
    yield d
    await d.shutdown()


async def wait_status(sock: Path, job_id: str, status: str, timeout: float = 20) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def reached() -> bool:
        found.update((await rpc(sock, "queue.get", {"id": job_id}))["result"]["job"])
        return found["status"] == status

    await await_until(reached, timeout, f"{job_id} {status}")
    return found


async def test_album_through_the_socket(daemon: Daemon) -> None:
    sock = daemon.settings.socket
    assert oct(sock.stat().st_mode & 0o777) == "0o600"
    assert oct(sock.parent.stat().st_mode & 0o777) == "0o700"
    hello = (await rpc(sock, "daemon.hello", {"protocol": 1}))["result"]
    assert hello["protocol"] == 1 and hello["compatible"] and "queue.submit" in hello["methods"]
    sub = (await rpc(sock, "queue.submit", {"job": {"type": "album", "albumId": 100}}))["result"]
    job_id = sub["jobIds"][0]
    again = (await rpc(sock, "queue.submit", {"job": {"type": "album", "albumId": 100}}))
    assert again["result"]["jobIds"] == [job_id] and again["result"]["created"] == [False]
    done = (await rpc(sock, "queue.wait", {"ids": [job_id], "timeout": 30}))["result"]
    assert not done["timedOut"] and done["jobs"][0]["status"] == "completed"
    job = (await rpc(sock, "queue.get", {"id": job_id[:-4]}))["result"]["job"]
    assert set(job) >= JOB_KEYS and job["trackCount"] == 3 and job["completedTracks"] == 3
    assert {t["status"] for t in job["trackProgress"]} == {"completed"}
    stats = (await rpc(sock, "queue.stats"))["result"]
    assert stats["success"] is True and stats["queue"]["completed"] == 1
    assert set(stats["queue"]) == {"queued", "processing", "paused", "completed", "failed",
                                   "cancelled", "total"}
    assert stats["worker"] == stats["worker"] | {"running": True, "maxConcurrent": 4}

    async def slot_free() -> bool:  # the job's end is in the store a moment before its slot
        worker = (await rpc(sock, "queue.stats"))["result"]["worker"]
        return bool(worker["activeDownloads"] == 0)

    await await_until(slot_free, 10, "the finished job's slot to be free")
    listed = (await rpc(sock, "queue.list", {"status": "completed"}))["result"]
    assert listed["count"] == 1


@pytest.mark.parametrize(("params", "field"), [
    ({"job": {"type": "track", "trackId": -5}}, "job.trackId"),
    ({"job": {"type": "track", "trackId": 2**60}}, "job.trackId"),
    ({"job": {"type": "track", "trackId": 1, "quality": "ULTRA"}}, "job.quality"),
    ({"job": {"type": "track", "trackId": 1}, "priority": "urgent"}, "priority"),
    ({"job": {"type": "track", "trackId": 1}, "maxAttempts": "3"}, "maxAttempts"),
    ({"job": "track 1"}, "job"),
    ({"job": {"type": "track", "trackId": 1}, "extra": 1}, "extra"),
])
async def test_bad_params_name_the_field(daemon: Daemon, params: dict[str, Any],
                                         field: str) -> None:
    answer = await rpc(daemon.settings.socket, "queue.submit", params)
    assert answer["error"]["code"] == ErrorCode.INVALID_PARAMS
    assert field in answer["error"]["message"]
    stats = (await rpc(daemon.settings.socket, "queue.stats"))["result"]
    assert sum(stats["queue"].values()) == 0


async def test_protocol_errors_and_connection_handling(daemon: Daemon) -> None:
    sock = daemon.settings.socket
    assert (await rpc(sock, "queue.explode"))["error"]["code"] == ErrorCode.METHOD_NOT_FOUND
    garbage = await raw(sock, b"this is not json\n{\"jsonrpc\":\"2.0\",\"id\":1,"
                              b"\"method\":\"queue.stats\"}\n", read_all=True)
    assert [a["error"]["code"] for a in garbage] == [ErrorCode.PARSE_ERROR]  # then closed
    huge = await raw(sock, b'{"x":"' + b"a" * (2 << 20) + b'"}\n', read_all=True)
    assert huge[0]["error"]["code"] == ErrorCode.INVALID_REQUEST
    bad_utf8 = await raw(sock, b'{"jsonrpc":"2.0","id":1,"method":"\xff\xfe"}\n')
    assert bad_utf8[0]["error"]["code"] == ErrorCode.PARSE_ERROR
    two = await raw(sock, b'{"jsonrpc":"2.0","id":1,"method":"daemon.hello"}\n'
                          b'{"jsonrpc":"2.0","id":2,"method":"queue.stats"}\n', count=2)
    assert [a["id"] for a in two] == [1, 2]
    assert "result" in await rpc(sock, "queue.stats")


async def test_many_clients_at_once(daemon: Daemon) -> None:
    answers = await asyncio.gather(*(rpc(daemon.settings.socket, "queue.submit",
                                         {"job": {"type": "track", "trackId": 1000 + n}})
                                     for n in range(1, 4)),
                                   *(rpc(daemon.settings.socket, "queue.stats")
                                     for _ in range(50)))
    assert all("result" in a for a in answers)


async def test_cancel_a_running_album_stops_within_a_second(daemon: Daemon,
                                                           fake: RunningFake) -> None:
    fake.faults.throttle_bps = 100_000
    sock = daemon.settings.socket
    job_id = (await rpc(sock, "queue.submit",
                        {"job": {"type": "album", "albumId": 100}}))["result"]["jobIds"][0]
    staging = daemon.settings.staging_dir
    await await_until(lambda: _has_files(staging), 10, "a download in staging")
    await asyncio.sleep(0.3)
    worker = (await rpc(sock, "queue.stats"))["result"]["worker"]
    assert worker["activeDownloads"] >= 1 and worker["downloadBps"] > 0
    answer = await rpc(sock, "queue.cancel", {"ids": [job_id]})
    assert answer["result"]["results"][0]["ok"]
    cancelled_at = asyncio.get_running_loop().time()
    await await_until(lambda: _empty(staging), 1.0, "staging emptied within a second")
    assert asyncio.get_running_loop().time() - cancelled_at < 1.0
    job = (await rpc(sock, "queue.get", {"id": job_id}))["result"]["job"]
    assert job["status"] == "cancelled" and job["failureCode"] == "CANCELLED"
    seen = fake.upstream.count("/cdn/")
    await asyncio.sleep(0.5)
    assert fake.upstream.count("/cdn/") == seen, "no download goes on after the cancel"
    lib = daemon.settings.download_dir
    assert not [p for p in lib.rglob("*.flac") if ".tidalq" not in p.parts]


async def _has_files(path: Path) -> bool:
    return any(p.is_file() for p in path.rglob("*"))


async def _empty(path: Path) -> bool:
    return not await _has_files(path)


async def test_pause_and_resume_the_queue(daemon: Daemon) -> None:
    sock = daemon.settings.socket
    await rpc(sock, "queue.pause")
    job_id = (await rpc(sock, "queue.submit",
                        {"job": {"type": "track", "trackId": 1003}}))["result"]["jobIds"][0]
    await asyncio.sleep(1.5)
    assert (await rpc(sock, "queue.get", {"id": job_id}))["result"]["job"]["status"] == "queued"
    assert (await rpc(sock, "queue.stats"))["result"]["worker"]["queuePaused"] is True
    await rpc(sock, "queue.resume")
    await wait_status(sock, job_id, "completed", 10)


async def test_failed_job_retry_and_remove(daemon: Daemon, fake: RunningFake) -> None:
    sock = daemon.settings.socket
    job_id = (await rpc(sock, "queue.submit", {"job": {"type": "track", "trackId": 5001}}))[
        "result"]["jobIds"][0]
    failed = await wait_status(sock, job_id, "failed")
    assert failed["failureCode"] == "PREVIEW_ONLY" and failed["attempts"] == 1
    fake.upstream.catalog.tracks[5001].preview = False
    retried = (await rpc(sock, "queue.retry", {"failed": True}))["result"]["results"]
    assert [r["id"] for r in retried] == [job_id]
    await wait_status(sock, job_id, "completed")
    assert (await rpc(sock, "queue.remove", {"ids": [job_id]}))["result"]["results"][0]["ok"]
    gone = await rpc(sock, "queue.get", {"id": job_id})
    assert gone["error"]["code"] == ErrorCode.JOB_NOT_FOUND


async def test_retryable_failure_is_retried_from_the_queue(daemon: Daemon,
                                                           fake: RunningFake) -> None:
    fake.faults.rate_limit, fake.faults.retry_after = 1, "1"
    sock = daemon.settings.socket
    job_id = (await rpc(sock, "queue.submit", {"job": {"type": "track", "trackId": 1001}}))[
        "result"]["jobIds"][0]
    done = await wait_status(sock, job_id, "completed", 15)
    assert done["attempts"] == 2


async def test_events_subscription_streams_transitions(daemon: Daemon) -> None:
    sock = daemon.settings.socket
    reader, writer = await asyncio.open_unix_connection(str(sock))
    writer.write(b'{"jsonrpc":"2.0","id":1,"method":"events.subscribe"}\n')
    assert json.loads(await reader.readline())["result"]["subscribed"] is True
    job_id = (await rpc(sock, "queue.submit", {"job": {"type": "track", "trackId": 1003}}))[
        "result"]["jobIds"][0]
    kinds = []
    while "completed" not in kinds:
        msg = json.loads(await asyncio.wait_for(reader.readline(), 15))
        assert msg["method"] == "event" and "id" not in msg
        if msg["params"]["jobId"] == job_id:
            kinds.append(msg["params"]["type"])
    assert kinds[0] == "submitted" and "claimed" in kinds
    writer.close()


async def test_no_upstream_configured_says_so(tmp_path: Path) -> None:
    d = await start(tmp_path, None)
    try:
        sock = d.settings.socket
        await rpc(sock, "queue.submit", {"job": {"type": "album", "albumId": 100}})
        stats = (await rpc(sock, "queue.stats"))["result"]
        assert "api_urls" in stats["worker"]["problem"] and stats["queue"]["queued"] == 1
        assert stats["worker"]["running"] is False
    finally:
        await d.shutdown()


async def test_second_daemon_on_a_live_socket_refuses(daemon: Daemon, tmp_path: Path) -> None:
    from tidalq.server import SocketInUse

    second = Daemon(daemon.settings)
    with pytest.raises(SocketInUse, match="already running"):
        await second.startup()
    await second.shutdown()
    assert "result" in await rpc(daemon.settings.socket, "queue.stats")


async def test_stale_socket_file_is_replaced(tmp_path: Path, fake: RunningFake) -> None:
    sock_path = tmp_path / "run" / "tidalq.sock"
    sock_path.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock_path))
    stale.close()
    d = await start(tmp_path, fake)
    try:
        assert "result" in await rpc(sock_path, "queue.stats")
    finally:
        await d.shutdown()


async def test_control_only_node_accepts_but_does_not_download(tmp_path: Path,
                                                               fake: RunningFake) -> None:
    d = await start(tmp_path, fake, workers=False)
    try:
        sock = d.settings.socket
        job_id = (await rpc(sock, "queue.submit", {"job": {"type": "track", "trackId": 1001}}))[
            "result"]["jobIds"][0]
        await asyncio.sleep(1.2)
        stats = (await rpc(sock, "queue.stats"))["result"]
        assert stats["worker"]["workers"] == "off" and stats["worker"]["running"] is False
        job = (await rpc(sock, "queue.get", {"id": job_id}))["result"]["job"]
        assert job["status"] == "queued" and fake.upstream.count("/") == 0
    finally:
        await d.shutdown()


async def test_a_busy_worker_finishes_and_claims_in_one_store_call(tmp_path: Path,
                                                                   fake: RunningFake) -> None:
    """A finishing job hands its slot straight to the next queued one, through the
    store's fused complete-and-claim: one transaction per job instead of two."""
    daemon = await start(tmp_path, fake, max_concurrent=1)
    store = daemon.store
    assert store is not None
    calls: dict[str, int] = {"claim": 0, "complete": 0, "complete_and_claim": 0}

    def counted(name: str) -> Any:
        real = getattr(store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return await real(*args, **kwargs)

        return call

    for name in calls:
        setattr(store, name, counted(name))
    try:
        sock = daemon.settings.socket
        ids = [await submit(sock, {"type": "track", "trackId": t})
               for t in (1001, 1002, 1003, 1101)]
        done = (await rpc(sock, "queue.wait", {"ids": ids, "timeout": 60}))["result"]
        assert [j["status"] for j in done["jobs"]] == ["completed"] * 4
        assert calls["complete_and_claim"] == 4 and calls["complete"] == 0, calls
        jobs = {j["id"]: j for j in done["jobs"]}
        for earlier, later in itertools.pairwise(ids):  # each began as the one before ended
            assert jobs[later]["startedAt"] - jobs[earlier]["completedAt"] < 50
    finally:
        await daemon.shutdown()
