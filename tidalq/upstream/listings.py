"""Collections as hifi-api servers list them (upstream.md, "Collections"): pure parsing of
playlist and mix pages and of an artist's release listings. No I/O: the client in
:mod:`tidalq.upstream.api` fetches the pages and asks here what they hold.

Shapes accepted: ``{"version", "playlist"|"mix"|"albums", "items"}``, the same inside
``data``, and the legacy ``[playlist, {"items": [...]}]``.
"""

from __future__ import annotations

from typing import Any

from tidalq.errors import UpstreamUnavailable
from tidalq.models import Collection, Release
from tidalq.upstream.shapes import parse_track

# TIDAL's listings of an artist's releases, and the include names each one serves
LISTINGS = {"ALBUMS": ("albums",), "EPSANDSINGLES": ("eps", "singles"),
            "COMPILATIONS": ("compilations", "appears-on")}
VARIOUS_ARTISTS = "various artists"


def collection_page(payload: Any, key: str) -> tuple[dict[str, Any], list[Any]]:
    """(the playlist or mix object, this page's items)."""
    if isinstance(payload, list) and len(payload) >= 2 and isinstance(payload[0], dict) \
            and isinstance(payload[1], dict):
        return payload[0], list(payload[1].get("items") or [])
    if isinstance(payload, dict) and isinstance(payload.get("data"), dict):
        payload = payload["data"]
    if isinstance(payload, dict) and isinstance(payload.get(key), dict):
        items = payload.get("items")
        return payload[key], list(items) if isinstance(items, list) else []
    raise UpstreamUnavailable(f"{key} answer has an unknown shape")


def promised(playlist: dict[str, Any]) -> int:
    """How many items a playlist says it holds (tracks and videos)."""
    return int(playlist.get("numberOfTracks") or 0) + int(playlist.get("numberOfVideos") or 0)


def track_items(items: list[Any]) -> tuple[list[dict[str, Any]], int]:
    """(track objects in order, how many videos were left out)."""
    tracks, videos = [], 0
    for entry in items:
        if not isinstance(entry, dict):
            continue
        kind = entry.get("type", "track")
        raw = entry.get("item", entry)
        if kind == "video":
            videos += 1
        elif kind == "track" and isinstance(raw, dict) and "id" in raw:
            tracks.append(raw)
    return tracks, videos


def collection_of(kind: str, ref: str, title: str, items: list[Any],
                  promised_count: int | None = None) -> Collection:
    """A playlist or mix from all its listed items: fewer than ``promised_count`` is an
    error, never a shorter playlist."""
    if promised_count is not None and len(items) < promised_count:
        raise UpstreamUnavailable(f"{kind} {ref} came back incomplete: {len(items)} of "
                                  f"{promised_count} items")
    raw, videos = track_items(items)
    return Collection(kind, ref, title, tuple(parse_track(t) for t in raw), videos)


def release_page(payload: Any) -> tuple[list[dict[str, Any]], int | None]:
    """(albums of one artist listing page, the listing's total or None when the server
    answered its plain, capped shape)."""
    if isinstance(payload, dict) and isinstance(payload.get("data"), dict):
        payload = payload["data"]
    albums = payload.get("albums") if isinstance(payload, dict) else None
    if isinstance(albums, list):
        return [a for a in albums if isinstance(a, dict)], None
    if not isinstance(albums, dict):
        raise UpstreamUnavailable("artist answer has an unknown shape")
    items = [a for a in albums.get("items") or [] if isinstance(a, dict)]
    total = albums.get("totalNumberOfItems")
    return items, int(total) if isinstance(total, int) else None


def classify(album: dict[str, Any], listing: str | None) -> str:
    """Which include name a release falls under. Compilation is a listing, not a type:
    in COMPILATIONS, "Various Artists" releases are compilations, others appears-on."""
    if listing == "COMPILATIONS":
        artist = album.get("artist") if isinstance(album.get("artist"), dict) else {}
        name = str((artist or {}).get("name", "")).strip().lower()
        return "compilations" if name == VARIOUS_ARTISTS else "appears-on"
    kind = str(album.get("type") or "ALBUM").upper()
    return {"EP": "eps", "SINGLE": "singles"}.get(kind, "albums")


def releases(albums: list[dict[str, Any]], listing: str | None,
             include: tuple[str, ...]) -> list[Release]:
    out = []
    for album in albums:
        kind = classify(album, listing)
        if kind in include and isinstance(album.get("id"), int):
            out.append(Release(album["id"], str(album.get("title") or ""), kind))
    return out
