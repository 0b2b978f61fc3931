"""Where a track lands: the path template, rendered one component at a time, each
component sanitised for Linux, macOS and Windows and cut to fit the filesystem.

Every name tidalq derives fits ``NAME_MAX`` (255 bytes) and the whole path ``PATH_MAX``,
cut on a UTF-8 character boundary by one function (:func:`sanitize`): a track's file name
leaves room for the longest extension any file of that track takes (``.flac``, ``.m4a``,
``.lrc``), so its siblings differ from it only in the extension and fit too; an edition
folder keeps its `` [album id]`` whole, at the end of the component holding ``{album}``.

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

MAX_COMPONENT_BYTES = 255  # NAME_MAX of Linux filesystems (and of SMB and NFS mounts)
MAX_PATH_BYTES = 4095  # PATH_MAX less its NUL
# the extensions of the files one track can have: a track's name is cut so that it fits
# with any of them, and the same track's files share one stem at every quality
TRACK_SUFFIXES = (".flac", ".m4a", ".lrc")
SUFFIX_ROOM = max(len(s.encode()) for s in TRACK_SUFFIXES)
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


def cut_utf8(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` bytes of UTF-8, cut on a character boundary."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[:max(0, limit)].decode("utf-8", "ignore")


def sanitize(component: str, extension: str = "", fallback: str = "_",
             room: int | None = None) -> str:
    """One safe path component: never hidden (no leading dot), never empty (``fallback``
    instead), cut to fit ``MAX_COMPONENT_BYTES`` with ``extension`` kept whole. ``room``:
    the bytes to leave for the extension instead of its own length (a track's name leaves
    :data:`SUFFIX_ROOM`, whatever its extension), or for a shorter limit (a long path)."""
    text = unicodedata.normalize("NFC", component)
    text = _RESERVED.sub("_", text).strip()
    text = text.rstrip(". ").lstrip(". ")
    if not text or not text.strip("_- "):
        text = fallback
    if text.split(".")[0].upper() in _WINDOWS_NAMES:
        text = "_" + text
    room = len(extension.encode()) if room is None else max(room, len(extension.encode()))
    text = cut_utf8(text, MAX_COMPONENT_BYTES - room).rstrip(". ") or fallback
    return text + extension


def _named(text: str, fallback: str) -> str:
    """``text``, or ``fallback`` when nothing of it would survive sanitising (``..``)."""
    return text if sanitize(text, fallback="") else fallback


def template_values(track: TrackMeta) -> dict[str, str]:
    """The template's fields for one track."""
    multi_disc = (track.disc_total or 1) > 1 or track.disc_number > 1
    number = str(track.track_number).zfill(track.track_width)
    return {
        "albumartist": track.album_artist, "artist": track.artist_name,
        "album": track.album_title, "title": _named(track.full_title, str(track.id)),
        "disc_track": f"{track.disc_number}-{number}" if multi_disc else number,
        "track": number, "disc": str(track.disc_number),
        "year": (track.release_date or "")[:4], "isrc": track.isrc or "", "id": str(track.id),
    }


def edition_marker(album_id: int | None) -> str:
    """What an edition folder's name ends with (see :mod:`tidalq.editions`)."""
    return f" [{album_id}]"


def relative_path(template: str, track: TrackMeta, extension: str,
                  edition: bool = False, budget: int = MAX_PATH_BYTES) -> Path:
    """The rendered template: every component fits ``NAME_MAX``, and the whole path (with
    the longest extension of the track's files) ``budget`` bytes, long components cut
    first. ``edition`` marks an album whose plain folder holds another edition (same
    titles, other TIDAL ids): the component holding ``{album}`` ends in `` [album id]``."""
    check_template(template)
    values = template_values(track)
    parts = [p for p in template.split("/") if p.strip()]
    texts = [part.format(**values) for part in parts]
    tails = ["" for _ in parts]
    tails[-1] = extension
    if edition:
        at = next((i for i, p in enumerate(parts) if "{album}" in p), None)
        if at is not None:
            tails[at] = edition_marker(track.album_id) + tails[at]
    rooms = [len(t.encode()) for t in tails]
    rooms[-1] = max(rooms[-1], len(tails[-1].encode()) - len(extension.encode()) + SUFFIX_ROOM)
    while True:
        rendered = [sanitize(t, tail, room=r) for t, tail, r in zip(texts, tails, rooms,
                                                                    strict=True)]
        over = _length(rendered) + SUFFIX_ROOM - len(extension.encode()) - budget
        if over <= 0:
            return Path(*rendered)
        rooms = _shorten_longest(rendered, tails, rooms, over)


def _length(components: list[str]) -> int:
    return sum(len(c.encode()) + 1 for c in components)


def _shorten_longest(rendered: list[str], tails: list[str], rooms: list[int],
                     over: int) -> list[int]:
    """Leave ``over`` bytes fewer to the longest component's text (its tail stays)."""
    texts = [len(r.encode()) - len(t.encode()) for r, t in zip(rendered, tails, strict=True)]
    longest = max(range(len(texts)), key=texts.__getitem__)
    if texts[longest] <= 1:
        raise InvalidInput("download_dir is too deep: no track's path fits the filesystem's "
                           "limit of 4096 bytes", "download_dir")
    cut = min(over, texts[longest] - 1)
    rooms = list(rooms)
    rooms[longest] = MAX_COMPONENT_BYTES - (texts[longest] - cut)
    return rooms


def target_path(download_dir: Path, template: str, track: TrackMeta, extension: str,
                edition: bool = False) -> Path:
    """The absolute target path, guaranteed to lie inside ``download_dir`` and to fit
    ``PATH_MAX`` with any of the track's extensions."""
    root = Path(os.path.abspath(download_dir))
    budget = MAX_PATH_BYTES - len(str(root).encode())
    path = Path(os.path.abspath(root / relative_path(template, track, extension, edition,
                                                     budget)))
    if os.path.commonpath([root, path]) != str(root) or path == root:
        raise PermissionDenied(f"refusing to write outside the library: {path}")
    return path
