"""The fake upstream's catalogue: albums and tracks shaped like TIDAL's JSON.

Ids: album 100 (one disc, 3 tracks, one with a version, lyrics), 110 (another edition of
100: the same artist, album and track titles, other ids, as TIDAL lists explicit and clean
editions), 200 (two discs and a video), 300 (210 tracks: longer than two pages), 400
(hostile titles), 410 (titles with lone surrogates, which JSON can carry but UTF-8
cannot), 600 (hi-res), 900 (the benchmark album: 12 tracks whose size is set by
``track_bytes``), track 5001 (preview only). Every track lasts 4 s unless sized for the
benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ARTIST = {"id": 77, "name": "Test Artist", "type": "MAIN"}
GUEST = {"id": 78, "name": "Guest Singer", "type": "FEATURED"}
DURATION_S = 4


@dataclass
class FakeTrack:
    id: int
    title: str
    album_id: int
    number: int
    disc: int = 1
    version: str | None = None
    hires: bool = False
    preview: bool = False
    lyrics: bool = False
    size_bytes: int | None = None  # set for benchmark tracks: FLAC of about this size
    artists: list[dict[str, Any]] = field(default_factory=lambda: [ARTIST])


@dataclass
class FakeAlbum:
    id: int
    title: str
    tracks: list[FakeTrack]
    volumes: int = 1
    videos: int = 0
    artist: dict[str, Any] = field(default_factory=lambda: dict(ARTIST))

    @property
    def cover(self) -> str:
        return f"{self.id:08x}-aaaa-bbbb-cccc-{self.id:012x}"


class Catalog:
    def __init__(self, track_bytes: int | None = None) -> None:
        self.albums: dict[int, FakeAlbum] = {}
        self.tracks: dict[int, FakeTrack] = {}
        self._build(track_bytes)

    def _add(self, album: FakeAlbum) -> None:
        self.albums[album.id] = album
        for t in album.tracks:
            self.tracks[t.id] = t

    def _build(self, track_bytes: int | None) -> None:
        self._add(FakeAlbum(100, "First Light", [
            FakeTrack(1001, "Opening", 100, 1, lyrics=True),
            FakeTrack(1002, "Second Song", 100, 2, version="Live",
                      artists=[ARTIST, GUEST]),
            FakeTrack(1003, "Closing", 100, 3),
        ]))
        self._add(FakeAlbum(110, "First Light", [
            FakeTrack(1101, "Opening", 110, 1),
            FakeTrack(1102, "Second Song", 110, 2, version="Live", artists=[ARTIST, GUEST]),
            FakeTrack(1103, "Closing", 110, 3),
        ]))
        self._add(FakeAlbum(200, "Double Vision", [
            FakeTrack(2001 + i, f"Side {d} Song {n}", 200, n, disc=d)
            for i, (d, n) in enumerate([(1, 1), (1, 2), (2, 1), (2, 2)])
        ], volumes=2, videos=1))
        self._add(FakeAlbum(300, "Very Long Album", [
            FakeTrack(3001 + i, f"Part {i + 1}", 300, i + 1) for i in range(210)]))
        self._add(FakeAlbum(400, "AC/DC: ../../etc/passwd 🎸", [
            FakeTrack(4001, "What/Is\\This?", 400, 1),
            FakeTrack(4002, "..", 400, 2),
            FakeTrack(4003, "Emoji 🎵🔥 Song", 400, 3),
            FakeTrack(4004, "Ä" * 150, 400, 4),  # 300 bytes of UTF-8
            FakeTrack(4005, "CON", 400, 5),
        ], artist={"id": 79, "name": "../Hostile. ", "type": "MAIN"}))
        self._add(FakeAlbum(410, "Lone \ud800 Surrogate", [  # not valid Unicode: repaired
            FakeTrack(4101, "Bad \udc00 Text", 410, 1)]))
        self._add(FakeAlbum(600, "High Resolution", [
            FakeTrack(6001, "Hi-Res One", 600, 1, hires=True),
            FakeTrack(6002, "Hi-Res Two", 600, 2, hires=True),
        ]))
        self._add(FakeAlbum(900, "Benchmark Album", [
            FakeTrack(9001 + i, f"Bench {i + 1}", 900, i + 1, size_bytes=track_bytes)
            for i in range(12)]))
        self._add(FakeAlbum(500, "Preview Single", [
            FakeTrack(5001, "Only A Preview", 500, 1, preview=True)]))

    # -- JSON shapes ------------------------------------------------------------------------
    def album_json(self, album: FakeAlbum) -> dict[str, Any]:
        return {
            "id": album.id, "title": album.title, "cover": album.cover,
            "releaseDate": "2024-05-17", "numberOfTracks": len(album.tracks),
            "numberOfVolumes": album.volumes, "numberOfVideos": album.videos,
            "upc": f"00{album.id:010d}", "copyright": "(P) 2024 Fake Records",
            "artist": album.artist, "artists": [album.artist],
        }

    def track_json(self, track: FakeTrack, duration_s: float | None = None) -> dict[str, Any]:
        album = self.albums[track.album_id]
        return {
            "id": track.id, "title": track.title, "version": track.version,
            "duration": round(duration_s if duration_s is not None else DURATION_S),
            "trackNumber": track.number, "volumeNumber": track.disc,
            "isrc": f"USFAKE{track.id:06d}", "copyright": "(P) 2024 Fake Records",
            "explicit": track.id % 2 == 0,
            "audioQuality": "HI_RES_LOSSLESS" if track.hires else "LOSSLESS",
            "replayGain": -7.5, "peak": 0.98, "streamStartDate": "2024-05-17T00:00:00.000+0000",
            "artist": track.artists[0], "artists": track.artists,
            "album": {"id": album.id, "title": album.title, "cover": album.cover,
                      "releaseDate": "2024-05-17"},
        }

    def album_items(self, album: FakeAlbum, durations: dict[int, float]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = [
            {"type": "track", "item": self.track_json(t, durations.get(t.id))}
            for t in album.tracks]
        for v in range(album.videos):
            items.insert(1, {"type": "video", "item": {"id": 99000 + v, "title": "A Video"}})
        return items
