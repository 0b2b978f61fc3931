"""What a new user tripped over: tags and names like Picard's, one file per track, plain
`watch` output, honest messages and exit codes, titles instead of ids, small stats, and a
log that records every job."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mutagen.flac import FLAC
from mutagen.mp4 import MP4

from tests.helpers import DaemonProcess, FakeProcess, await_until, wait_until
from tests.test_pipeline import audio_files, job, make_pipeline, no_report
from tidalq.media import tags
from tidalq.media.paths import relative_path
from tidalq.models import Artist, TrackMeta
from tidalq.terms import Quality
from tidalq.testing.fakeapi import RunningFake
from tidalq.upstream.shapes import per_disc_totals

# -- the library ----------------------------------------------------------------------------

async def test_track_totals_are_per_disc_as_picard_writes_them(
        session: aiohttp.ClientSession, fake: RunningFake, tmp_path: Path) -> None:
    pipe = make_pipeline(session, fake, tmp_path / "lib")
    for entry in await pipe.run_album_job(job("album", 200), no_report):
        tags = FLAC(entry["path"])
        assert tags["TRACKTOTAL"] == ["2"] and tags["DISCTOTAL"] == ["2"]
    single = await pipe.run_track_job(job("track", 2003, Quality.HIGH), no_report)
    assert single["keptBetter"] and single["path"].endswith(".flac")
    forced = make_pipeline(session, fake, tmp_path / "lib2")
    aac = await forced.run_track_job(job("track", 2003, Quality.HIGH), no_report)
    assert MP4(aac["path"]).tags["trkn"] == [(1, 2)] and MP4(aac["path"]).tags["disk"] == [(2, 2)]


def test_track_numbers_are_padded_to_the_largest_on_their_disc() -> None:
    def meta(n: int, disc: int) -> TrackMeta:
        return TrackMeta(id=n, title=f"Part {n}", version=None, duration_s=4,
                         track_number=n, disc_number=disc, artists=(Artist(1, "A"),),
                         album_id=3, album_title="Long", album_artist="A")

    tracks = per_disc_totals([meta(n, 1) for n in range(1, 211)] + [meta(1, 2)], 2)
    names = [relative_path("{album}/{disc_track} - {title}", t, ".flac").name for t in tracks]
    assert names[0] == "1-001 - Part 1.flac" and names[209] == "1-210 - Part 210.flac"
    assert names[-1] == "2-01 - Part 1.flac"
    assert sorted(names[:210]) == names[:210], "they sort as they play"
    assert tracks[0].track_total == 210 and tracks[-1].track_total == 1


async def test_one_file_per_track_across_qualities(
        session: aiohttp.ClientSession, fake: RunningFake, tmp_path: Path) -> None:
    library = tmp_path / "lib"
    pipe = make_pipeline(session, fake, library)
    low = await pipe.run_track_job(job("track", 1003, Quality.HIGH), no_report)
    assert low["path"].endswith(".m4a")
    up = await pipe.run_track_job(job("track", 1003, Quality.LOSSLESS), no_report)
    assert up["path"].endswith(".flac") and up["replaced"] == low["path"]
    assert [p.suffix for p in audio_files(library)] == [".flac"]
    down = await pipe.run_track_job(job("track", 1003, Quality.HIGH), no_report)
    assert down["skipped"] and down["keptBetter"] and down["path"] == up["path"]
    forced = job("track", 1003, Quality.HIGH)
    forced.spec = forced.spec.__class__(**{**forced.spec.__dict__, "force": True})
    again = await pipe.run_track_job(forced, no_report)
    assert again["path"].endswith(".m4a") and again["replaced"] == up["path"]
    assert [p.suffix for p in audio_files(library)] == [".m4a"]


@pytest.mark.parametrize(("late", "early"), [(Quality.HIGH, Quality.LOSSLESS),
                                             (Quality.LOW, Quality.HIGH)])
async def test_a_lower_quality_finishing_last_never_replaces_a_better_file(
        session: aiohttp.ClientSession, fake: RunningFake, tmp_path: Path,
        late: Quality, early: Quality) -> None:
    """A track asked for at two qualities at once (a track job beside its album's): the
    worse download began before the better file existed and ends after it was published.
    The better file stays, whether the two share a container (LOW and HIGH are both AAC)
    or not. Before, the late one replaced it, or deleted it as "the old version"."""
    library = tmp_path / "lib"
    pipe = make_pipeline(session, fake, library)
    fake.faults.cdn_stall_s = 3  # the late download's body stalls halfway
    progress: list[float] = []

    def late_report(value: Any, tracks: Any, force: bool) -> None:
        progress.append(value() if callable(value) else value)

    late_job = job("track", 1003, late)
    late_job.id += "-late"  # two jobs: their staging files must not be one
    slow = asyncio.create_task(pipe.run_track_job(late_job, late_report))
    await await_until(lambda: _true(any(0 < p < 1 for p in progress)), 10, "halfway")
    fake.faults.cdn_stall_s = 0
    better = await pipe.run_track_job(job("track", 1003, early), no_report)
    assert not slow.done(), "the worse download must end last for this test to mean anything"
    kept = await slow
    assert kept["skipped"] and kept["path"] == better["path"]
    [only] = audio_files(library)
    assert str(only) == better["path"] and tags.read_identity(only) == ("1003", early.value)


async def _true(value: bool) -> bool:
    return value


async def test_lrc_ends_with_a_newline_and_every_track_says_whether_it_was_skipped(
        session: aiohttp.ClientSession, fake: RunningFake, tmp_path: Path) -> None:
    pipe = make_pipeline(session, fake, tmp_path / "lib", lyrics="on")
    tracks = await pipe.run_album_job(job("album", 100), no_report)
    lrc = next((tmp_path / "lib").rglob("*.lrc")).read_text()
    assert lrc.endswith("\n") and not lrc.endswith("\n\n")
    assert all(t["skipped"] is False for t in tracks)
    assert all(t["skipped"] is True for t in await pipe.run_album_job(job("album", 100),
                                                                        no_report))


# -- the command line -----------------------------------------------------------------------

def test_watch_into_a_file_writes_a_line_per_event(make_daemon: Any, tmp_path: Path) -> None:
    d: DaemonProcess = make_daemon()
    out_file = tmp_path / "watch.txt"
    with out_file.open("w") as out:
        watcher = d.cli_process("watch", stdout=out, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: d.connections() >= 2, 15, "watch connected")
            job_id = d.cli("add", "track", "1001").stdout.strip()
            wait_until(lambda: f"{job_id} completed completed" in out_file.read_text(), 30,
                       "the completed line")
        finally:
            watcher.send_signal(signal.SIGINT)
            watcher.communicate(timeout=20)
    assert watcher.returncode == 130
    lines = out_file.read_text().splitlines()
    assert all(line.count(" ") >= 4 for line in lines) and any("submitted" in x for x in lines)


def test_messages_say_what_is_wrong(make_daemon: Any) -> None:
    d: DaemonProcess = make_daemon()
    video = d.cli("add", "https://tidal.com/browse/video/123", check=False)
    assert video.returncode == 2 and "videos are not supported" in video.stderr
    mismatch = d.cli("add", "album", "https://tidal.com/browse/track/2001", check=False)
    assert mismatch.returncode == 2 and "is a track link" in mismatch.stderr
    bare = d.cli("add", "tidal.com/browse/track/1001", "--json")
    assert json.loads(bare.stdout)[0]["job"]["trackId"] == 1001
    missing = d.cli("add", "album", "99999999").stdout.strip()
    assert d.cli("wait", missing, check=False).returncode == 1
    shown = d.json("show", missing)
    assert shown["failureCode"] == "NOT_FOUND"
    assert shown["error"].startswith("album 99999999 does not exist on TIDAL")


def test_retry_failed_notes_a_duplicate_and_succeeds(make_daemon: Any,
                                                     fake_proc: FakeProcess) -> None:
    d: DaemonProcess = make_daemon()
    first = d.cli("add", "track", "5001").stdout.strip()  # preview only: fails
    other = d.cli("add", "track", "1001", "--min-quality", "HI_RES_LOSSLESS").stdout.strip()
    for job_id in (first, other):
        wait_until(lambda j=job_id: d.json("show", j)["status"] == "failed", 20, "failed")
    d.cli("pause")
    live = d.cli("add", "track", "5001").stdout.strip()
    assert live != first
    out = d.cli("retry", "--failed", check=False)
    assert out.returncode == 0, out.stderr
    assert f"retrying {other}" in out.stdout and f"note: {first}" in out.stderr


def test_titles_not_ids_and_small_stats(make_daemon: Any, fake_proc: FakeProcess) -> None:
    d: DaemonProcess = make_daemon()
    fake_proc.faults(throttle_bps=400_000)
    album = d.cli("add", "album", "300").stdout.strip()
    wait_until(lambda: (d.json("status")["active"] or [{}])[0].get("completedTracks"), 30,
               "the album under way")
    raw = d.cli("status", "--json").stdout
    assert len(raw) < 4096, "stats are counts and summaries, not every track"
    active = json.loads(raw)["active"][0]
    assert active["albumTitle"] == "Very Long Album" and active["trackCount"] == 210
    assert "Test Artist – Very Long Album" in d.cli("status").stdout
    fake_proc.faults(throttle_bps=None)
    d.cli("cancel", album)
    listed = d.cli("list").stdout
    assert "Test Artist – Very Long Album" in listed and ".part" not in listed
    shown = d.json("show", album)
    assert shown["job"]["artistName"] == "Test Artist"
    assert shown["job"]["albumTitle"] == "Very Long Album"
    helptext = d.cli("--help").stdout
    assert " list " in helptext and " ls " not in helptext
    log = d.log()
    assert f"job {album} start: album 300" in log and f"job {album}" in log


def test_every_job_start_and_end_is_logged(make_daemon: Any) -> None:
    d: DaemonProcess = make_daemon()
    job_id = d.cli("add", "album", "100").stdout.strip()
    assert d.cli("wait", job_id).returncode == 0
    wait_until(lambda: f"job {job_id} end:" in d.log(), 10, "the end line")
    end = next(line for line in d.log().splitlines() if f"job {job_id} end:" in line)
    assert "outcome=completed kind=album id=100" in end
    assert 'albumTitle="First Light"' in end and "bytes=" in end and "duration_s=" in end
