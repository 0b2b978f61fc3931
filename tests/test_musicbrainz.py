"""MusicBrainz identifiers in the tags, against a fake MusicBrainz serving the real JSON
shapes: a given release, one found by barcode or by ISRC, strict matching that refuses,
MusicBrainz down, and its rules (one request a second, a User-Agent with a contact)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mutagen.flac import FLAC
from mutagen.mp4 import MP4

from tests.test_daemon import rpc, start, submit, wait_status
from tidalq.daemon import Daemon
from tidalq.testing.fakeapi import RunningFake
from tidalq.testing.fakemb import FakeMusicBrainz, mbid, start_fake_mb


@pytest.fixture
async def mb() -> AsyncIterator[tuple[FakeMusicBrainz, str]]:
    fake = FakeMusicBrainz()
    runner, url = await start_fake_mb(fake)
    yield fake, url
    await runner.cleanup()


async def run_job(tmp_path: Path, fake: RunningFake, mb_url: str, job: dict[str, Any],
                  **flags: Any) -> tuple[Daemon, dict[str, Any]]:
    d = await start(tmp_path, fake, musicbrainz_url=mb_url,
                    musicbrainz_contact="tests@tidalq.invalid", **flags)
    job_id = (await rpc(d.settings.socket, "queue.submit", {"job": job}))["result"]["jobIds"][0]
    return d, await wait_status(d.settings.socket, job_id, "completed", 60)


async def test_a_given_release_writes_picards_tags(tmp_path: Path, fake: RunningFake,
                                                  mb: tuple[FakeMusicBrainz, str]) -> None:
    fake_mb, url = mb
    d, done = await run_job(tmp_path, fake, url, {"type": "album", "albumId": 100,
                                                  "musicBrainzReleaseId": mbid("a", 100)})
    await d.shutdown()
    first = done["trackProgress"][0]
    tags = FLAC(first["path"])
    assert tags["MUSICBRAINZ_ALBUMID"] == [mbid("a", 100)]
    assert tags["MUSICBRAINZ_RELEASEGROUPID"] == [mbid("e", 100)]
    assert tags["MUSICBRAINZ_TRACKID"] == [mbid("b", first["trackId"])]
    assert tags["MUSICBRAINZ_RELEASETRACKID"] == [mbid("c", first["trackId"])]
    assert tags["MUSICBRAINZ_ARTISTID"] == [mbid("d", 77)]
    assert tags["MUSICBRAINZ_ALBUMARTISTID"] == [mbid("d", 77)]
    assert tags["RELEASETYPE"] == ["album"] and tags["RELEASECOUNTRY"] == ["XW"]
    assert tags["ORIGINALDATE"] == ["2024-05-17"]
    assert "given" in done["job"]["musicBrainzMatch"] and "3 of 3" in done["job"][
        "musicBrainzMatch"]
    assert all(ua.startswith("tidalq/") and "tests@tidalq.invalid" in ua
               for ua in fake_mb.user_agents)


async def test_found_by_barcode_and_by_isrc_in_flac_and_m4a(
        tmp_path: Path, fake: RunningFake, mb: tuple[FakeMusicBrainz, str]) -> None:
    fake_mb, url = mb
    d = await start(tmp_path, fake, musicbrainz_url=url, musicbrainz="auto")
    try:
        sock = d.settings.socket
        by_barcode = await submit(sock, {
            "type": "album", "albumId": 100, "quality": "HIGH"})
        by_isrc = await submit(sock, {
            "type": "album", "albumId": 200})
        aac = await wait_status(sock, by_barcode, "completed", 60)
        flac = await wait_status(sock, by_isrc, "completed", 60)
    finally:
        await d.shutdown()
    assert "(barcode)" in aac["job"]["musicBrainzMatch"]
    assert "(isrc)" in flac["job"]["musicBrainzMatch"] and "4 of 4" in flac["job"][
        "musicBrainzMatch"]
    m4a = MP4(aac["trackProgress"][0]["path"])
    assert m4a["----:com.apple.iTunes:MusicBrainz Album Id"][0].decode() == mbid("a", 100)
    assert m4a["----:com.apple.iTunes:MusicBrainz Track Id"][0].decode() == mbid("b", 1001)
    assert m4a["----:com.apple.iTunes:MusicBrainz Release Track Id"][0].decode() == \
        mbid("c", 1001)
    side_two = next(t for t in flac["trackProgress"] if t["discNumber"] == 2)
    assert FLAC(side_two["path"])["MUSICBRAINZ_TRACKID"] == [mbid("b", side_two["trackId"])]
    gaps = [b[0] - a[0] for a, b in zip(fake_mb.requests, fake_mb.requests[1:], strict=False)]
    assert gaps and min(gaps) >= 0.95, "at most one request a second"


async def test_strict_matching_writes_nothing_it_is_not_sure_of(
        tmp_path: Path, fake: RunningFake, mb: tuple[FakeMusicBrainz, str]) -> None:
    _, url = mb
    job = {"type": "album", "albumId": 100, "experimentalMusicBrainzTagging": True,
           "strictMusicBrainzMatching": True}
    d, strict = await run_job(tmp_path / "strict", fake, url, job)
    await d.shutdown()
    assert "no confident MusicBrainz match" in strict["job"]["musicBrainzMatch"]
    assert "track 1-3 (Closing): no ISRC on both sides" in strict["job"]["musicBrainzMatch"]
    assert "MUSICBRAINZ_ALBUMID" not in FLAC(strict["trackProgress"][0]["path"])
    d, loose = await run_job(tmp_path / "loose", fake, url,
                             {**job, "strictMusicBrainzMatching": False})
    await d.shutdown()
    assert FLAC(loose["trackProgress"][0]["path"])["MUSICBRAINZ_ALBUMID"] == [mbid("a", 100)]


@pytest.mark.parametrize("job", [
    {"type": "album", "albumId": 110, "experimentalMusicBrainzTagging": True},
    {"type": "album", "albumId": 110, "musicBrainzReleaseId": mbid("a", 110)},
    {"type": "track", "trackId": 1101, "experimentalMusicBrainzTagging": True}],
    ids=["found", "given", "track"])
async def test_a_release_with_another_track_count_is_never_written(
        tmp_path: Path, fake: RunningFake, mb: tuple[FakeMusicBrainz, str],
        job: dict[str, Any]) -> None:
    """Album 110 has 3 tracks on TIDAL, its MusicBrainz release 4: another edition, not
    written even by a loose match, and the job says why."""
    _, url = mb
    d, done = await run_job(tmp_path, fake, url, job)
    await d.shutdown()
    said = done["job"]["musicBrainzMatch"]
    assert "has 4 tracks, the album 3: another edition" in said, said
    paths = [t["path"] for t in done.get("trackProgress") or []] or [done["result"]["path"]]
    for path in paths:
        assert not [k for k in FLAC(path) if k[0].startswith("MUSICBRAINZ")], path


async def test_musicbrainz_down_never_fails_a_download(
        tmp_path: Path, fake: RunningFake, mb: tuple[FakeMusicBrainz, str]) -> None:
    fake_mb, url = mb
    fake_mb.down = True
    d, done = await run_job(tmp_path, fake, url, {"type": "track", "trackId": 1001,
                                                  "experimentalMusicBrainzTagging": True})
    await d.shutdown()
    assert "503" in done["job"]["musicBrainzMatch"]
    assert "tagged without" in done["job"]["musicBrainzMatch"]
    assert "MUSICBRAINZ_TRACKID" not in FLAC(done["result"]["path"])
