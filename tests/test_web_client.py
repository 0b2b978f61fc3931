"""The seed's web app (tpepels/tidal-ui at 40feee8) against tidalq's HTTP API: the app's
exact request bodies (from src/lib/downloads.ts, src/lib/orchestrators/
downloadOrchestrator.ts, src/lib/clients/queueClient.ts), and the fields it reads."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mutagen.flac import FLAC

from tests.helpers import await_until, free_port
from tests.test_daemon import start
from tidalq.daemon import Daemon
from tidalq.testing.fakeapi import RunningFake

BASE = "/api/download-queue"
ORIGIN = "https://music.example.org"

# downloads.ts, "Download all" on an album page (undefined fields are dropped by JSON)
ALBUM_BODY = {"job": {"type": "album", "albumId": 100, "quality": "LOSSLESS",
                      "artistName": "Test Artist", "albumTitle": "First Light", "trackCount": 3,
                      "experimentalMusicBrainzTagging": False,
                      "strictMusicBrainzMatching": False, "forceOverwrite": False},
              "forceOverwrite": False}
# downloadOrchestrator.ts, one track through the orchestrator
TRACK_BODY = {"job": {"type": "track", "trackId": 1003, "quality": "LOSSLESS",
                      "albumTitle": "First Light", "artistName": "Test Artist",
                      "experimentalMusicBrainzTagging": True,
                      "strictMusicBrainzMatching": False}}
RECORD_FIELDS = {"id", "status", "job", "progress", "createdAt", "priority", "retryCount",
                 "maxRetries", "cancellationRequested", "pauseRequested", "lastUpdatedAt",
                 "fileSize"}  # nextRetryAt, failureCode: absent while unset
METRIC_FIELDS = {"total_jobs", "queued", "processing", "paused", "completed", "failed",
                 "cancelled", "avg_success_rate", "avg_retry_count", "total_download_time_ms",
                 "avg_job_duration_ms", "failure_by_code"}


@pytest.fixture
async def web(tmp_path: Path, fake: RunningFake) -> AsyncIterator[tuple[str, Daemon]]:
    port = free_port()
    daemon = await start(tmp_path, fake, http_listen=f"127.0.0.1:{port}",
                         http_cors_origins=[ORIGIN])
    yield f"http://127.0.0.1:{port}", daemon
    await daemon.shutdown()


async def call(method: str, url: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **kw) as resp:
        return resp.status, await resp.json()


async def wait_for(url: str, job_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        seen.update((await call("GET", f"{url}{BASE}/{job_id}"))[1]["job"])
        return seen["status"] == status

    await await_until(reached, timeout, f"{job_id} {status}")
    return seen


async def test_download_all_and_a_single_track_as_the_app_sends_them(
        web: tuple[str, Daemon]) -> None:
    url, _ = web
    status, body = await call("POST", url + BASE, json=ALBUM_BODY)
    assert status == 201 and body["success"] and body["jobId"].startswith("job-")
    album_id = body["jobId"]
    _, queued = await call("GET", f"{url}{BASE}/{album_id}")
    assert queued["job"]["trackCount"] == 3, "the app's count until tidalq knows it"
    status, body = await call("POST", url + BASE, json=TRACK_BODY)
    assert status == 201 and body["success"]
    done = await wait_for(url, album_id, "completed")
    assert set(done) >= RECORD_FIELDS and done["completedTracks"] == 3
    assert done["job"]["albumTitle"] == "First Light" and done["retryCount"] == 0
    assert done["downloadTimeMs"] >= 0 and done["fileSize"] > 0
    assert [t["status"] for t in done["trackProgress"]] == ["completed"] * 3
    assert all(t["trackTitle"] for t in done["trackProgress"])
    # a newer app adds fields: ignored; a wrong type is still named
    newer = {"job": {**TRACK_BODY["job"], "trackId": 1001, "someFutureField": [1]}}
    assert (await call("POST", url + BASE, json=newer))[0] == 201
    wrong = {"job": {**TRACK_BODY["job"], "experimentalMusicBrainzTagging": "yes"}}
    status, body = await call("POST", url + BASE, json=wrong)
    assert status == 400 and "experimentalMusicBrainzTagging" in body["error"]


async def test_the_dashboard_the_manager_polls(web: tuple[str, Daemon],
                                               fake: RunningFake) -> None:
    url, _ = web
    fake.faults.throttle_bps = 300_000
    _, body = await call("POST", url + BASE, json=ALBUM_BODY)
    await wait_for(url, body["jobId"], "processing")
    status, dash = await call("GET", f"{url}{BASE}/dashboard")
    assert status == 200 and dash["success"]
    assert set(dash) >= {"jobs", "queue", "metrics", "worker", "queueSource", "localMode",
                         "rateLimiting", "generatedAt"}
    assert dash["queue"]["total"] == 1 and dash["queue"]["processing"] == 1
    assert set(dash["metrics"]) >= METRIC_FIELDS
    assert set(dash["worker"]) >= {"running", "activeDownloads", "maxConcurrent"}
    assert dash["queueSource"] == "sqlite" and dash["localMode"] is True
    assert dash["generatedAt"].endswith("Z")
    running = dash["jobs"][0]
    assert running["status"] == "processing" and running["trackProgress"]
    assert {t["status"] for t in running["trackProgress"]} <= {
        "pending", "downloading", "completed", "failed"}
    fake.faults.throttle_bps = None


async def test_every_action_button(web: tuple[str, Daemon], fake: RunningFake) -> None:
    url, daemon = web
    fake.faults.throttle_bps = 150_000
    _, body = await call("POST", url + BASE, json={**ALBUM_BODY, "job": {
        **ALBUM_BODY["job"], "albumId": 300, "trackCount": 210}})
    job_url = f"{url}{BASE}/{body['jobId']}"
    await wait_for(url, body["jobId"], "processing")
    # Pause a running album: it stops between tracks and keeps what it has
    status, body = await call("PATCH", job_url, json={"action": "pause"})
    assert status == 200 and body == body | {"success": True, "message": "Pause requested"}
    paused = await wait_for(url, body["jobId"], "paused", 30)
    kept = paused["completedTracks"]
    assert paused["pauseRequested"] is False
    status, body = await call("PATCH", job_url, json={"action": "pause"})
    assert status == 400 and "Cannot pause" in body["error"]
    status, body = await call("PATCH", job_url, json={
        "action": "set_musicbrainz_release",
        "musicBrainzReleaseId": "0b5d6a4e-8d1b-4a5f-9f4b-1f2e3d4c5b6a"})
    assert status == 200 and body["success"]
    # Resume, then Stop (cancel) while it runs
    status, body = await call("PATCH", job_url, json={"action": "resume"})
    assert status == 200 and body["message"] == "Resume requested"
    await wait_for(url, body["jobId"], "processing")
    status, body = await call("PATCH", job_url, json={"action": "cancel"})
    assert status == 200 and body["message"] == "Cancellation requested"
    cancelled = await wait_for(url, body["jobId"], "cancelled")
    assert cancelled["completedTracks"] >= kept
    status, body = await call("PATCH", job_url, json={"action": "cancel"})
    assert status == 200 and body["success"] and body["message"] == "already cancelled", \
        "the app's second click (Stop, then the card's cancel) is no error"
    # Retry: back to the queue, and only what is missing is fetched
    fake.faults.throttle_bps = None
    status, body = await call("PATCH", job_url, json={"action": "retry"})
    assert status == 200 and body["message"] == "Retry requested"
    done = await wait_for(url, body["jobId"], "completed", 90)
    assert done["completedTracks"] == 210
    assert fake.upstream.count("/cdn/") < 210 + done["completedTracks"]
    release = "0b5d6a4e-8d1b-4a5f-9f4b-1f2e3d4c5b6a"
    assert done["job"]["musicBrainzReleaseId"] == release
    last = Path(done["trackProgress"][-1]["path"])
    assert FLAC(last)["MUSICBRAINZ_ALBUMID"] == [release]
    status, body = await call("PATCH", job_url, json={"action": "cancel"})
    assert status == 200 and body["message"] == "already completed"
    status, body = await call("PATCH", job_url, json={"action": "explode"})
    assert status == 400 and "action" in body["error"]
    assert daemon.pool_or_raise.active == {}


async def test_delete_follows_the_app(web: tuple[str, Daemon]) -> None:
    url, daemon = web
    await daemon.store.set_queue_paused(True)  # type: ignore[union-attr]
    ids = [(await call("POST", url + BASE, json={"job": {"type": "track", "trackId": n,
                                                         "quality": "LOSSLESS"}}))[1]["jobId"]
           for n in (1001, 1002)]
    status, body = await call("DELETE", f"{url}{BASE}/{ids[0]}")
    assert status == 400 and "Use PATCH to cancel instead" in body["error"]
    await call("PATCH", f"{url}{BASE}/{ids[0]}", json={"action": "pause"})
    status, body = await call("DELETE", f"{url}{BASE}/{ids[0]}")
    assert status == 200 and body == {"success": True, "message": "Job deleted",
                                      "jobId": ids[0]}
    status, body = await call("GET", f"{url}{BASE}/{ids[0]}")
    assert status == 404 and body == {"success": False, "error": "Job not found"}


async def test_stats_metrics_and_the_whole_list(web: tuple[str, Daemon]) -> None:
    url, daemon = web
    store = daemon.store
    assert store is not None
    await store.set_queue_paused(True)
    from tidalq.models import JobSpec

    for n in range(150):
        await store.submit(JobSpec("track", 10_000 + n))
    _, listed = await call("GET", url + BASE)
    assert listed["count"] == 150 and len(listed["jobs"]) == 150, "no page cap of 100"
    _, page = await call("GET", f"{url}{BASE}?limit=20&offset=140")
    assert page["count"] == 10
    status, stats = await call("GET", f"{url}{BASE}/stats")
    assert status == 200 and stats["queue"]["total"] == 150
    assert set(stats) >= {"success", "queue", "localMode", "queueSource", "metrics", "worker",
                          "rateLimiting", "timestamp"}
    status, met = await call("GET", f"{url}{BASE}/metrics")
    assert status == 200 and set(met) >= {"success", "generatedAt", "source", "queue",
                                          "metrics"}
    assert met["metrics"]["total_jobs"] == 150 and met["metrics"]["queued"] == 150


async def test_cors_preflight_allows_patch_for_listed_origins(web: tuple[str, Daemon]) -> None:
    url, _ = web
    async with aiohttp.ClientSession() as http:
        async with http.options(f"{url}{BASE}/job-1", headers={
                "Origin": ORIGIN, "Access-Control-Request-Method": "PATCH"}) as resp:
            assert resp.status == 204
            assert "PATCH" in resp.headers["Access-Control-Allow-Methods"]
        async with http.options(f"{url}{BASE}/job-1", headers={
                "Origin": "https://evil.example",
                "Access-Control-Request-Method": "PATCH"}) as resp:
            assert resp.status == 403


async def test_a_release_set_on_a_completed_album_retags_its_files(
        tmp_path: Path, fake: RunningFake) -> None:
    """The app sets the MusicBrainz release after the album finished: the id is kept and
    the files get the release's tags, verified; another edition's release is refused."""
    from tidalq.testing.fakemb import mbid

    port = free_port()
    daemon = await start(tmp_path, fake, http_listen=f"127.0.0.1:{port}",
                         musicbrainz_url=f"{fake.url}/mb")
    url = f"http://127.0.0.1:{port}"
    try:
        _, body = await call("POST", url + BASE, json=ALBUM_BODY)
        job_url = f"{url}{BASE}/{body['jobId']}"
        done = await wait_for(url, body["jobId"], "completed", 60)
        paths = [Path(t["path"]) for t in done["trackProgress"]]
        assert not any("MUSICBRAINZ_ALBUMID" in FLAC(p) for p in paths)

        status, body = await call("PATCH", job_url, json={
            "action": "set_musicbrainz_release", "musicBrainzReleaseId": mbid("a", 110)})
        assert status == 200 and "another edition" in body["message"]
        assert not any("MUSICBRAINZ_ALBUMID" in FLAC(p) for p in paths)

        status, body = await call("PATCH", job_url, json={
            "action": "set_musicbrainz_release", "musicBrainzReleaseId": mbid("a", 100)})
        assert status == 200 and "re-tagged 3 of 3 files" in body["message"], body
        _, got = await call("GET", job_url)
        assert got["job"]["job"]["musicBrainzReleaseId"] == mbid("a", 100)
        assert "re-tagged 3 of 3" in got["job"]["job"]["musicBrainzMatch"]
        for path, entry in zip(paths, done["trackProgress"], strict=True):
            tags = FLAC(path)
            assert tags["MUSICBRAINZ_ALBUMID"] == [mbid("a", 100)]
            assert tags["MUSICBRAINZ_TRACKID"] == [mbid("b", entry["trackId"])]
            assert tags["TIDAL_TRACK_ID"] == [str(entry["trackId"])], "other tags kept"
            subprocess.run(["flac", "-t", "-s", str(path)], check=True)
        leftovers = [p for p in (tmp_path / "lib" / ".tidalq" / "staging").rglob("*")
                     if p.is_file()]
        assert leftovers == []
    finally:
        await daemon.shutdown()


async def test_polls_never_show_null_numbers_or_a_partial_track_count(
        web: tuple[str, Daemon], fake: RunningFake) -> None:
    """The app's types have completedAt and nextRetryAt as number | undefined, and it shows
    totalTracks from the first poll: album 300's 210 tracks, never fewer. The app's own
    body sends no trackCount here, so the count must be the daemon's."""
    url, _ = web
    fake.faults.throttle_bps = 2_000_000
    job = {k: v for k, v in ALBUM_BODY["job"].items() if k != "trackCount"}
    _, body = await call("POST", url + BASE, json={"job": {**job, "albumId": 300}})
    counts: list[int | None] = []
    seen: dict[str, Any] = {}

    async def finished() -> bool:
        _, got = await call("GET", f"{url}{BASE}/{body['jobId']}")
        seen.update(got["job"])
        nulls = [k for k, v in got["job"].items() if v is None]
        assert nulls == [], f"{nulls} are null while {got['job']['status']}"
        _, listed = await call("GET", url + BASE)
        assert all(v is not None for j in listed["jobs"] for v in j.values())
        if got["job"]["status"] == "processing":
            counts.append(got["job"].get("trackCount"))
        return bool(got["job"]["status"] == "completed")

    await await_until(finished, 90, "album 300 to complete")
    fake.faults.throttle_bps = None
    assert counts and set(counts) <= {None, 210}, counts
    assert counts[-1] == 210 and None not in counts[counts.index(210):], "never shrinks"
    assert seen["trackCount"] == 210 and "nextRetryAt" not in seen
