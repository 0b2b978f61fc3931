"""TIDAL's v1 shapes of tracks, albums and lyrics, as TIDAL answers them and hifi-api servers
pass them through: pure parsing, shared by every catalogue (no I/O here).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from tidalq.errors import UpstreamUnavailable
from tidalq.models import AlbumMeta, Artist, SearchHit, TrackMeta
from tidalq.upstream.base import Lyrics


def parse_lyrics(body: Any) -> Lyrics | None:
    """``{lyrics, subtitles}`` (also inside a list) -> Lyrics, or None when there are none."""
    if isinstance(body, list):
        body = next((b for b in body if isinstance(b, dict)), {})
    if not isinstance(body, dict):
        return None
    text, synced = body.get("lyrics"), body.get("subtitles")
    if not (isinstance(text, str) and text) and not (isinstance(synced, str) and synced):
        return None
    return Lyrics(text if isinstance(text, str) and text else None,
                  synced if isinstance(synced, str) and synced else None)


def tracks_of(items: list[Any], album: dict[str, Any]) -> list[TrackMeta]:
    out = []
    for entry in items:
        if isinstance(entry, dict) and entry.get("type", "track") == "track":
            raw = entry.get("item", entry)
            if isinstance(raw, dict):
                out.append(parse_track(raw, album))
    return out


def numbering(tracks: list[TrackMeta]) -> set[tuple[int, int]]:
    return {(t.disc_number, t.track_number) for t in tracks}


def dedupe(tracks: list[TrackMeta]) -> list[TrackMeta]:
    seen: set[int] = set()
    return [t for t in tracks if not (t.id in seen or seen.add(t.id))]  # type: ignore[func-returns-value]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _artists(raw: dict[str, Any]) -> tuple[Artist, ...]:
    artists = [Artist(a.get("id"), str(a["name"]), a.get("type", "MAIN") == "MAIN")
               for a in raw.get("artists") or [] if isinstance(a, dict) and a.get("name")]
    if not artists and isinstance(raw.get("artist"), dict) and raw["artist"].get("name"):
        artists = [Artist(raw["artist"].get("id"), str(raw["artist"]["name"]))]
    return tuple(artists)


def parse_track(raw: Any, album: dict[str, Any] | None = None) -> TrackMeta:
    """A track object (``/info/`` or an album item) -> TrackMeta."""
    if isinstance(raw, list):
        raw = next((r for r in raw if isinstance(r, dict) and "title" in r), None)
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), int) or not raw.get("title"):
        raise UpstreamUnavailable("track answer has an unknown shape")
    alb = {**(raw.get("album") or {}), **(album or {})}
    artists = _artists(raw)
    album_artist = alb.get("artist", {}).get("name") if isinstance(alb.get("artist"), dict) \
        else None
    return TrackMeta(
        id=raw["id"], title=str(raw["title"]), version=_text(raw.get("version")),
        duration_s=float(raw.get("duration") or 0),
        track_number=int(raw.get("trackNumber") or 1),
        disc_number=int(raw.get("volumeNumber") or 1), artists=artists,
        album_id=alb.get("id"), album_title=str(alb.get("title") or "Unknown Album"),
        album_artist=album_artist or (artists[0].name if artists else "Unknown Artist"),
        album_cover=_text(alb.get("cover")), release_date=_text(alb.get("releaseDate")),
        isrc=_text(raw.get("isrc")), copyright=_text(raw.get("copyright")),
        explicit=bool(raw.get("explicit")), upc=_text(alb.get("upc")),
        track_total=alb.get("numberOfTracks"), disc_total=alb.get("numberOfVolumes"),
        audio_quality=_text(raw.get("audioQuality")),
        replay_gain=raw.get("replayGain") if isinstance(raw.get("replayGain"), float) else None,
        peak=raw.get("peak") if isinstance(raw.get("peak"), float) else None,
    )


def per_disc_totals(tracks: list[TrackMeta], volumes: int) -> list[TrackMeta]:
    """TRACKTOTAL is the track's own disc's count (as Picard and beets write it), and
    ``track_width`` pads numbers to the largest on that disc."""
    on_disc = Counter(t.disc_number for t in tracks)
    largest: dict[int, int] = {}
    for t in tracks:
        largest[t.disc_number] = max(largest.get(t.disc_number, 0), t.track_number)
    discs = max([volumes, *on_disc]) if on_disc else volumes
    return [replace(t, track_total=on_disc[t.disc_number], disc_total=discs,
                    track_width=max(2, len(str(largest[t.disc_number])))) for t in tracks]


def parse_album(raw: dict[str, Any], tracks: list[TrackMeta]) -> AlbumMeta:
    artist = raw.get("artist", {}).get("name") if isinstance(raw.get("artist"), dict) else None
    tracks = sorted(tracks, key=lambda t: (t.disc_number, t.track_number))
    tracks = per_disc_totals(tracks, int(raw.get("numberOfVolumes") or 1))
    return AlbumMeta(
        id=int(raw["id"]), title=str(raw.get("title") or "Unknown Album"),
        artist=artist or (tracks[0].album_artist if tracks else "Unknown Artist"),
        cover=_text(raw.get("cover")), release_date=_text(raw.get("releaseDate")),
        number_of_tracks=int(raw.get("numberOfTracks") or len(tracks)),
        number_of_volumes=int(raw.get("numberOfVolumes") or 1), upc=_text(raw.get("upc")),
        copyright=_text(raw.get("copyright")), tracks=tuple(tracks))



# what each search kind is called in TIDAL's answers
SEARCH_SECTIONS = {"track": "tracks", "album": "albums", "artist": "artists",
                   "playlist": "playlists"}


def search_items(payload: Any, kind: str) -> list[dict[str, Any]]:
    """The items of one kind from a search answer: a bare page (``{items}``) or one page
    per type (``{albums: {items}, …}``), also inside hifi-api's ``data``."""
    if isinstance(payload, dict) and isinstance(payload.get("data"), dict):
        payload = payload["data"]
    if not isinstance(payload, dict):
        raise UpstreamUnavailable("search answer has an unknown shape")
    section = payload.get(SEARCH_SECTIONS[kind], payload)
    items = section.get("items") if isinstance(section, dict) else None
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _best_quality(raw: dict[str, Any]) -> str | None:
    tags = (raw.get("mediaMetadata") or {}).get("tags") if isinstance(
        raw.get("mediaMetadata"), dict) else None
    if isinstance(tags, list) and "HIRES_LOSSLESS" in tags:
        return "HI_RES_LOSSLESS"
    return _text(raw.get("audioQuality"))


def search_hit(raw: dict[str, Any], kind: str) -> SearchHit | None:
    """One result as the table shows it; None for an item without an id or a name."""
    ref = raw.get("uuid") if kind == "playlist" else raw.get("id")
    title = raw.get("name") if kind == "artist" else raw.get("title")
    if not isinstance(ref, int | str) or isinstance(ref, bool) or not title:
        return None
    artists = _artists(raw)
    album = raw.get("album") if isinstance(raw.get("album"), dict) else {}
    date = _text(raw.get("releaseDate")) or _text((album or {}).get("releaseDate"))
    count = raw.get("numberOfTracks")
    return SearchHit(
        kind, ref, str(title), artist=artists[0].name if artists else None,
        year=date[:4] if date else None, tracks=count if isinstance(count, int) else None,
        quality=_best_quality(raw), explicit=bool(raw.get("explicit")),
        cover=_text(raw.get("cover")) or _text((album or {}).get("cover"))
        or _text(raw.get("picture")) or _text(raw.get("squareImage")))
