"""Where a track lands: the path template, rendered one component at a time, each
component sanitised for Linux, macOS and Windows and cut to 255 bytes.

Template fields: ``{albumartist}``, ``{artist}``, ``{album}``, ``{title}`` ("Title
(Version)"), ``{disc_track}`` (``NN``, or ``D-NN`` on multi-disc albums), ``{track}``,
``{disc}``, ``{year}``, ``{isrc}``, ``{id}``. The extension is added from the quality.
"""

from __future__ import annotations

import os
import re
import string
import unicodedata
from pathlib import Path

from tidalq.errors import InvalidInput, PermissionDenied
from tidalq.models import TrackMeta

MAX_COMPONENT_BYTES = 255
_RESERVED = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_WINDOWS_NAMES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                  *(f"LPT{i}" for i in range(1, 10))}
FIELDS = {"albumartist", "artist", "album", "title", "disc_track", "track", "disc", "year",
          "isrc", "id"}


def check_template(template: str) -> None:
    """Refuse unknown fields early, with the field's name."""
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None and name not in FIELDS:
            raise InvalidInput(f"path_template has an unknown field {{{name}}}", "path_template")


def _cut_utf8(text: str, limit: int) -> str:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


def sanitize(component: str, extension: str = "", fallback: str = "_") -> str:
    """One safe path component (``extension`` kept whole when the name is cut): never
    hidden (no leading dot), never empty (``fallback`` instead)."""
    text = unicodedata.normalize("NFC", component)
    text = _RESERVED.sub("_", text).strip()
    text = text.rstrip(". ").lstrip(". ")
    if not text or not text.strip("_- "):
        text = fallback
    if text.split(".")[0].upper() in _WINDOWS_NAMES:
        text = "_" + text
    text = _cut_utf8(text, MAX_COMPONENT_BYTES - len(extension.encode())).rstrip(". ") \
        or fallback
    return text + extension


def _named(text: str, fallback: str) -> str:
    """``text``, or ``fallback`` when nothing of it would survive sanitising (``..``)."""
    return text if sanitize(text, fallback="") else fallback


def template_values(track: TrackMeta, edition: bool = False) -> dict[str, str]:
    """The template's fields for one track. ``edition`` marks an album whose plain folder
    holds another edition (same titles, other TIDAL ids): its folder gains `` [album id]``."""
    multi_disc = (track.disc_total or 1) > 1 or track.disc_number > 1
    number = str(track.track_number).zfill(track.track_width)
    album = f"{track.album_title} [{track.album_id}]" if edition else track.album_title
    return {
        "albumartist": track.album_artist, "artist": track.artist_name,
        "album": album, "title": _named(track.full_title, str(track.id)),
        "disc_track": f"{track.disc_number}-{number}" if multi_disc else number,
        "track": number, "disc": str(track.disc_number),
        "year": (track.release_date or "")[:4], "isrc": track.isrc or "", "id": str(track.id),
    }


def relative_path(template: str, track: TrackMeta, extension: str,
                  edition: bool = False) -> Path:
    check_template(template)
    values = template_values(track, edition)
    parts = [p for p in template.split("/") if p.strip()]
    rendered = [sanitize(part.format(**values), extension if i == len(parts) - 1 else "")
                for i, part in enumerate(parts)]
    return Path(*rendered)


def target_path(download_dir: Path, template: str, track: TrackMeta, extension: str,
                edition: bool = False) -> Path:
    """The absolute target path, guaranteed to lie inside ``download_dir``."""
    root = Path(os.path.abspath(download_dir))
    path = Path(os.path.abspath(root / relative_path(template, track, extension, edition)))
    if os.path.commonpath([root, path]) != str(root) or path == root:
        raise PermissionDenied(f"refusing to write outside the library: {path}")
    return path
