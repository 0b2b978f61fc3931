"""Download benchmark: the same album (12 tracks of 40 MB) from the fake upstream over
loopback, by tidalq and by curl, unthrottled and throttled to 25 MB/s per connection.

    python bench/download.py [--track-mb 40] [--runs 3]

Prints one JSON line with the medians: ``fetch_ratio`` (tidalq's fetch stage against
``curl --parallel --parallel-max 4``, unthrottled), ``pipeline_ratio_throttled``
(tidalq's whole pipeline — fetch, tag, verify, publish — against curl's download alone,
throttled) and ``peak_rss_mb`` of this process (the fake runs in its own process).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the stdlib's queue: keep this folder off sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse
import asyncio
import json
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

import aiohttp

from tidalq.config import load_settings
from tidalq.media.fetch import Fetcher
from tidalq.models import Job, JobSpec
from tidalq.pipeline import Pipeline
from tidalq.terms import Quality
from tidalq.upstream.api import UpstreamClient
from tidalq.upstream.manifest import DirectStream

ALBUM = 900
THROTTLE_BPS = 25_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_fake(track_mb: float, cache: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tidalq.testing.fakeapi", "--port", str(port),
                             "--track-mb", str(track_mb), "--cache", str(cache)],
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("fake upstream did not start")


async def set_throttle(session: aiohttp.ClientSession, url: str, bps: int | None) -> None:
    async with session.post(f"{url}/_fake/faults", json={"throttle_bps": bps}) as resp:
        resp.raise_for_status()


async def cdn_urls(session: aiohttp.ClientSession, url: str) -> list[str]:
    up = UpstreamClient(session, [url], url)
    album = await up.album(ALBUM)
    urls = []
    for track in album.tracks:
        served = await up.playback(track.id, Quality.LOSSLESS)
        assert isinstance(served.stream, DirectStream)
        urls.append(served.stream.url)
    return urls


def time_curl(urls: list[str], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    args = ["curl", "-s", "--no-progress-meter", "--fail", "--parallel", "--parallel-max", "4"]
    for i, u in enumerate(urls):
        args += ["-o", str(out / f"{i}.flac"), u]
    start = time.perf_counter()
    subprocess.run(args, check=True)
    elapsed = time.perf_counter() - start
    shutil.rmtree(out)
    return elapsed


async def time_fetch(session: aiohttp.ClientSession, urls: list[str], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    fetcher = Fetcher(session)
    slots = asyncio.Semaphore(4)

    async def one(i: int, u: str) -> None:
        async with slots:
            await fetcher.fetch_file(u, out / f"{i}.flac", lambda done, total: None)

    start = time.perf_counter()
    await asyncio.gather(*(one(i, u) for i, u in enumerate(urls)))
    elapsed = time.perf_counter() - start
    shutil.rmtree(out)
    return elapsed


async def time_pipeline(session: aiohttp.ClientSession, url: str, library: Path) -> float:
    settings = load_settings({"download_dir": str(library), "api_urls": [url], "cover_url": url,
                              "conflict": "overwrite"}, env={})
    pipe = Pipeline(settings, UpstreamClient(session, [url], url), Fetcher(session),
                    asyncio.Semaphore(settings.max_concurrent - 1))
    job = Job(id="job-bench", spec=JobSpec("album", ALBUM, Quality.LOSSLESS))
    start = time.perf_counter()
    tracks = await pipe.run_album_job(job, lambda p, t, f: None)
    elapsed = time.perf_counter() - start
    assert all(t["status"] == "completed" for t in tracks)
    shutil.rmtree(library)
    return elapsed


async def run(url: str, tmp: Path, runs: int) -> dict[str, object]:
    raw: dict[str, list[float]] = {k: [] for k in ("curl", "fetch", "curl_throttled",
                                                   "pipeline_throttled")}
    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(connector=connector) as session:
        urls = await cdn_urls(session, url)
        time_curl(urls, tmp / "warm")  # the fake generates its media on first request
        for _ in range(runs):
            await set_throttle(session, url, None)
            raw["curl"].append(time_curl(urls, tmp / "curl"))
            raw["fetch"].append(await time_fetch(session, urls, tmp / "fetch"))
            await set_throttle(session, url, THROTTLE_BPS)
            raw["curl_throttled"].append(time_curl(urls, tmp / "curlt"))
            raw["pipeline_throttled"].append(await time_pipeline(session, url, tmp / "lib"))
    med = {k: statistics.median(v) for k, v in raw.items()}
    return {
        "fetch_ratio": round(med["fetch"] / med["curl"], 3),
        "pipeline_ratio_throttled": round(med["pipeline_throttled"] / med["curl_throttled"], 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "curl_s": round(med["curl"], 3), "fetch_s": round(med["fetch"], 3),
        "curl_throttled_s": round(med["curl_throttled"], 3),
        "pipeline_throttled_s": round(med["pipeline_throttled"], 3),
        "runs": runs, "raw": {k: [round(x, 3) for x in v] for k, v in raw.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--track-mb", type=float, default=40)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tidalq-bench-") as tmpdir:
        tmp = Path(tmpdir)
        proc, url = start_fake(args.track_mb, tmp / "cache")
        try:
            result = asyncio.run(run(url, tmp, args.runs))
        finally:
            proc.terminate()
            proc.wait()
    print(json.dumps({"track_mb": args.track_mb, "tracks": 12, **result}), flush=True)


if __name__ == "__main__":
    main()
