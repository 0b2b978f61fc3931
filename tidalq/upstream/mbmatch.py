"""Matching a TIDAL album to a MusicBrainz release, and the tags Picard writes: pure, no
I/O (the client in :mod:`tidalq.upstream.musicbrainz` fetches what is matched here).

Tracks are matched by disc and position and confirmed by ISRC where both sides have one:
a contradiction (both have ISRCs, none in common) rejects the release, and so does another
number of tracks (another edition of the album, however alike). ``strict`` also requires an
agreeing ISRC on every track. Nothing is ever guessed: no confident match, no MusicBrainz
tags, and the reason is said.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tidalq.models import AlbumMeta, TrackMeta


@dataclass
class Match:
    """A release matched to an album: tags per TIDAL track id, and how it was found."""

    release_id: str
    how: str  # "given", "barcode" or "isrc"
    tags: dict[int, dict[str, list[str]]] = field(default_factory=dict)
    confirmed_by_isrc: int = 0

    def summary(self, tracks: int) -> str:
        return (f"release {self.release_id} ({self.how}): {len(self.tags)} of {tracks} "
                f"tracks, {self.confirmed_by_isrc} confirmed by ISRC")


class NoMatch(Exception):
    """Raised when a release does not fit the album; the message says why."""


def _credit_ids(credit: Any) -> list[str]:
    return [c["artist"]["id"] for c in credit or []
            if isinstance(c, dict) and isinstance(c.get("artist"), dict) and c["artist"].get("id")]


def _release_tags(release: dict[str, Any]) -> dict[str, list[str]]:
    group = release.get("release-group") or {}
    out: dict[str, list[str]] = {"MUSICBRAINZ_ALBUMID": [str(release["id"])]}
    optional = {
        "MUSICBRAINZ_RELEASEGROUPID": group.get("id"),
        "RELEASETYPE": (group.get("primary-type") or "").lower() or None,
        "RELEASECOUNTRY": release.get("country"),
        "ORIGINALDATE": group.get("first-release-date") or None,
    }
    out.update({k: [str(v)] for k, v in optional.items() if v})
    album_artists = _credit_ids(release.get("artist-credit"))
    if album_artists:
        out["MUSICBRAINZ_ALBUMARTISTID"] = album_artists
    return out


def _positions(release: dict[str, Any]) -> dict[tuple[int, int], dict[str, Any]]:
    found = {}
    for medium in release.get("media") or []:
        disc = int(medium.get("position") or 1)
        for track in medium.get("tracks") or []:
            found[(disc, int(track.get("position") or 0))] = track
    return found


def match_release(album: AlbumMeta, release: dict[str, Any], how: str,
                  strict: bool) -> Match:
    """Tags for every album track the release holds at the same disc and position;
    NoMatch when the release contradicts the album."""
    positions = _positions(release)
    if len(positions) != len(album.tracks):
        raise NoMatch(f"release {release.get('id')} has {len(positions)} tracks, the album "
                      f"{len(album.tracks)}: another edition")
    base = _release_tags(release)
    result = Match(str(release["id"]), how)
    for meta in album.tracks:
        mb = positions.get((meta.disc_number, meta.track_number))
        if mb is None:
            if strict:
                raise NoMatch(f"release {release.get('id')} has no track "
                              f"{meta.disc_number}-{meta.track_number}")
            continue
        agree = _isrc_agrees(meta, mb)
        where = f"track {meta.disc_number}-{meta.track_number} ({meta.full_title})"
        if agree is False:
            raise NoMatch(f"{where}: ISRC {meta.isrc} is not the release's")
        if strict and agree is None:
            raise NoMatch(f"{where}: no ISRC on both sides to confirm it (strict matching)")
        result.confirmed_by_isrc += bool(agree)
        result.tags[meta.id] = {**base, **_track_tags(mb)}
    if not result.tags:
        raise NoMatch(f"release {release.get('id')} shares no track positions with the album")
    return result


def _isrc_agrees(meta: TrackMeta, mb: dict[str, Any]) -> bool | None:
    """True or False when both sides have ISRCs, None when one side has none."""
    recording = mb.get("recording") or {}
    theirs = {str(i).upper() for i in recording.get("isrcs") or []}
    if not meta.isrc or not theirs:
        return None
    return meta.isrc.upper() in theirs


def _track_tags(mb: dict[str, Any]) -> dict[str, list[str]]:
    recording = mb.get("recording") or {}
    out = {"MUSICBRAINZ_RELEASETRACKID": [str(mb["id"])]}
    if recording.get("id"):
        out["MUSICBRAINZ_TRACKID"] = [str(recording["id"])]
    artists = _credit_ids(mb.get("artist-credit") or recording.get("artist-credit"))
    if artists:
        out["MUSICBRAINZ_ARTISTID"] = artists
    return out


def barcode_candidates(search: dict[str, Any], limit: int = 3) -> list[str]:
    """Release ids of a barcode search, best score first."""
    releases = [r for r in search.get("releases") or [] if isinstance(r, dict) and r.get("id")]
    releases.sort(key=lambda r: -int(r.get("score") or 0))
    return [str(r["id"]) for r in releases[:limit]]


def isrc_candidates(lookups: list[dict[str, Any]], limit: int = 3) -> list[str]:
    """Release ids that hold the most of the looked-up ISRCs' recordings."""
    counts: dict[str, int] = {}
    for answer in lookups:
        seen = {r["id"] for rec in answer.get("recordings") or []
                for r in rec.get("releases") or [] if isinstance(r, dict) and r.get("id")}
        for release_id in seen:
            counts[release_id] = counts.get(release_id, 0) + 1
    return [i for i, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:limit]]
