"""Per-track overhead: many short tracks through tidalq against curl fetching the same files.

    python bench/album.py [--runs 1]

Starts the fake upstream and a daemon (4 slots, SQLite) in this process. For each kind, in
the same run: tidalq from submit to completed (album 300: 210 tracks of about 0.7 MB; the
500-track playlist), then ``curl --parallel --parallel-max 4`` fetching the same CDN files
to a scratch folder. ``per_track_overhead_ms`` is what a track costs tidalq beyond curl's
time for its bytes (API calls, tagging, verification, fsync, rename). One JSON line per
kind per run.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the stdlib's queue: keep this folder off sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse
import asyncio
import json
import subprocess
import tempfile
import time

from tidalq.config import load_settings
from tidalq.daemon import Daemon
from tidalq.models import JobSpec
from tidalq.testing.catalog import BENCH_PLAYLIST
from tidalq.testing.fakeapi import RunningFake, start_fake

KINDS = {"album": (JobSpec("album", 300), [300]),
         "playlist": (JobSpec("playlist", BENCH_PLAYLIST), [950, 951, 952, 953, 954])}


async def tidalq_seconds(fake: RunningFake, tmp: Path, spec: JobSpec) -> float:
    settings = load_settings({
        "download_dir": str(tmp / "lib"), "store": f"sqlite:///{tmp}/q.db",
        "socket": str(tmp / "run" / "q.sock"), "api_urls": [fake.url],
        "cover_url": fake.url}, env={})
    daemon = Daemon(settings)
    await daemon.startup()
    store = daemon.store
    assert store is not None
    try:
        began = time.perf_counter()
        job, _ = await store.submit(spec)
        daemon.pool_or_raise.wake()
        cursor = await store.last_event_id()
        while not (await store.get(job.id)).status.finished:
            events = await store.wait_events(cursor, 1.0)
            if events:
                cursor = events[-1].id
        seconds = time.perf_counter() - began
        final = await store.get(job.id)
        if final.status.value != "completed":
            raise SystemExit(f"{spec.type} ended {final.status.value}: {final.error}")
        return seconds
    finally:
        await daemon.shutdown()


def curl_seconds(fake: RunningFake, tmp: Path, track_ids: list[int]) -> float:
    out = tmp / "curl"
    out.mkdir()
    config = tmp / "curl.cfg"
    config.write_text("".join(f'url = "{fake.url}/cdn/{t}/track.flac?token=sig1"\n'
                              f'output = "{out}/{t}.flac"\n' for t in track_ids))
    began = time.perf_counter()
    subprocess.run(["curl", "--silent", "--fail", "--parallel", "--parallel-max", "4",
                    "--config", str(config)], check=True)
    seconds = time.perf_counter() - began
    got = list(out.iterdir())
    if len(got) != len(track_ids) or min(p.stat().st_size for p in got) < 100_000:
        raise SystemExit("curl did not fetch every file whole")
    return seconds


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tidalq-album-") as tmp:
        media = Path(tmp) / "media"
        media.mkdir()
        fake = await start_fake(media)
        catalog = fake.upstream.catalog
        try:
            for run in range(args.runs):
                for kind, (spec, albums) in KINDS.items():
                    ids = [t.id for a in albums for t in catalog.albums[a].tracks]
                    await asyncio.gather(*(fake.upstream.flac_file(catalog.tracks[i])
                                           for i in ids))  # made before timing
                    work = Path(tmp) / f"{kind}{run}"
                    work.mkdir()
                    ours = await tidalq_seconds(fake, work, spec)
                    theirs = await asyncio.to_thread(curl_seconds, fake, work, ids)
                    print(json.dumps({
                        "bench": "album", "kind": kind, "tracks": len(ids),
                        "tidalq_s": round(ours, 2), "curl_s": round(theirs, 2),
                        "ratio": round(ours / theirs, 2),
                        "per_track_overhead_ms": round((ours - theirs) / len(ids) * 1000, 1),
                    }), flush=True)
        finally:
            await fake.close()


if __name__ == "__main__":
    asyncio.run(main())
