"""Editions: which folder an album's tracks go to, so that no file holding another TIDAL
track is ever overwritten.

TIDAL lists explicit and clean editions (and re-releases) with the same artist, album and
track titles but other ids. The first edition in the library keeps the plain folder; any
other gets ``Album [album id]`` (see :func:`tidalq.media.paths.relative_path`):

- an album run decides once for all its tracks, and sticks to the folder its earlier
  runs used, so an album is never split between two folders by a restart;
- while an album runs, its plain folder is held: another album with the same folder
  (running in this daemon at the same time) takes its edition folder at once;
- right before each file is published, under the folder's publish lock
  (:mod:`tidalq.library.locks`: shared by every daemon when the store is Redis), the
  target is checked again: a file of another track there (written by another daemon
  sharing the library) sends this track to its edition folder instead of replacing it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar

from tidalq.library.locks import FolderLocks, LocalLocks
from tidalq.media import paths, tags
from tidalq.models import AlbumMeta, TrackMeta

T = TypeVar("T")


def holds_another_track(target: Path, meta: TrackMeta) -> bool:
    """A file tagged with another TIDAL track id is not ours to overwrite."""
    if not target.exists():
        return False
    track_id, _ = tags.read_identity(target)
    return track_id is not None and track_id != str(meta.id)


MAX_REMEMBERED_TARGETS = 4096


class Editions:
    """Folder decisions and publish locks for one daemon's pipeline."""

    def __init__(self, library: Path, template: str, locks: FolderLocks | None = None) -> None:
        self.library = library
        self.template = template
        self.locks = locks or LocalLocks()
        self._running: dict[Path, Counter[int | None]] = {}
        self._targets: dict[tuple[TrackMeta, str, bool], Path] = {}

    def target(self, meta: TrackMeta, extension: str, edition: bool) -> Path:
        """Where the track goes; rendered once (a track's path is asked for several times
        on its way, and rendering sanitises every component)."""
        key = (meta, extension, edition)
        path = self._targets.get(key)
        if path is None:
            if len(self._targets) >= MAX_REMEMBERED_TARGETS:
                self._targets.clear()
            path = self._targets[key] = paths.target_path(self.library, self.template, meta,
                                                          extension, edition=edition)
        return path

    def _folder(self, meta: TrackMeta, extension: str) -> Path:
        return self.target(meta, extension, False).parent

    def held_by_another_album(self, meta: TrackMeta, extension: str) -> bool:
        """Whether another album running here holds this track's plain folder (what
        :meth:`settle` decides without looking at the disk)."""
        return self._taken_by_another_album(self._folder(meta, extension), meta.album_id)

    def _taken_by_another_album(self, folder: Path, album_id: int | None) -> bool:
        running = self._running.get(folder, Counter())
        return any(n > 0 and other != album_id for other, n in running.items())

    @contextlib.asynccontextmanager
    async def album(self, album: AlbumMeta, extension: str,
                    earlier_paths: Iterable[str | None]) -> AsyncIterator[bool]:
        """Decide whether this album run uses its edition folder, and hold the folder."""
        if not album.tracks:
            yield False
            return
        async with self._hold(album.tracks, album.id, extension, earlier_paths) as edition:
            yield edition

    @contextlib.asynccontextmanager
    async def track(self, meta: TrackMeta, extension: str) -> AsyncIterator[bool]:
        """The same for a track job: it holds its album's folder too while it runs."""
        async with self._hold([meta], meta.album_id, extension, ()) as edition:
            yield edition

    @contextlib.asynccontextmanager
    async def _hold(self, tracks: list[TrackMeta] | tuple[TrackMeta, ...],
                    album_id: int | None, extension: str,
                    earlier_paths: Iterable[str | None]) -> AsyncIterator[bool]:
        folder = self._folder(tracks[0], extension)
        async with self.locks.hold(folder):  # other daemons decide one at a time too
            ours, theirs, in_edition = await asyncio.to_thread(self._who_is_there, tracks,
                                                                extension)
            # decided and registered without an await in between: two runs here never
            # both take a free plain folder
            edition = (album_id is not None and self._used_edition(earlier_paths, album_id)) \
                or (not ours and (in_edition or theirs
                                  or self._taken_by_another_album(folder, album_id)))
            held = self._running.setdefault(folder, Counter())
            if not edition:
                held[album_id] += 1
        try:
            yield edition
        finally:
            if not edition:
                held[album_id] -= 1
            if not +held:
                self._running.pop(folder, None)

    def _who_is_there(self, tracks: Iterable[TrackMeta], extension: str
                      ) -> tuple[bool, bool, bool]:
        """(a file of these tracks is in the plain folder, a file of another track is, a
        file of these tracks is in their edition folder: an earlier job put them there)."""
        ours = theirs = in_edition = False
        for t in tracks:
            target = self.target(t, extension, False)
            if target.exists():
                track_id, _ = tags.read_identity(target)
                ours |= track_id == str(t.id)
                theirs |= track_id is not None and track_id != str(t.id)
            elif not in_edition:
                beside = self.target(t, extension, True)
                in_edition = beside.exists() and tags.read_identity(beside)[0] == str(t.id)
        return ours, theirs, in_edition

    @staticmethod
    def _used_edition(earlier_paths: Iterable[str | None], album_id: int) -> bool:
        marker = paths.edition_marker(album_id)
        return any(part.endswith(marker) for p in earlier_paths if p
                   for part in Path(p).parent.parts)

    async def settle(self, meta: TrackMeta, extension: str, edition: bool) -> bool:
        """Whether one track goes to its edition folder (a track job, or an album track
        whose target turned out to be taken)."""
        if edition or self.held_by_another_album(meta, extension):
            return True
        return await asyncio.to_thread(holds_another_track,
                                       self.target(meta, extension, False), meta)

    async def publish(self, meta: TrackMeta, target: Path, edition: bool,
                      place: Callable[[Path], Awaitable[T]],
                      place_alone: Callable[[Path], T | None] | None = None) -> T:
        """Run ``place(where)`` under the lock of the target's folder, after one last look:
        ``where`` is the target, or this track's edition folder when a file of another
        track holds the target. Only the look and what ``place`` must decide with the
        folder still need the lock: the caller syncs the file before, and the folder
        after.

        ``place_alone(target)``, when given, is tried first, in one trip off the loop: the
        common case, nothing at the target (so no other track's file either) and nothing
        to weigh, placed at once; it returns None when there is something to look at."""
        async with self.locks.hold(target.parent) as fence:
            if place_alone is not None:
                await fence.check()
                placed = await asyncio.to_thread(place_alone, target)
                if placed is not None:
                    return placed
            if not edition and await asyncio.to_thread(holds_another_track, target, meta):
                target = self.target(meta, target.suffix, True)
            await fence.check()  # a holder whose shared lock expired does not publish
            return await place(target)
