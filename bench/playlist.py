"""A 500-track playlist against the same tracks as album downloads, and a re-run.

    python bench/playlist.py [--runs 1]

Starts the fake upstream and a daemon in this process (4 download slots, SQLite). Times,
from submit to completed: the five 100-track albums the playlist draws from (one library),
the playlist on a cold library (another), and the playlist again on that full library
(no CDN bytes expected, and no decode of what tidalq verified: ``rerun_s``). The fake
answers 100 items a page, as a real server does. Prints one JSON line per run, with the
API requests per track (CDN excluded).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the stdlib's queue: keep this folder off sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse
import asyncio
import json
import os
import tempfile
import time
from typing import Any

from tidalq.config import load_settings
from tidalq.daemon import Daemon
from tidalq.models import JobSpec
from tidalq.testing.catalog import BENCH_PLAYLIST
from tidalq.testing.fakeapi import RunningFake, start_fake

ALBUMS = [950, 951, 952, 953, 954]


async def timed(daemon: Daemon, specs: list[JobSpec]) -> float:
    store = daemon.store
    assert store is not None
    began = time.perf_counter()
    ids = [(await store.submit(spec))[0].id for spec in specs]
    daemon.pool_or_raise.wake()
    cursor = await store.last_event_id()
    while True:
        jobs = [await store.get(i) for i in ids]
        if all(j.status.finished for j in jobs):
            break
        events = await store.wait_events(cursor, 1.0)
        if events:
            cursor = events[-1].id
    bad = [j for j in jobs if j.status.value != "completed"]
    if bad:
        raise SystemExit(f"{bad[0].id} ended {bad[0].status.value}: {bad[0].error}")
    return time.perf_counter() - began


async def run_once(fake: RunningFake, tmp: Path) -> list[dict[str, Any]]:
    lines = []
    for name, specs in (("albums", [JobSpec("album", a) for a in ALBUMS]),
                        ("playlist_cold", [JobSpec("playlist", BENCH_PLAYLIST)]),
                        ("playlist_rerun", [JobSpec("playlist", BENCH_PLAYLIST)])):
        library = tmp / ("albums" if name == "albums" else "playlist")
        settings = load_settings({
            "download_dir": str(library), "store": f"sqlite:///{tmp}/{name}.db",
            "socket": str(tmp / name / "q.sock"), "api_urls": [fake.url],
            "cover_url": fake.url, "lyrics": os.environ.get("TIDALQ_LYRICS", "off")}, env={})
        daemon = Daemon(settings)
        await daemon.startup()
        try:
            cdn_before, all_before = fake.upstream.count("/cdn/"), len(fake.upstream.requests)
            seconds = await timed(daemon, specs)
        finally:
            await daemon.shutdown()
        cdn = fake.upstream.count("/cdn/") - cdn_before
        api = len(fake.upstream.requests) - all_before - cdn
        lines.append({"bench": "playlist", "run": name, "tracks": 500,
                      "seconds": round(seconds, 2), "cdn_requests": cdn,
                      "api_requests": api, "api_requests_per_track": round(api / 500, 3)})
    cold = next(x["seconds"] for x in lines if x["run"] == "playlist_cold")
    albums = next(x["seconds"] for x in lines if x["run"] == "albums")
    rerun = next(x["seconds"] for x in lines if x["run"] == "playlist_rerun")
    lines.append({"bench": "playlist", "run": "ratio", "playlist_over_albums":
                  round(cold / albums, 2), "rerun_s": rerun})
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tidalq-playlist-") as tmp:
        media = Path(tmp) / "media"
        media.mkdir()
        fake = await start_fake(media)
        fake.faults.page_cap = 100  # a real server's page (the tests' fake pages by 4)
        try:  # the fake makes its media once, before anything is timed
            catalog = fake.upstream.catalog
            await asyncio.gather(*(fake.upstream.media.flac_file(catalog.tracks[t])
                                   for a in ALBUMS for t in (x.id for x in
                                                             catalog.albums[a].tracks)))
            for n in range(args.runs):
                run_dir = Path(tmp) / f"run{n}"
                for line in await run_once(fake, run_dir):
                    print(json.dumps(line), flush=True)
        finally:
            await fake.close()


if __name__ == "__main__":
    asyncio.run(main())
