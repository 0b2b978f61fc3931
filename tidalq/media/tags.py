"""Tags with mutagen: Vorbis comments and a PICTURE block for FLAC, iTunes atoms for M4A.

Besides the usual fields tidalq writes its own identity (``TIDAL_TRACK_ID``,
``TIDALQ_QUALITY``, …) so a later run can tell an identical file without downloading.
mutagen's exceptions are translated here into IntegrityFailed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mutagen import MutagenError
from mutagen.flac import FLAC, Picture, VCFLACDict
from mutagen.mp4 import MP4, MP4Cover, MP4FreeForm

from tidalq.errors import IntegrityFailed
from tidalq.media.verify import AudioFacts, facts_of
from tidalq.models import TrackMeta


@dataclass(frozen=True)
class TagData:
    """Everything written into a file besides the audio."""

    track: TrackMeta
    quality: str
    replay_gain: dict[str, float]
    cover: bytes | None
    lyrics: str | None
    musicbrainz: dict[str, list[str]] | None = None  # Picard's names (mbmatch)


# Picard's names for MusicBrainz tags in MP4 freeform atoms (Vorbis comments use the keys)
MP4_FREEFORM_NAMES = {
    "MUSICBRAINZ_ALBUMID": "MusicBrainz Album Id",
    "MUSICBRAINZ_RELEASEGROUPID": "MusicBrainz Release Group Id",
    "MUSICBRAINZ_TRACKID": "MusicBrainz Track Id",
    "MUSICBRAINZ_RELEASETRACKID": "MusicBrainz Release Track Id",
    "MUSICBRAINZ_ARTISTID": "MusicBrainz Artist Id",
    "MUSICBRAINZ_ALBUMARTISTID": "MusicBrainz Album Artist Id",
    "RELEASETYPE": "MusicBrainz Album Type",
    "RELEASECOUNTRY": "MusicBrainz Album Release Country",
}


def _fields(data: TagData) -> dict[str, list[str]]:
    t = data.track
    out: dict[str, list[str]] = {
        "TITLE": [t.full_title], "ARTIST": [a.name for a in t.artists] or [t.album_artist],
        "ALBUMARTIST": [t.album_artist], "ALBUM": [t.album_title],
        "TRACKNUMBER": [str(t.track_number)], "DISCNUMBER": [str(t.disc_number)],
        "TIDAL_TRACK_ID": [str(t.id)], "TIDALQ_QUALITY": [data.quality],
    }
    optional = {
        "TRACKTOTAL": t.track_total, "DISCTOTAL": t.disc_total, "DATE": t.release_date,
        "ISRC": t.isrc, "BARCODE": t.upc, "COPYRIGHT": t.copyright, "TIDAL_ALBUM_ID": t.album_id,
        "TIDAL_ARTIST_ID": t.artists[0].id if t.artists else None,
        "EXPLICIT": "1" if t.explicit else None, "LYRICS": data.lyrics,
    }
    gains = {"REPLAYGAIN_TRACK_GAIN": ("trackReplayGain", " dB"),
             "REPLAYGAIN_TRACK_PEAK": ("trackPeakAmplitude", ""),
             "REPLAYGAIN_ALBUM_GAIN": ("albumReplayGain", " dB"),
             "REPLAYGAIN_ALBUM_PEAK": ("albumPeakAmplitude", "")}
    for tag, (key, unit) in gains.items():
        if key in data.replay_gain:
            optional[tag] = f"{data.replay_gain[key]:.2f}{unit}"
    out.update({k: [str(v)] for k, v in optional.items() if v not in (None, "")})
    out.update(data.musicbrainz or {})
    return out


def write_tags(path: Path, data: TagData) -> AudioFacts:
    """Tag the file; returns what parsing it said of its stream (tagging leaves the stream
    as it was)."""
    try:
        if path.suffix == ".flac":
            return _write_flac(path, data)
        return _write_m4a(path, data)
    except (MutagenError, ValueError) as exc:
        raise IntegrityFailed(f"cannot tag {path.name}: {exc}") from exc


def _front_cover(cover: bytes) -> Picture:
    pic = Picture()
    pic.type, pic.mime, pic.desc = 3, "image/jpeg", "Front Cover"
    pic.width, pic.height, pic.depth = 1280, 1280, 24
    pic.data = cover
    return pic


def _write_flac(path: Path, data: TagData) -> AudioFacts:
    audio = FLAC(path)
    audio.delete()
    audio.clear_pictures()
    for key, values in _fields(data).items():
        audio[key] = values
    if data.cover:
        audio.add_picture(_front_cover(data.cover))
    audio.save()
    return facts_of(audio)


def flac_blocks(data: TagData) -> list[tuple[int, bytes]]:
    """The tags as FLAC metadata blocks (type, body): a VORBIS_COMMENT and, with a cover, a
    PICTURE; what :func:`write_tags` writes, for a file written with them ahead of its
    frames (:mod:`tidalq.media.flachead`)."""
    comment = VCFLACDict()
    # appended, not set: setting a key first deletes it, a scan of the list each time;
    # _fields' keys are already unique, and write() validates every one
    comment.extend((key, value) for key, values in _fields(data).items() for value in values)
    blocks = [(4, comment.write(framing=False))]
    if data.cover:
        blocks.append((6, _front_cover(data.cover).write()))
    return blocks


_MP4_STANDARD = {"TITLE": "©nam", "ARTIST": "©ART", "ALBUMARTIST": "aART", "ALBUM": "©alb",
                 "DATE": "©day", "COPYRIGHT": "cprt", "LYRICS": "©lyr"}


def _write_m4a(path: Path, data: TagData) -> AudioFacts:
    audio = MP4(path)
    audio.delete()
    fields = _fields(data)
    t = data.track
    for key, atom in _MP4_STANDARD.items():
        if key in fields:
            audio[atom] = fields[key]
    audio["trkn"] = [(t.track_number, t.track_total or 0)]
    audio["disk"] = [(t.disc_number, t.disc_total or 0)]
    if t.explicit:
        audio["rtng"] = [1]
    skip = set(_MP4_STANDARD) | {"TRACKNUMBER", "TRACKTOTAL", "DISCNUMBER", "DISCTOTAL"}
    _set_freeform(audio, {k: v for k, v in fields.items() if k not in skip})
    if data.cover:
        audio["covr"] = [MP4Cover(data.cover, imageformat=MP4Cover.FORMAT_JPEG)]
    audio.save()
    return facts_of(audio)


def _set_freeform(audio: MP4, fields: dict[str, list[str]]) -> None:
    for key, values in fields.items():
        name = MP4_FREEFORM_NAMES.get(key, key)
        audio[f"----:com.apple.iTunes:{name}"] = [MP4FreeForm(v.encode()) for v in values]


def add_fields(path: Path, fields: dict[str, list[str]]) -> AudioFacts:
    """Set these tags (Vorbis comment names, as :func:`write_tags` takes them) and keep
    every other tag; returns what parsing the file said of its stream."""
    try:
        if path.suffix == ".flac":
            flac = FLAC(path)
            for key, values in fields.items():
                flac[key] = values
            flac.save()
            return facts_of(flac)
        mp4 = MP4(path)
        _set_freeform(mp4, fields)
        mp4.save()
        return facts_of(mp4)
    except (MutagenError, ValueError) as exc:
        raise IntegrityFailed(f"cannot tag {path.name}: {exc}") from exc


def has_fields(path: Path, fields: dict[str, list[str]]) -> bool:
    """Whether the file already carries these tags with these values."""
    try:
        if path.suffix == ".flac":
            flac: Any = FLAC(path).tags or {}
            return all(list(flac.get(k) or []) == v for k, v in fields.items())
        atoms: Any = MP4(path).tags or {}
        return all([bytes(x).decode() for x in atoms.get(
            f"----:com.apple.iTunes:{MP4_FREEFORM_NAMES.get(k, k)}") or []] == v
            for k, v in fields.items())
    except (MutagenError, OSError, ValueError):
        return False


def read_identity(path: Path) -> tuple[str | None, str | None]:
    """(TIDAL track id, quality) from a file tidalq tagged; (None, None) otherwise."""
    try:
        if path.suffix == ".flac":
            tags: Any = FLAC(path).tags or {}

            def get(k: str) -> str | None:
                return (tags.get(k) or [None])[0]  # type: ignore[no-any-return]
        else:
            atoms: Any = MP4(path).tags or {}

            def get(k: str) -> str | None:
                values = atoms.get(f"----:com.apple.iTunes:{k}")
                return bytes(values[0]).decode() if values else None
        return get("TIDAL_TRACK_ID"), get("TIDALQ_QUALITY")
    except (MutagenError, OSError, ValueError):
        return None, None


def flac_md5(path: Path) -> bytes | None:
    """The STREAMINFO MD5 of a FLAC file (None if unset or unreadable)."""
    try:
        value = FLAC(path).info.md5_signature
    except (MutagenError, OSError):
        return None
    return value.to_bytes(16, "big") if value else None
