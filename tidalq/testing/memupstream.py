"""An :class:`~tidalq.upstream.base.Upstream` held in memory: the test seam of the
catalogue, as httpx's MockTransport is of its transport. A test fills it with albums and
the URL of each track's audio (any server on loopback, e.g. the fake's CDN); nothing of
it speaks hifi-api, so a pipeline that runs on it proves the seam is whole."""

from __future__ import annotations

from dataclasses import dataclass, field

from tidalq.errors import UpstreamNotFound
from tidalq.models import AlbumMeta, Collection, Discography, SearchHit, TrackMeta
from tidalq.terms import Quality
from tidalq.upstream.base import Lyrics
from tidalq.upstream.manifest import DirectStream, Served


@dataclass
class MemoryUpstream:
    """Albums and streams by id; ``calls`` records what was asked, in order."""

    albums: dict[int, AlbumMeta] = field(default_factory=dict)
    flac_urls: dict[int, str] = field(default_factory=dict)  # track id → its FLAC
    lyrics_by_track: dict[int, Lyrics] = field(default_factory=dict)
    cover_base: str = "http://127.0.0.1:9"
    favourites: dict[str, list[int | str]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def _track(self, track_id: int) -> TrackMeta:
        for album in self.albums.values():
            for track in album.tracks:
                if track.id == track_id:
                    return track
        raise UpstreamNotFound(f"track {track_id} is not in the catalogue")

    async def track_in_album(self, track_id: int) -> TrackMeta:
        self.calls.append(f"track {track_id}")
        return self._track(track_id)

    async def album(self, album_id: int) -> AlbumMeta:
        self.calls.append(f"album {album_id}")
        if album_id not in self.albums:
            raise UpstreamNotFound(f"album {album_id} is not in the catalogue")
        return self.albums[album_id]

    async def playlist(self, uuid: str) -> Collection:
        raise UpstreamNotFound(f"playlist {uuid} is not in the catalogue")

    async def mix(self, mix_id: str) -> Collection:
        raise UpstreamNotFound(f"mix {mix_id} is not in the catalogue")

    async def discography(self, artist_id: int, include: tuple[str, ...]) -> Discography:
        raise UpstreamNotFound(f"artist {artist_id} is not in the catalogue")

    async def stream(self, track_id: int, quality: Quality) -> Served:
        """Every track is served as 16-bit FLAC (LOSSLESS), whatever is asked."""
        self.calls.append(f"stream {track_id} {quality.value}")
        self._track(track_id)
        return Served(DirectStream(self.flac_urls[track_id], "flac", "audio/flac"),
                      Quality.LOSSLESS, 16, 44100, {})

    async def lyrics(self, track_id: int) -> Lyrics | None:
        return self.lyrics_by_track.get(track_id)

    def cover_url(self, cover: str, size: int = 1280) -> str:
        return f"{self.cover_base}/{cover}/{size}.jpg"

    def resting(self) -> dict[str, float]:
        return {}

    def problem(self) -> str | None:
        return None

    async def search(self, kind: str, query: str, limit: int) -> list[SearchHit]:
        self.calls.append(f"search {kind} {query}")
        return [SearchHit("album", a.id, a.title, a.artist, tracks=len(a.tracks))
                for a in self.albums.values()
                if kind == "album" and query.lower() in a.title.lower()][:limit]

    async def favorites(self, kind: str) -> list[int | str]:
        self.calls.append(f"favorites {kind}")
        return list(self.favourites.get(kind, []))
