"""The download pipeline end to end against the fake upstream: real HTTP, real files,
checked with flac -t, ffprobe and mutagen."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mutagen.flac import FLAC
from mutagen.mp4 import MP4

from tests.helpers import decoder_ended, slow_decoder, started_pid
from tidalq.config import load_settings
from tidalq.errors import (
    DiskFull,
    DownloadError,
    IntegrityFailed,
    PreviewOnly,
    QualityUnavailable,
    UpstreamUnavailable,
)
from tidalq.media.fetch import Fetcher
from tidalq.models import Job, JobSpec
from tidalq.pipeline import AlbumFailed, Pipeline
from tidalq.terms import Quality
from tidalq.testing.fakeapi import RunningFake
from tidalq.upstream.api import UpstreamClient


def make_pipeline(session: aiohttp.ClientSession, fake: RunningFake, library: Path,
                  read_timeout_s: float = 5, **overrides: Any) -> Pipeline:
    settings = load_settings({"download_dir": str(library), "api_urls": [fake.url],
                              "cover_url": fake.url, **overrides}, env={})
    up = UpstreamClient(session, settings.api_urls, settings.cover_url, read_timeout_s=5)
    return Pipeline(settings, up, Fetcher(session, read_timeout_s=read_timeout_s),
                    asyncio.Semaphore(settings.max_concurrent - 1))


def no_report(progress: Any, tracks: Any, force: bool) -> None:
    value = progress() if callable(progress) else progress
    listed = tracks() if callable(tracks) else tracks
    assert 0.0 <= value <= 1.0
    assert listed is None or all("status" in t for t in listed)


def job(kind: str, tidal_id: int, quality: Quality = Quality.LOSSLESS,
        min_quality: Quality | None = None) -> Job:
    return Job(id=f"job-1-{kind}{tidal_id}", spec=JobSpec(kind, tidal_id, quality,  # type: ignore[arg-type]
                                                          min_quality))


def audio_files(library: Path) -> list[Path]:
    return sorted(p for p in library.rglob("*") if p.suffix in (".flac", ".m4a")
                  and ".tidalq" not in p.parts)


def flac_ok(path: Path) -> None:
    subprocess.run(["flac", "-t", "-s", str(path)], check=True, capture_output=True)


async def test_album_lands_tagged_verified_and_second_run_downloads_nothing(
        session: aiohttp.ClientSession, fake: RunningFake, tmp_path: Path) -> None:
    pipe = make_pipeline(session, fake, tmp_path / "lib", lyrics="on")
    tracks = await pipe.run_album_job(job("album", 100), no_report)
    album_dir = tmp_path / "lib" / "Test Artist" / "First Light"
    names = sorted(p.name for p in album_dir.iterdir())
    assert names == ["01 - Opening.flac", "01 - Opening.lrc", "02 - Second Song (Live).flac",
                     "03 - Closing.flac", "cover.jpg"]
    assert [t["status"] for t in tracks] == ["completed"] * 3
    for path in audio_files(tmp_path / "lib"):
        flac_ok(path)
    tags = FLAC(album_dir / "02 - Second Song (Live).flac")
    assert tags["TITLE"] == ["Second Song (Live)"]
    assert tags["ARTIST"] == ["Test Artist", "Guest Singer"]
    assert tags["ALBUMARTIST"] == ["Test Artist"] and tags["TRACKTOTAL"] == ["3"]
    assert tags["TIDAL_TRACK_ID"] == ["1002"] and tags["ISRC"] == ["USFAKE001002"]
    assert tags["REPLAYGAIN_ALBUM_GAIN"] == ["-8.00 dB"] and tags["EXPLICIT"] == ["1"]
    assert tags.pictures[0].type == 3 and len(tags.pictures[0].data) > 1000
    assert "First line" in FLAC(album_dir / "01 - Opening.flac")["LYRICS"][0]
    before = {p: p.read_bytes() for p in audio_files(tmp_path / "lib")}
    cdn_before = fake.upstream.count("/cdn/")
    again = await pipe.run_album_job(job("album", 100), no_report)
    assert all(t["skipped"] for t in again)
    assert fake.upstream.count("/cdn/") == cdn_before, "an identical album downloads nothing"
    assert {p: p.read_bytes() for p in audio_files(tmp_path / "lib")} == before


async def test_multi_disc_album_names(session: aiohttp.ClientSession, fake: RunningFake,
                                      tmp_path: Path) -> None:
    await make_pipeline(session, fake, tmp_path).run_album_job(job("album", 200), no_report)
    names = [p.name for p in audio_files(tmp_path)]
    assert names == ["1-01 - Side 1 Song 1.flac", "1-02 - Side 1 Song 2.flac",
                     "2-01 - Side 2 Song 1.flac", "2-02 - Side 2 Song 2.flac"]
    assert FLAC(audio_files(tmp_path)[2])["DISCNUMBER"] == ["2"]


async def test_hi_res_album_is_remuxed_from_dash(session: aiohttp.ClientSession,
                                                 fake: RunningFake, tmp_path: Path) -> None:
    await make_pipeline(session, fake, tmp_path).run_album_job(
        job("album", 600, Quality.HI_RES_LOSSLESS), no_report)
    files = audio_files(tmp_path)
    assert len(files) == 2
    for path in files:
        flac_ok(path)
        info = FLAC(path).info
        assert (info.bits_per_sample, info.sample_rate) == (24, 96000)
        assert FLAC(path)["TIDALQ_QUALITY"] == ["HI_RES_LOSSLESS"]


async def test_hi_res_request_on_a_cd_track_records_what_was_served(
        session: aiohttp.ClientSession, fake: RunningFake, tmp_path: Path) -> None:
    pipe = make_pipeline(session, fake, tmp_path)
    result = await pipe.run_track_job(job("track", 1003, Quality.HI_RES_LOSSLESS), no_report)
    assert result["quality"] == "LOSSLESS" and result["bitDepth"] == 16
    with pytest.raises(QualityUnavailable):
        await pipe.run_track_job(job("track", 1001, Quality.HI_RES_LOSSLESS,
                                     Quality.HI_RES_LOSSLESS), no_report)


@pytest.mark.parametrize(("track", "quality"), [(1001, Quality.LOSSLESS),  # a decoder fetches
                                               (1002, Quality.HIGH)])  # the daemon does
async def test_a_cdn_host_that_does_not_resolve_says_so(
        track: int, quality: Quality, session: aiohttp.ClientSession, fake: RunningFake,
        tmp_path: Path) -> None:
    fake.faults.cdn_base = "http://no-such-host.invalid"
    with pytest.raises(UpstreamUnavailable, match=r"no-such-host\.invalid could not be resolved"):
        await make_pipeline(session, fake, tmp_path).run_track_job(job("track", track, quality),
                                                                   no_report)
    assert audio_files(tmp_path) == []


async def test_aac_track_is_tagged_m4a(session: aiohttp.ClientSession, fake: RunningFake,
                                       tmp_path: Path) -> None:
    result = await make_pipeline(session, fake, tmp_path).run_track_job(
        job("track", 1002, Quality.HIGH), no_report)
    path = Path(result["path"])
    assert path.suffix == ".m4a" and result["codec"].startswith("mp4a")
    tags = MP4(path)
    assert tags["©nam"] == ["Second Song (Live)"] and tags["trkn"] == [(2, 3)]
    assert bytes(tags["----:com.apple.iTunes:TIDAL_TRACK_ID"][0]) == b"1002"
    assert tags["covr"]
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a",
                            "-show_entries", "stream=codec_name", "-of", "csv=p=0", str(path)],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip().rstrip(",") == "aac"


async def test_hostile_titles_stay_inside_the_library(session: aiohttp.ClientSession,
                                                      fake: RunningFake, tmp_path: Path) -> None:
    library = tmp_path / "lib"
    await make_pipeline(session, fake, library).run_album_job(job("album", 400), no_report)
    files = audio_files(library)
    assert len(files) == 5
    for path in files:
        assert path.resolve().is_relative_to(library.resolve())
        assert all(len(part.encode()) <= 255 for part in path.parts)
        flac_ok(path)
    names = {p.name for p in files}
    # a title that sanitises to nothing ("..") is named by its track id
    assert "02 - 4002.flac" in names and "03 - Emoji 🎵🔥 Song.flac" in names
    assert "01 - What_Is_This_.flac" in names
    assert all(p.parent.name == "AC_DC_ .._.._etc_passwd 🎸" for p in files)
    # no component is hidden: the artist "../Hostile. " loses its leading dots
    assert files[0].parent.parent.name == "_Hostile"
    assert not any(part.startswith(".") for p in files
                   for part in p.relative_to(library).parts)


@pytest.mark.parametrize(("fault", "value", "want_range"), [
    ("cdn_cuts", 2, True), ("cdn_resets", 1, False), ("cdn_500", 1, False)])
async def test_cdn_faults_are_survived(session: aiohttp.ClientSession, fake: RunningFake,
                                       tmp_path: Path, fault: str, value: int,
                                       want_range: bool) -> None:
    fake.faults.cdn_cut_after = 100_000
    setattr(fake.faults, fault, value)
    pipe = make_pipeline(session, fake, tmp_path)
    try:
        result = await pipe.run_track_job(job("track", 1001), no_report)
    except UpstreamUnavailable:
        assert fault == "cdn_500"  # a 5xx from the CDN fails this attempt: the queue retries
        result = await pipe.run_track_job(job("track", 1001), no_report)
    flac_ok(Path(result["path"]))
    ranges = [r.range for r in fake.upstream.requests if r.path.startswith("/cdn/") and r.range]
    assert bool(ranges) == want_range
    assert not list((tmp_path / ".tidalq" / "staging").rglob("*.part*"))


async def test_stalled_cdn_body_times_out_and_resumes(session: aiohttp.ClientSession,
                                                      fake: RunningFake, tmp_path: Path) -> None:
    fake.faults.cdn_stall_s = 3
    pipe = make_pipeline(session, fake, tmp_path, read_timeout_s=0.5)
    result = await pipe.run_track_job(job("track", 1001), no_report)
    flac_ok(Path(result["path"]))
    ranges = [r.range for r in fake.upstream.requests if r.path.startswith("/cdn/") and r.range]
    assert ranges and ranges[0].startswith("bytes=")


async def test_cut_without_range_support_starts_over(session: aiohttp.ClientSession,
                                                     fake: RunningFake, tmp_path: Path) -> None:
    fake.faults.ranges, fake.faults.cdn_cut_after, fake.faults.cdn_cuts = False, 50_000, 1
    result = await make_pipeline(session, fake, tmp_path).run_track_job(job("track", 1001),
                                                                        no_report)
    flac_ok(Path(result["path"]))
    assert fake.upstream.count("/cdn/1001/track.flac") == 2


async def test_expired_cdn_url_asks_for_a_fresh_manifest(session: aiohttp.ClientSession,
                                                         fake: RunningFake,
                                                         tmp_path: Path) -> None:
    fake.faults.cdn_403 = 1
    result = await make_pipeline(session, fake, tmp_path).run_track_job(job("track", 1001),
                                                                        no_report)
    flac_ok(Path(result["path"]))
    assert fake.upstream.count("/track/") == 2


async def test_dash_segment_faults_are_retried_per_segment(session: aiohttp.ClientSession,
                                                           fake: RunningFake,
                                                           tmp_path: Path) -> None:
    await make_pipeline(session, fake, tmp_path).upstream.stream(6002, Quality.HI_RES_LOSSLESS)
    fake.faults.cdn_500 = 2
    result = await make_pipeline(session, fake, tmp_path).run_track_job(
        job("track", 6002, Quality.HI_RES_LOSSLESS), no_report)
    flac_ok(Path(result["path"]))


@pytest.mark.parametrize(("setup", "error"), [
    ({"preview": [1003]}, PreviewOnly), ({"cdn_corrupt": 1}, IntegrityFailed),
    ({"rate_limit": 5}, DownloadError)])
async def test_failures_leave_nothing_in_the_library(session: aiohttp.ClientSession,
                                                     fake: RunningFake, tmp_path: Path,
                                                     setup: dict[str, Any],
                                                     error: type[Exception]) -> None:
    for key, value in setup.items():
        setattr(fake.faults, key, value)
    with pytest.raises(error) as err:
        await make_pipeline(session, fake, tmp_path).run_track_job(job("track", 1003), no_report)
    assert audio_files(tmp_path) == []
    assert not list((tmp_path / ".tidalq" / "staging").rglob("*.*"))
    if error is DownloadError:
        assert err.value.code.value == "RATE_LIMITED"  # type: ignore[attr-defined]


async def test_album_with_a_failing_track_keeps_the_others_and_retries_only_it(
        session: aiohttp.ClientSession, fake: RunningFake, tmp_path: Path) -> None:
    fake.faults.preview = [1002]
    pipe = make_pipeline(session, fake, tmp_path)
    album = job("album", 100)
    with pytest.raises(AlbumFailed) as err:
        await pipe.run_album_job(album, no_report)
    tracks = err.value.tracks
    assert [t["status"] for t in tracks] == ["completed", "failed", "completed"]
    assert tracks[1]["failureCode"] == "PREVIEW_ONLY" and not err.value.retryable
    assert len(audio_files(tmp_path)) == 2
    fake.faults.preview = []
    album.track_progress = tracks
    fake.upstream.requests.clear()
    done = await pipe.run_album_job(album, no_report)
    assert [t["status"] for t in done] == ["completed"] * 3
    assert fake.upstream.count("/track/") == 1, "only the missing track is fetched"


async def test_cancel_stops_the_download_within_a_second(session: aiohttp.ClientSession,
                                                         fake: RunningFake,
                                                         tmp_path: Path) -> None:
    fake.faults.throttle_bps = 50_000
    pipe = make_pipeline(session, fake, tmp_path)
    task = asyncio.create_task(pipe.run_track_job(job("track", 1003), no_report))
    staging = tmp_path / ".tidalq" / "staging"
    for _ in range(200):
        if staging.exists() and list(staging.rglob("*.part*")):
            break
        await asyncio.sleep(0.02)
    assert list(staging.rglob("*.part*")), "the download started"
    started = asyncio.get_running_loop().time()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.get_running_loop().time() - started < 1.0
    assert not list(staging.rglob("*.*")) and audio_files(tmp_path) == []


async def test_cancel_during_the_decode_kills_the_decoder(session: aiohttp.ClientSession,
                                                        fake: RunningFake, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # AAC is decoded once it is down (a FLAC served whole: see test_checked_download)
    pid_file = slow_decoder(tmp_path, "ffmpeg", monkeypatch)
    library = tmp_path / "lib"
    task = asyncio.create_task(make_pipeline(session, fake, library).run_track_job(
        job("track", 1003, Quality.HIGH), no_report))
    pid = await started_pid(pid_file)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await decoder_ended(pid)
    assert audio_files(library) == []


async def test_disk_full_fails_with_disk_full(session: aiohttp.ClientSession,
                                              fake: RunningFake, tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {proc.stderr.strip()}")
    try:
        with pytest.raises(DiskFull):
            await make_pipeline(session, fake, mount).run_track_job(job("track", 1001),
                                                                    no_report)
        assert audio_files(mount) == []
        assert not list((mount / ".tidalq" / "staging").rglob("*.*"))
    finally:
        subprocess.run(["umount", str(mount)], check=False)


async def test_permission_denied(session: aiohttp.ClientSession, fake: RunningFake,
                                 tmp_path: Path) -> None:
    library = tmp_path / "ro"
    library.mkdir()
    os.chmod(library, 0o500)
    try:
        if os.access(library, os.W_OK):  # root ignores modes: use a read-only bind mount
            ro = subprocess.run(["mount", "--bind", "-o", "ro", str(library), str(library)],
                                capture_output=True)
            if ro.returncode != 0:
                pytest.skip("root ignores permissions and a read-only bind mount failed")
        with pytest.raises(DownloadError) as err:
            await make_pipeline(session, fake, library).run_track_job(job("track", 1001),
                                                                      no_report)
        assert err.value.code.value == "PERMISSION"  # type: ignore[attr-defined]
    finally:
        subprocess.run(["umount", str(library)], check=False, capture_output=True)
        os.chmod(library, 0o700)
