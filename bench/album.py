"""Per-track overhead: many short tracks through tidalq against curl fetching the same files.

    python bench/album.py [--runs 1]

Starts the fake upstream in a process of its own (a real upstream is another machine: it
must not share the daemon's interpreter), warms it by fetching every file once, then, in
the same run for each kind: tidalq (a daemon in this process, 4 slots, SQLite) from submit
to completed (album 300: 210 tracks of about 0.7 MB; the 500-track playlist; an artist
whose releases are that playlist's five 100-track albums), and
``curl --parallel --parallel-max 4`` fetching the same CDN files to a scratch folder.
``api_requests_per_track`` counts the upstream API requests tidalq made (CDN excluded;
with ``TIDALQ_LYRICS=on`` one of them per track is the lyrics; off is the default).
``per_track_overhead_ms`` is what a track costs tidalq beyond curl's time for its bytes
(API calls, tagging, verification, fsync, rename). One JSON line per kind per run, and
with ``--runs`` above 1 a line of medians per kind.

tidalq decodes every file whole before publishing it (libFLAC in decoder programs that
outlive a track, each fetching a file itself and decoding its bytes as they arrive, the
tags already ahead of the frames); curl checks nothing.
So that the floor this sets is in view, the same run times ``flac -t`` over curl's files,
one process per core (``flac_t_s``), and prints the ratio to curl followed by that test
(``ratio_to_curl_then_flac_t``): what a user fetching with curl would run to know the
files are whole.

What the design itself costs is in view too: the same files fetched and decoded by four
lanes of the daemon's decoder programs and nothing else (no API request, tags, store or
publish; ``decoders_only_s``), and its ratio to curl then ``flac -t``
(``floor_ratio_to_curl_then_flac_t``): no daemon built on these programs gets below it.
``daemon_ms_per_track`` is what the daemon's own work adds to that, per track.

Each timed section starts with ``sync``: curl leaves its files to the kernel's writeback,
and the ``fsync`` of the next section would otherwise pay for writing them out.

Beside the seconds, each line gives the CPU seconds each section cost on this machine
(``tidalq_cpu_s``: the daemon, its decoder programs and the fake upstream's share;
``curl_cpu_s``: curl and the fake; ``flac_t_cpu_s``) and their ratio
(``cpu_ratio_to_curl_then_flac_t``): on a machine shared with others, where the seconds
of one run differ from the next by a third, what the work costs moves less than how long
it took.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the stdlib's queue: keep this folder off sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import cast

from tidalq.config import load_settings
from tidalq.daemon import Daemon
from tidalq.media import checked
from tidalq.media import decoders as decoder_programs
from tidalq.media.cdn_body import CdnSettings
from tidalq.models import JobSpec
from tidalq.testing.catalog import BENCH_ARTIST, BENCH_PLAYLIST, Catalog
from tidalq.testing.localservers import free_port

KINDS = {"album": (JobSpec("album", 300), [300]),
         "playlist": (JobSpec("playlist", BENCH_PLAYLIST), [950, 951, 952, 953, 954]),
         "artist": (JobSpec("artist", BENCH_ARTIST), [950, 951, 952, 953, 954])}


def cpu_of(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has used so far (Linux's /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def waited_cpu() -> float:
    """CPU seconds of this process's children that have been waited for (curl, xargs
    and the flac programs it waited for)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def own_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def decoders() -> list[int]:
    """The daemon's decoder programs (children of this process) running now."""
    mine, found = str(os.getpid()), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == mine and \
                        b"tidalq.media.decoder_program" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def decoders_cpu() -> float:
    total = 0.0
    for pid in decoders():
        with contextlib.suppress(OSError):
            total += cpu_of(pid)
    return total


async def decoders_reaped() -> None:
    """Until the decoder programs closed have ended (ten seconds at most)."""
    deadline = time.monotonic() + 10
    while decoders() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def fake_upstream(cache: Path) -> Iterator[tuple[str, int]]:
    """The fake hifi-api in a process of its own; yields its URL and its pid."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tidalq.testing.fakeapi", "--port",
                             str(port), "--cache", str(cache)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the fake upstream did not start") from None
                time.sleep(0.05)
        import urllib.request

        pages = urllib.request.Request(  # a real server's page (the tests' fake pages by 4)
            f"http://127.0.0.1:{port}/_fake/faults", data=b'{"page_cap": 100}',
            headers={"Content-Type": "application/json"})
        urllib.request.urlopen(pages, timeout=10).close()
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


async def tidalq_seconds(url: str, tmp: Path, spec: JobSpec) -> tuple[float, float]:
    """Seconds from submit to completed, and the CPU seconds of the daemon and its decoder
    programs meanwhile (the decoders are idle by then: their count is final)."""
    settings = load_settings({
        "download_dir": str(tmp / "lib"), "store": f"sqlite:///{tmp}/q.db",
        "socket": str(tmp / "run" / "q.sock"), "api_urls": [url], "cover_url": url,
        "lyrics": os.environ.get("TIDALQ_LYRICS", "off")}, env={})
    daemon = Daemon(settings)
    await daemon.startup()
    store = daemon.store
    assert store is not None
    try:
        began, cpu_before = time.perf_counter(), own_cpu() + decoders_cpu()
        job, _ = await store.submit(spec)
        daemon.pool_or_raise.wake()
        cursor = await store.last_event_id()
        while not (await store.get(job.id)).status.finished:
            events = await store.wait_events(cursor, 1.0)
            if events:
                cursor = events[-1].id
        seconds = time.perf_counter() - began
        cpu = own_cpu() + decoders_cpu() - cpu_before
        final = await store.get(job.id)
        if final.status.value != "completed":
            raise SystemExit(f"{spec.type} ended {final.status.value}: {final.error}")
        return seconds, cpu
    finally:
        await daemon.shutdown()
        await decoders_reaped()  # not counted with curl's


async def decoders_only_seconds(url: str, out: Path, track_ids: list[int]
                                ) -> tuple[float, float]:
    """The files fetched, written, decoded and synced by four lanes of decoder programs,
    as the daemon's slots use them, with none of the daemon's other work: seconds, and the
    CPU seconds of this process and the decoders."""
    out.mkdir()
    waiting = list(track_ids)

    async def lane() -> None:
        while waiting:
            track = waiting.pop()
            await checked.fetch_checked(f"{url}/cdn/{track}/track.flac?token=sig1",
                                        out / f"{track}.flac", [], CdnSettings(),
                                        lambda *_: None)

    began, cpu_before = time.perf_counter(), own_cpu()
    try:
        await asyncio.gather(*(lane() for _ in range(4)))
        return time.perf_counter() - began, own_cpu() + decoders_cpu() - cpu_before
    finally:
        decoder_programs.of_this_loop().close()  # fetch_checked's
        await decoders_reaped()


def api_requests(url: str) -> int:
    """Requests the fake answered that were not CDN downloads (what rate limits count)."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/_fake/requests", timeout=30) as resp:
        return sum(1 for r in json.loads(resp.read()) if not r["path"].startswith("/cdn/"))


def curl_seconds(url: str, out: Path, track_ids: list[int]) -> float:
    out.mkdir()
    config = out.with_suffix(".cfg")
    config.write_text("".join(f'url = "{url}/cdn/{t}/track.flac?token=sig1"\n'
                              f'output = "{out}/{t}.flac"\n' for t in track_ids))
    began = time.perf_counter()
    subprocess.run(["curl", "--silent", "--no-progress-meter", "--fail", "--parallel",
                    "--parallel-max", "4", "--config", str(config)], check=True)
    seconds = time.perf_counter() - began
    got = list(out.iterdir())
    if len(got) != len(track_ids) or min(p.stat().st_size for p in got) < 100_000:
        raise SystemExit("curl did not fetch every file whole")
    return seconds


def flac_t_seconds(folder: Path) -> float:
    """``flac -t`` over every file in ``folder``, a process per core, 16 files each."""
    files = b"\0".join(bytes(p) for p in sorted(folder.iterdir()))
    began = time.perf_counter()
    subprocess.run(["xargs", "-0", "-P", str(os.cpu_count() or 2), "-n", "16", "flac", "-t",
                    "-s"], input=files, check=True)
    return time.perf_counter() - began


# seconds (tidalq, curl, flac -t, decoders only), then CPU seconds in the same order
Section = tuple[float, float, float, float, float, float, float, float]


def line(kind: str, tracks: int, section: Section) -> dict[str, object]:
    ours, theirs, test, floor, ours_cpu, theirs_cpu, test_cpu, floor_cpu = section
    return {"bench": "album", "kind": kind, "tracks": tracks, "tidalq_s": round(ours, 2),
            "curl_s": round(theirs, 2), "ratio": round(ours / theirs, 2),
            "per_track_overhead_ms": round((ours - theirs) / tracks * 1000, 1),
            "flac_t_s": round(test, 2),
            "ratio_to_curl_then_flac_t": round(ours / (theirs + test), 2),
            "tidalq_cpu_s": round(ours_cpu, 2), "curl_cpu_s": round(theirs_cpu, 2),
            "flac_t_cpu_s": round(test_cpu, 2),
            "cpu_ratio_to_curl_then_flac_t": round(ours_cpu / (theirs_cpu + test_cpu), 2),
            "decoders_only_s": round(floor, 2), "decoders_only_cpu_s": round(floor_cpu, 2),
            "floor_ratio_to_curl_then_flac_t": round(floor / (theirs + test), 2),
            "daemon_ms_per_track": round((ours - floor) / tracks * 1000, 1)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    catalog = Catalog()
    results: dict[str, list[Section]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory(prefix="tidalq-album-") as tmp, \
            fake_upstream(Path(tmp) / "media") as (url, fake):
        for kind, (_, albums) in KINDS.items():  # the fake makes its files on first request
            ids = [t.id for a in albums for t in catalog.albums[a].tracks]
            await asyncio.to_thread(curl_seconds, url, Path(tmp) / f"warm-{kind}", ids)
        for run in range(args.runs):
            for kind, (spec, albums) in KINDS.items():
                ids = [t.id for a in albums for t in catalog.albums[a].tracks]
                work = Path(tmp) / f"{kind}{run}"
                work.mkdir()
                os.sync()  # no writeback left over from the last section in this one
                asked_before = api_requests(url)
                fake_before = cpu_of(fake)
                ours, ours_cpu = await tidalq_seconds(url, work, spec)
                ours_cpu += cpu_of(fake) - fake_before
                per_track = round((api_requests(url) - asked_before) / len(ids), 3)
                os.sync()
                fake_before = cpu_of(fake)
                floor, floor_cpu = await decoders_only_seconds(url, work / "decoders", ids)
                floor_cpu += cpu_of(fake) - fake_before
                os.sync()
                fake_before, waited_before = cpu_of(fake), waited_cpu()
                theirs = await asyncio.to_thread(curl_seconds, url, work / "curl", ids)
                theirs_cpu = cpu_of(fake) - fake_before + waited_cpu() - waited_before
                waited_before = waited_cpu()
                test = await asyncio.to_thread(flac_t_seconds, work / "curl")
                section = (ours, theirs, test, floor, ours_cpu, theirs_cpu,
                           waited_cpu() - waited_before, floor_cpu)
                results[kind].append(section)
                print(json.dumps({**line(kind, len(ids), section),
                                  "api_requests_per_track": per_track}), flush=True)
        if args.runs > 1:
            for kind, sections in results.items():
                tracks = len([t for a in KINDS[kind][1] for t in catalog.albums[a].tracks])
                medians = cast(Section, tuple(statistics.median(s[i] for s in sections)
                                              for i in range(8)))
                print(json.dumps({**line(kind, tracks, medians),
                                  "median_of": len(sections)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
