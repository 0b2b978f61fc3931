"""Playlists, mixes and discographies against the fake upstream's collections: paging past
a short page cap, a duplicate, a video, a preview-only and a vanished item, tracks shared
with albums, and an artist whose releases span pages and all four kinds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_daemon import rpc, start, wait_status
from tidalq.daemon import Daemon
from tidalq.testing.catalog import MIX, PAGING_ARTIST, PLAYLIST
from tidalq.testing.fakeapi import RunningFake


@pytest.fixture
async def daemon(tmp_path: Path, fake: RunningFake) -> AsyncIterator[Daemon]:
    d = await start(tmp_path, fake)
    yield d
    await d.shutdown()


async def submit(d: Daemon, job: dict[str, Any]) -> str:
    answer = await rpc(d.settings.socket, "queue.submit", {"job": job})
    return str(answer["result"]["jobIds"][0])


async def test_a_playlist_lands_at_album_paths_with_its_m3u8(daemon: Daemon,
                                                            fake: RunningFake) -> None:
    job_id = await submit(daemon, {"type": "playlist", "playlistId": PLAYLIST})
    done = await wait_status(daemon.settings.socket, job_id, "completed", 60)
    entries = done["trackProgress"]
    assert [e["trackId"] for e in entries] == [1001, 2001, 1003, 2001, 5001, 7777, 6001, 1002]
    codes = {e["trackId"]: e.get("failureCode") for e in entries}
    assert codes[5001] == "PREVIEW_ONLY" and codes[7777] == "NOT_FOUND"
    assert done["playlistPath"] == "Playlists/Road Trip _ Mix.m3u8"
    assert done["job"]["albumTitle"] == "Road Trip / Mix"
    library = daemon.settings.download_dir
    lines = (library / done["playlistPath"]).read_text().splitlines()
    assert lines[0] == "#EXTM3U" and len(lines) == 1 + 2 * 6
    assert lines[1] == "#EXTINF:4,Test Artist - Opening"
    assert lines[2] == "../Test Artist/First Light/01 - Opening.flac"
    assert lines[4] == lines[8], "a track listed twice is listed twice"
    for rel in lines[2::2]:
        assert (library / "Playlists" / rel).resolve().is_file()
    cdn = [r.path for r in fake.upstream.requests if r.path.startswith("/cdn/")]
    assert len([p for p in cdn if p.startswith("/cdn/2001/")]) == 1, "fetched once"
    pages = [r for r in fake.upstream.requests if r.path == "/playlist/"]
    assert len(pages) >= 3, "read past the fake's page cap of 4"
    assert not any(r.query.get("id") == "99001" for r in fake.upstream.requests), \
        "the video is never requested"
    # the album the playlist shares tracks with downloads nothing now
    before = fake.upstream.count("/cdn/")
    album = await submit(daemon, {"type": "album", "albumId": 100})
    await wait_status(daemon.settings.socket, album, "completed", 30)
    assert fake.upstream.count("/cdn/") == before


async def test_a_short_page_is_an_error_not_a_shorter_playlist(daemon: Daemon,
                                                               fake: RunningFake) -> None:
    fake.faults.playlist_short = 1
    job_id = await submit(daemon, {"type": "playlist", "playlistId": PLAYLIST})

    async def scheduled() -> bool:
        found = (await rpc(daemon.settings.socket, "queue.get", {"id": job_id}))["result"]
        return found["job"]["failureCode"] == "UPSTREAM_UNAVAILABLE"

    from tests.helpers import await_until

    await await_until(scheduled, 20, "the incomplete playlist refused")
    found = (await rpc(daemon.settings.socket, "queue.get", {"id": job_id}))["result"]["job"]
    assert "incomplete" in found["error"]
    assert not (daemon.settings.download_dir / "Playlists").exists()


async def test_unknown_collections_fail_at_once(daemon: Daemon) -> None:
    gone = await submit(daemon, {"type": "playlist",
                                 "playlistId": "00000000-0000-4000-8000-000000000000"})
    failed = await wait_status(daemon.settings.socket, gone, "failed", 20)
    assert failed["failureCode"] == "NOT_FOUND" and failed["attempts"] == 1
    assert "does not exist on TIDAL" in failed["error"]
    artist = await submit(daemon, {"type": "artist", "artistId": 424242})
    failed = await wait_status(daemon.settings.socket, artist, "failed", 20)
    assert failed["failureCode"] == "NOT_FOUND"


async def test_a_mix_is_a_playlist_too(daemon: Daemon) -> None:
    job_id = await submit(daemon, {"type": "mix", "mixId": MIX})
    done = await wait_status(daemon.settings.socket, job_id, "completed", 40)
    assert [e["trackId"] for e in done["trackProgress"]] == [2002, 1001, 6002]
    assert done["playlistPath"] == "Playlists/My Mix.m3u8"


async def test_an_artist_expands_into_album_jobs_and_ends_when_they_end(
        daemon: Daemon, fake: RunningFake) -> None:
    sock = daemon.settings.socket
    job_id = await submit(daemon, {"type": "artist", "artistId": PAGING_ARTIST,
                                   "include": "all"})
    done = await wait_status(sock, job_id, "completed", 90)
    kinds = sorted(e["kind"] for e in done["releases"])
    assert kinds == sorted(["albums"] * 5 + ["eps"] * 2 + ["singles"] * 2
                           + ["compilations"] * 2 + ["appears-on"])
    assert len(done["children"]) == 12 and done["result"]["completed"] == 12
    assert done["result"]["complete"] is True
    for child in done["children"]:
        job = (await rpc(sock, "queue.get", {"id": child}))["result"]["job"]
        assert job["status"] == "completed" and job["job"]["type"] == "album"
    same = sorted(p.parent.name for p in daemon.settings.download_dir.rglob("*.flac")
                  if "Same Title" in p.parent.name)
    assert same == ["Same Title", "Same Title [701]"], "same-titled releases stay apart"
    pages = [r for r in fake.upstream.requests if r.path == "/artist/" and "filter" in r.query]
    assert len(pages) >= 4, "listings read past the page cap"
    # again, with the default kinds: nothing downloaded twice, the album jobs reused
    before = fake.upstream.count("/cdn/")
    again = await submit(daemon, {"type": "artist", "artistId": PAGING_ARTIST})
    second = await wait_status(sock, again, "completed", 60)
    assert len(second["children"]) == 9 and fake.upstream.count("/cdn/") == before
    # the second edition alone, no other album running: it still knows its folder
    alone = await submit(daemon, {"type": "album", "albumId": 701})
    await wait_status(sock, alone, "completed", 30)
    assert fake.upstream.count("/cdn/") == before
    assert not (daemon.settings.download_dir / "Paging Artist" / "Same Title"
                / "01 - Song of 701.flac").exists()


async def test_a_plain_listing_says_the_discography_may_be_incomplete(
        daemon: Daemon, fake: RunningFake) -> None:
    fake.faults.plain_artist = True
    job_id = await submit(daemon, {"type": "artist", "artistId": PAGING_ARTIST})
    done = await wait_status(daemon.settings.socket, job_id, "completed", 60)
    assert done["result"]["complete"] is False and "incomplete" in done["result"]["warning"]
    assert len(done["children"]) == 9


def test_links_and_type_words_for_every_kind() -> None:
    import click

    from tidalq.cli import parse_targets

    uuid = PLAYLIST
    assert parse_targets((f"https://tidal.com/browse/playlist/{uuid}",)) == [("playlist", uuid)]
    assert parse_targets((f"tidal.com/playlist/{uuid.upper()}",)) == [("playlist", uuid)]
    assert parse_targets((f"https://listen.tidal.com/mix/{MIX}",)) == [("mix", MIX)]
    assert parse_targets(("https://tidal.com/browse/artist/80",)) == [("artist", 80)]
    assert parse_targets(("artist", "80", "77")) == [("artist", 80), ("artist", 77)]
    assert parse_targets(("playlist", uuid)) == [("playlist", uuid)]
    with pytest.raises(click.UsageError, match="is a playlist link, not a album"):
        parse_targets(("album", f"https://tidal.com/browse/playlist/{uuid}"))
    with pytest.raises(click.UsageError, match="say what it is"):
        parse_targets(("80",))
