"""API requests per track through the user's own TIDAL account (``upstream = "tidal"``):
each job kind downloaded through the fake TIDAL, counting what reached its API (CDN
downloads are not API requests and are not paced).

    python bench/account.py

Prints one JSON line per job: ``api_requests``, ``tracks`` and ``api_requests_per_track``,
with the seconds it took at ``request_pace`` (default here 1000 a minute, so that the
bench measures requests rather than waiting; the seconds at the default pace of 60 a
minute are at least ``api_requests`` seconds).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the stdlib's queue: keep this folder off sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse
import asyncio
import json
import tempfile
import time
from typing import Any

import aiohttp

from tidalq.attempt import Unleased
from tidalq.collections import CollectionRunner
from tidalq.config import load_settings
from tidalq.login import LoginDesk
from tidalq.media.fetch import Fetcher
from tidalq.models import Job, JobSpec
from tidalq.pipeline import AlbumFailed, Pipeline
from tidalq.terms import Quality
from tidalq.testing.catalog import PLAYLIST
from tidalq.testing.fakeapi import RunningFake, start_fake
from tidalq.upstream import factory

JOBS = [("track", 1001), ("album", 100), ("album", 900), ("playlist", PLAYLIST)]


def no_report(progress: Any, tracks: Any, force: bool) -> None:
    return None


async def log_in(desk: LoginDesk, fake: RunningFake) -> None:
    code = (await desk.start())["code"]
    async with aiohttp.ClientSession() as http, \
            http.get(f"{fake.url}/tidal/link/{code}") as resp:
        resp.raise_for_status()
    if (await desk.wait_until(30))["state"] != "done":
        raise SystemExit("the fake login did not complete")


async def run_job(pipe: Pipeline, settings: Any, kind: str, ref: int | str) -> int:
    """Download one job; how many tracks it had."""
    job = Job(id=f"job-bench-{kind}", spec=JobSpec(kind, ref, Quality.LOSSLESS))  # type: ignore[arg-type]
    if kind == "track":
        await pipe.run_track_job(job, no_report)
        return 1
    if kind == "album":
        return len(await pipe.run_album_job(job, no_report))
    runner = CollectionRunner(pipe, settings)
    try:
        _, tracks = await runner.run_collection_job(job, no_report, Unleased(job.id))
    except AlbumFailed as exc:  # the playlist's preview-only and vanished entries
        tracks = exc.tracks
    return len(tracks)


async def main(pace: int) -> None:
    with tempfile.TemporaryDirectory(prefix="tidalq-bench-account-") as tmp:
        root = Path(tmp)
        (root / "cache").mkdir()
        fake = await start_fake(root / "cache")
        settings = load_settings({
            "download_dir": str(root / "lib"), "upstream": "tidal", "cover_url": fake.url,
            "tidal_api_url": f"{fake.url}/tidal/v1", "request_pace": pace,
            "tidal_auth_url": f"{fake.url}/tidal/auth/v1/oauth2",
            "state_dir": str(root / "state")}, env={})
        async with aiohttp.ClientSession() as session:
            account = factory.make_account(settings, session)
            await log_in(LoginDesk(account, settings.tidal_api_url), fake)
            upstream = factory.make_upstream(session, settings, account)
            pipe = Pipeline(settings, upstream, Fetcher(session),
                            asyncio.Semaphore(settings.max_concurrent - 1))
            for kind, ref in JOBS:
                before = fake.upstream.count("/tidal/v1/")
                began = time.monotonic()
                tracks = await run_job(pipe, settings, kind, ref)
                asked = fake.upstream.count("/tidal/v1/") - before
                print(json.dumps({
                    "bench": "account_api_requests", "job": f"{kind} {ref}",
                    "tracks": tracks, "api_requests": asked,
                    "api_requests_per_track": round(asked / max(1, tracks), 2),
                    "seconds": round(time.monotonic() - began, 2), "request_pace": pace}),
                    flush=True)
        await fake.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pace", type=int, default=1000, help="request_pace for the run")
    asyncio.run(main(parser.parse_args().pace))
