"""The seed's HTTP API with a real HTTP client against an in-process daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import free_port
from tidalq.config import load_settings
from tidalq.daemon import Daemon
from tidalq.errors import ConfigError
from tidalq.testing.fakeapi import RunningFake

BASE = "/api/download-queue"


async def start(tmp_path: Path, fake: RunningFake, **flags: Any) -> tuple[Daemon, str]:
    port = free_port()
    settings = load_settings({
        "download_dir": str(tmp_path / "lib"), "store": "memory:",
        "socket": str(tmp_path / "run" / "tidalq.sock"), "api_urls": [fake.url],
        "cover_url": fake.url, "http_listen": f"127.0.0.1:{port}", **flags}, env={})
    daemon = Daemon(settings)
    try:
        await daemon.startup()
    except BaseException:
        await daemon.shutdown()
        raise
    return daemon, f"http://127.0.0.1:{port}"


@pytest.fixture
async def api(tmp_path: Path, fake: RunningFake) -> AsyncIterator[tuple[str,
                                                                        aiohttp.ClientSession]]:
    daemon, url = await start(tmp_path, fake, http_cors_origins=["https://app.example"])
    async with aiohttp.ClientSession() as session:
        yield url, session
    await daemon.shutdown()


async def call(session: aiohttp.ClientSession, method: str, url: str,
               **kw: Any) -> tuple[int, Any]:
    async with session.request(method, url, **kw) as resp:
        return resp.status, await resp.json()


async def test_seed_endpoints(api: tuple[str, aiohttp.ClientSession]) -> None:
    url, session = api
    status, body = await call(session, "POST", url + BASE,
                              json={"job": {"type": "track", "trackId": 1003,
                                            "quality": "LOSSLESS"}})
    assert status == 201 and body["success"] is True and body["jobId"].startswith("job-")
    assert body["message"]
    job_id = body["jobId"]
    status, body = await call(session, "POST", url + BASE,
                              json={"job": {"type": "album", "albumId": 100},
                                    "priority": "high", "maxRetries": 2})
    assert status == 201
    _, album = await call(session, "GET", f"{url}{BASE}/{body['jobId']}")
    assert album["job"]["maxAttempts"] == 3 and album["job"]["priority"] == "high"
    status, body = await call(session, "GET", f"{url}{BASE}/{job_id}")
    assert status == 200 and body["job"]["id"] == job_id
    status, body = await call(session, "GET", url + BASE)
    assert status == 200 and body["count"] == 2 and len(body["jobs"]) == 2
    status, body = await call(session, "GET", url + BASE, params={"limit": "1", "offset": "1"})
    assert body["count"] == 1 and body["jobs"][0]["id"] == job_id
    status, stats = await call(session, "GET", f"{url}{BASE}/stats")
    assert status == 200 and stats["success"] is True
    assert set(stats["queue"]) >= {"queued", "processing", "completed", "failed"}
    assert set(stats["worker"]) >= {"running", "activeDownloads", "maxConcurrent"}


async def test_delete_refuses_live_jobs_and_removes_finished(
        api: tuple[str, aiohttp.ClientSession], fake: RunningFake) -> None:
    url, session = api
    fake.faults.throttle_bps = 20_000
    _, body = await call(session, "POST", url + BASE, json={"job": {"type": "track",
                                                                    "trackId": 1001}})
    job_url = f"{url}{BASE}/{body['jobId']}"
    status, body = await call(session, "DELETE", job_url)
    assert status == 400 and "Use PATCH to cancel instead" in body["error"]
    status, body = await call(session, "PATCH", job_url, json={"action": "cancel"})
    assert status == 200 and body["success"]
    _, body = await call(session, "GET", job_url)
    assert body["job"]["status"] == "cancelled"
    status, body = await call(session, "DELETE", job_url)
    assert status == 200 and body["message"] == "Job deleted"
    status, body = await call(session, "GET", job_url)
    assert status == 404 and body == {"success": False, "error": body["error"]}


@pytest.mark.parametrize(("kw", "status", "needle"), [
    ({"json": {"job": {"type": "track", "trackId": 0}}}, 400, "job.trackId"),
    ({"json": {"job": {"type": "track", "trackId": 1, "quality": "MP3"}}}, 400, "job.quality"),
    ({"json": {"nojob": 1}}, 400, "job is required"),
    ({"json": {"job": {"type": "album", "albumId": 1}, "maxRetries": -1}}, 400, "maxRetries"),
    ({"json": [1, 2]}, 400, "object"),
    ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "JSON"),
    ({"data": b"job=1", "headers": {"Content-Type": "text/plain"}}, 415, "application/json"),
    ({"data": b"{" + b" " * (70 * 1024) + b"}",
      "headers": {"Content-Type": "application/json"}}, 413, "65536 bytes"),
])
async def test_post_errors(api: tuple[str, aiohttp.ClientSession], kw: dict[str, Any],
                           status: int, needle: str) -> None:
    url, session = api
    got, body = await call(session, "POST", url + BASE, **kw)
    assert got == status and body["success"] is False and needle in body["error"]
    _, listed = await call(session, "GET", url + BASE)
    assert listed["count"] == 0


async def test_get_errors(api: tuple[str, aiohttp.ClientSession]) -> None:
    url, session = api
    assert (await call(session, "GET", f"{url}{BASE}/job-missing"))[0] == 404
    assert (await call(session, "GET", url + BASE, params={"status": "weird"}))[0] == 400
    assert (await call(session, "GET", url + BASE, params={"limit": "-1"}))[0] == 400
    assert (await call(session, "DELETE", f"{url}{BASE}/job-missing"))[0] == 404


async def test_cancelled_job_does_not_block_an_equal_new_one(api: tuple[str, aiohttp.ClientSession],
                                         fake: RunningFake) -> None:
    url, session = api
    fake.faults.preview = [1002]
    _, body = await call(session, "POST", url + BASE, json={"job": {"type": "track",
                                                                    "trackId": 1002}})
    other = f"{url}{BASE}/{body['jobId']}"
    await call(session, "PATCH", other, json={"action": "cancel"})
    _, again = await call(session, "POST", url + BASE, json={"job": {"type": "track",
                                                                     "trackId": 1002}})
    assert again["jobId"] != body["jobId"]


async def test_cors_only_for_configured_origins(api: tuple[str, aiohttp.ClientSession]) -> None:
    url, session = api
    headers = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    async with session.options(url + BASE, headers=headers) as resp:
        assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
    async with session.get(url + BASE, headers={"Origin": "https://evil.example"}) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers
    good = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with session.options(url + BASE, headers=good) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"


async def test_token_required_off_loopback_and_checked(tmp_path: Path,
                                                       fake: RunningFake) -> None:
    with pytest.raises(ConfigError, match="http_token"):
        await start(tmp_path, fake, http_listen=f"0.0.0.0:{free_port()}")
    daemon, url = await start(tmp_path / "t", fake, http_token="s3cret")
    try:
        async with aiohttp.ClientSession() as session:
            assert (await call(session, "GET", url + BASE))[0] == 401
            bad = {"Authorization": "Bearer wrong"}
            assert (await call(session, "GET", url + BASE, headers=bad))[0] == 401
            good = {"Authorization": "Bearer s3cret"}
            assert (await call(session, "GET", url + BASE, headers=good))[0] == 200
    finally:
        await daemon.shutdown()


async def test_error_statuses_map_from_the_exception_tree() -> None:
    """Every tidalq error a handler can raise has its status (409 needs a race to reach
    through the endpoints, so the mapping is checked directly here)."""
    from aiohttp.test_utils import make_mocked_request

    from tidalq.config import Settings
    from tidalq.errors import IllegalTransition, JobNotFound, StoreUnavailable
    from tidalq.http_guard import Guards

    guards = Guards(Settings(Path("/music"), "memory://", Path("/run/q.sock")))
    for exc, status in ((IllegalTransition("it is completed"), 409),
                        (JobNotFound("no job"), 404), (StoreUnavailable("redis down"), 503),
                        (RuntimeError("bug"), 500)):
        async def handler(request: object, exc: Exception = exc) -> None:
            raise exc

        resp = await guards.errors(make_mocked_request("GET", BASE), handler)
        assert resp.status == status
