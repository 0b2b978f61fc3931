"""The fake upstream's catalogue: albums and tracks shaped like TIDAL's JSON.

Ids: album 100 (one disc, 3 tracks, one with a version, lyrics), 110 (another edition of
100: the same artist, album and track titles, other ids, as TIDAL lists explicit and clean
editions), 200 (two discs and a video), 300 (210 tracks: longer than two pages), 400
(hostile titles), 410 (titles with lone surrogates, which JSON can carry but UTF-8
cannot), 420 (album, track and playlist names of about 300 bytes of mixed scripts: past
the filesystem's 255), 600 (hi-res), 900 (the benchmark album: 12 tracks whose size is set by
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
    kind: str = "ALBUM"  # TIDAL's type: ALBUM, EP or SINGLE

    @property
    def cover(self) -> str:
        return f"{self.id:08x}-aaaa-bbbb-cccc-{self.id:012x}"


@dataclass
class FakePlaylist:
    """Items in order: a track id, or ("video", id). Ids not in the catalogue vanished."""

    uuid: str
    title: str
    items: list[int | tuple[str, int]]


@dataclass
class FakeArtist:
    """Releases per TIDAL listing: ALBUMS, EPSANDSINGLES, COMPILATIONS."""

    id: int
    name: str
    listings: dict[str, list[int]]


VARIOUS = {"id": 2935, "name": "Various Artists", "type": "MAIN"}
OTHER = {"id": 81, "name": "Someone Else", "type": "MAIN"}
PLAYLIST = "1a2b3c4d-0000-4000-8000-00000000a001"
LONG_NAMES_PLAYLIST = "1a2b3c4d-0000-4000-8000-00000000a420"
LONG_NAME = "Lång ä日🎵ø語 " * 14 + "end"  # 297 bytes of UTF-8 in five scripts
BENCH_PLAYLIST = "1a2b3c4d-0000-4000-8000-00000000b500"
BENCH_ARTIST = 90  # the benchmark's five 100-track albums, as an artist's releases
MIX = "0123456789abcdef0123456789abcd"
PAGING_ARTIST = 80


class Catalog:
    def __init__(self, track_bytes: int | None = None) -> None:
        self.albums: dict[int, FakeAlbum] = {}
        self.tracks: dict[int, FakeTrack] = {}
        self.playlists: dict[str, FakePlaylist] = {}
        self.mixes: dict[str, FakePlaylist] = {}
        self.artists: dict[int, FakeArtist] = {}
        self._build(track_bytes)
        self._build_collections()

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
        self._add(FakeAlbum(420, LONG_NAME, [
            FakeTrack(4201, LONG_NAME, 420, 1, lyrics=True),
            FakeTrack(4202, LONG_NAME, 420, 2, version="Extended Mix"),
            FakeTrack(4203, "ø" * 127 + "語", 420, 3),  # a cut lands inside a character
        ], artist={"id": 82, "name": LONG_NAME[:120], "type": "MAIN"}))
        self._add(FakeAlbum(600, "High Resolution", [
            FakeTrack(6001, "Hi-Res One", 600, 1, hires=True),
            FakeTrack(6002, "Hi-Res Two", 600, 2, hires=True),
        ]))
        self._add(FakeAlbum(900, "Benchmark Album", [
            FakeTrack(9001 + i, f"Bench {i + 1}", 900, i + 1, size_bytes=track_bytes)
            for i in range(12)]))
        self._add(FakeAlbum(500, "Preview Single", [
            FakeTrack(5001, "Only A Preview", 500, 1, preview=True)]))

    def _build_collections(self) -> None:
        """Playlists, a mix and artists (see upstream.md, "Collections")."""
        # a playlist: tracks shared with albums, a duplicate, a video, a preview-only
        # track, a vanished one (7777), across pages of the fake's short page cap
        self.playlists[PLAYLIST] = FakePlaylist(PLAYLIST, "Road Trip / Mix", [
            1001, 2001, ("video", 99001), 1003, 2001, 5001, 7777, 6001, 1002])
        # the benchmark: 500 short tracks on five albums, in an order that mixes them
        bench = [FakeAlbum(950 + a, f"Bench Playlist Album {a + 1}", [
            FakeTrack(20001 + a * 100 + i, f"Short {a * 100 + i + 1}", 950 + a, i + 1)
            for i in range(100)]) for a in range(5)]
        for album in bench:
            self._add(album)
        order: list[int | tuple[str, int]] = [20001 + (i * 7919) % 500 for i in range(500)]
        self.playlists[BENCH_PLAYLIST] = FakePlaylist(BENCH_PLAYLIST, "Five Hundred", order)
        self.mixes[MIX] = FakePlaylist(MIX, "My Mix", [2002, 1001, 6002])
        self.playlists[LONG_NAMES_PLAYLIST] = FakePlaylist(
            LONG_NAMES_PLAYLIST, LONG_NAME, [4201, 4202, 4203, 1001])
        # an artist whose releases span several pages and all four kinds
        paging = {"id": PAGING_ARTIST, "name": "Paging Artist", "type": "MAIN"}
        releases: dict[str, list[int]] = {"ALBUMS": [], "EPSANDSINGLES": [],
                                          "COMPILATIONS": []}
        for n, (kind, listing, owner) in enumerate(
                [("ALBUM", "ALBUMS", paging)] * 5 + [("EP", "EPSANDSINGLES", paging)] * 2
                + [("SINGLE", "EPSANDSINGLES", paging)] * 2
                + [("ALBUM", "COMPILATIONS", VARIOUS)] * 2 + [("ALBUM", "COMPILATIONS", OTHER)]):
            album_id = 700 + n
            title = "Same Title" if n in (0, 1) else f"{kind.title()} Release {n}"
            self._add(FakeAlbum(album_id, title, [
                FakeTrack(70001 + n, f"Song of {album_id}", album_id, 1,
                          artists=[paging])], artist=dict(owner), kind=kind))
            releases[listing].append(album_id)
        self.artists[PAGING_ARTIST] = FakeArtist(PAGING_ARTIST, "Paging Artist", releases)
        self.artists[BENCH_ARTIST] = FakeArtist(BENCH_ARTIST, "Bench Artist", {
            "ALBUMS": [a.id for a in bench], "EPSANDSINGLES": [], "COMPILATIONS": []})
        self.artists[77] = FakeArtist(77, "Test Artist", {
            "ALBUMS": [100, 110, 200], "EPSANDSINGLES": [], "COMPILATIONS": []})

    # -- changes while a daemon runs (follow tests) -----------------------------------------
    def new_release(self, artist_id: int, listing: str, album_id: int, kind: str = "EP") -> None:
        """An artist releases something new: one track, listed in ``listing``."""
        artist = self.artists[artist_id]
        owner = {"id": artist.id, "name": artist.name, "type": "MAIN"}
        self._add(FakeAlbum(album_id, f"New Release {album_id}", [
            FakeTrack(album_id * 100 + 1, f"New Song {album_id}", album_id, 1,
                      artists=[owner])], artist=owner, kind=kind))
        artist.listings[listing].insert(0, album_id)

    # -- search ------------------------------------------------------------------------------
    def search(self, kind: str, query: str) -> list[dict[str, Any]]:
        """What TIDAL would find for ``query`` (words in a title or a name), as JSON."""
        words = query.lower().split()

        def found(*texts: object) -> bool:
            text = " ".join(str(t) for t in texts).lower()
            return bool(words) and all(w in text for w in words)

        if kind == "track":
            return [self.track_json(t) for t in self.tracks.values()
                    if found(t.title, t.artists[0]["name"])]
        if kind == "album":
            return [self.album_json(a) for a in self.albums.values()
                    if found(a.title, a.artist["name"])]
        if kind == "artist":
            return [{"id": a.id, "name": a.name, "picture": None, "type": "ARTIST"}
                    for a in self.artists.values() if found(a.name)]
        return [{"uuid": p.uuid, "title": p.title, "numberOfTracks": len(p.items),
                 "squareImage": None, "type": "USER"}
                for p in self.playlists.values() if found(p.title)]

    # -- JSON shapes ------------------------------------------------------------------------
    def album_json(self, album: FakeAlbum) -> dict[str, Any]:
        return {
            "id": album.id, "title": album.title, "cover": album.cover,
            "releaseDate": "2024-05-17", "numberOfTracks": len(album.tracks),
            "numberOfVolumes": album.volumes, "numberOfVideos": album.videos,
            "upc": f"00{album.id:010d}", "copyright": "(P) 2024 Fake Records",
            "artist": album.artist, "artists": [album.artist], "type": album.kind,
            "audioQuality": "LOSSLESS", "explicit": album.id % 2 == 1,
            "mediaMetadata": {"tags": ["LOSSLESS", "HIRES_LOSSLESS"]
                              if any(t.hires for t in album.tracks) else ["LOSSLESS"]},
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
