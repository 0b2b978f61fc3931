"""The Upstream seam: a catalogue that is not hifi-api drives the whole pipeline, through
the interface only (tidalq.testing.memupstream, the in-memory implementation). Its audio
is served by the fake's CDN on loopback; nothing it answers is in hifi-api's shapes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import aiohttp
from mutagen.flac import FLAC

from tests.test_pipeline import audio_files, job, no_report
from tidalq.config import load_settings
from tidalq.media.fetch import Fetcher
from tidalq.models import AlbumMeta, Artist, TrackMeta
from tidalq.pipeline import Pipeline
from tidalq.terms import Quality
from tidalq.testing.fakeapi import RunningFake
from tidalq.testing.memupstream import MemoryUpstream
from tidalq.upstream.base import Lyrics, Upstream
from tidalq.upstream.factory import make_upstream, missing


def seam_album(album_id: int = 55) -> AlbumMeta:
    artist = Artist(501, "Memory Artist")
    tracks = tuple(TrackMeta(id=55_000 + n, title=title, version=None, duration_s=4,
                             track_number=n, disc_number=1, artists=(artist,),
                             album_id=album_id, album_title="Seam Album",
                             album_artist=artist.name, track_total=2, disc_total=1,
                             isrc=f"XXMEM00000{n}")
                   for n, title in ((1, "One"), (2, "Two")))
    return AlbumMeta(album_id, "Seam Album", artist.name, None, "2026-01-01", 2, 1, None,
                     None, tracks)


async def test_an_album_from_a_catalogue_of_another_kind(
        session: aiohttp.ClientSession, fake: RunningFake, tmp_path: Path) -> None:
    catalogue = MemoryUpstream(
        albums={55: seam_album()},
        flac_urls={55_001: f"{fake.url}/cdn/1001/track.flac?token=sig1",
                   55_002: f"{fake.url}/cdn/1002/track.flac?token=sig1"},
        lyrics_by_track={55_001: Lyrics("la la", "[00:01.00]la la")})
    upstream: Upstream = catalogue  # it is one, as mypy checks
    library = tmp_path / "lib"
    settings = load_settings({"download_dir": str(library), "lyrics": "on"}, env={})
    assert missing(settings) is not None, "no hifi-api servers: the factory says so"
    pipeline = Pipeline(settings, upstream, Fetcher(session))
    entries = await pipeline.run_album_job(job("album", 55), no_report)
    assert [e["status"] for e in entries] == ["completed", "completed"]
    files = audio_files(library)
    assert [p.relative_to(library).as_posix() for p in files] == [
        "Memory Artist/Seam Album/01 - One.flac", "Memory Artist/Seam Album/02 - Two.flac"]
    for path, n in zip(files, (1, 2), strict=True):
        tags = FLAC(path)
        assert tags["TIDAL_TRACK_ID"] == [str(55_000 + n)] and tags["ISRC"] == [f"XXMEM00000{n}"]
        subprocess.run(["flac", "-t", "-s", str(path)], check=True)
    assert files[0].with_suffix(".lrc").read_text() == "[00:01.00]la la\n"
    assert catalogue.calls[0] == "album 55" and "stream 55002 LOSSLESS" in catalogue.calls


async def test_the_factory_makes_the_configured_catalogue(
        session: aiohttp.ClientSession, fake: RunningFake) -> None:
    settings = load_settings({"api_urls": [fake.url], "cover_url": fake.url}, env={})
    assert missing(settings) is None
    upstream = make_upstream(session, settings)
    album = await upstream.album(100)
    assert [t.title for t in album.tracks] == ["Opening", "Second Song", "Closing"]
    served = await upstream.stream(1001, Quality.LOSSLESS)
    assert served.quality.value == "LOSSLESS"
