"""The publisher: everything that decides where a verified file goes and puts it there.

The target path (template, editions), the conflict policy (an identical or better file is
kept: one file per track, the better quality wins), the publish lock and its last look,
the rename into place, the album's ``cover.jpg``, the ``.lrc`` beside a track, dropping
the worse version of an upgraded track, and re-tagging a file in place. One daemon's lock
is :class:`~tidalq.library.editions.Editions`' asyncio lock per folder: a lock across
daemons replaces that one class.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any

from tidalq.attempt import TrackRequest
from tidalq.config import Settings
from tidalq.errors import IntegrityFailed
from tidalq.library import trust
from tidalq.library.editions import Editions
from tidalq.library.files import (
    add_tags_and_sync,
    copy_if_ours,
    fsync_dir,
    move_into_place,
    place_bytes,
    replace_if_ours,
)
from tidalq.library.locks import FolderLocks
from tidalq.media import tags, verify
from tidalq.models import TrackMeta
from tidalq.terms import Quality

log = logging.getLogger(__name__)


MAX_REMEMBERED_BROKEN = 4096


def _containers(target: Path) -> tuple[Path, Path]:
    """Where a track's file is in either container, beside ``target`` (one is ``target``:
    one file per track, whichever the quality)."""
    return target.with_suffix(".flac"), target.with_suffix(".m4a")


def _stamp(path: Path) -> tuple[Path, int, int]:
    st = path.stat()
    return path, st.st_size, st.st_mtime_ns


def _skipped(target: Path, quality: Quality, kept_better: bool) -> dict[str, Any]:
    facts = verify.probe(target)
    return {"path": str(target), "quality": quality.value, "codec": facts.codec,
            "bitDepth": facts.bit_depth, "sampleRate": facts.sample_rate,
            "bytes": target.stat().st_size, "skipped": True, "keptBetter": kept_better,
            "replaced": None}


def _kept_as_verified(target: Path, meta: TrackMeta, quality: Quality
                      ) -> dict[str, Any] | None:
    if not trust.still_verified(target):  # also false when there is no file
        return None
    track_id, have = tags.read_identity(target)
    if track_id != str(meta.id) or have is None or have not in Quality.__members__ \
            or Quality(have).rank < quality.rank:
        return None
    return _skipped(target, quality, False)  # as the full checks say it


def _first_kept(targets: list[Path], meta: TrackMeta, quality: Quality
                ) -> dict[str, Any] | None:
    for target in targets:
        found = _kept_as_verified(target, meta, quality)
        if found is not None:
            return found
    return None


class Publisher:
    """Where tracks land in one daemon's library, and their way in."""

    def __init__(self, settings: Settings, staging_dir: Path,
                 locks: FolderLocks | None = None) -> None:
        self.settings = settings
        self.staging_dir = staging_dir
        self.editions = Editions(settings.download_dir, settings.path_template, locks)
        self._found_broken: set[tuple[Path, int, int]] = set()

    async def publish(self, req: TrackRequest, staging: Path, target: Path
                      ) -> tuple[Path, dict[str, Any] | None]:
        """Move a verified, synced staging file into the library under the folder's lock
        (see :meth:`place_unless_better`); the folder is synced by :meth:`settle_in`."""
        def mark_and_place_alone(to: Path) -> tuple[Path, None] | None:
            trust.mark_verified(staging)  # kept by the rename
            return (to, None) if self._move_if_alone(staging, to, req) else None

        return await self.editions.publish(
            req.meta, target, req.edition,
            lambda to: self.place_unless_better(req, staging, to), mark_and_place_alone)

    def target(self, req: TrackRequest, extension: str) -> Path:
        return self.editions.target(req.meta, extension, req.edition)

    async def settle_edition(self, req: TrackRequest, extension: str) -> TrackRequest:
        return replace(req, edition=await self.editions.settle(req.meta, extension,
                                                               req.edition))

    def _conflict(self, req: TrackRequest) -> str:
        return "overwrite" if req.force else self.settings.conflict

    async def already_there(self, req: TrackRequest, target: Path, quality: Quality) -> bool:
        """The conflict policy: is the file at ``target`` to be kept instead of downloading?
        A file of ours is taken as "already there" only if it still verifies."""
        meta = req.meta
        if not target.exists():
            return False
        if self._conflict(req) == "skip":
            return True
        if self._conflict(req) == "overwrite":
            return False
        track_id, have = await asyncio.to_thread(tags.read_identity, target)
        try:
            if track_id != str(meta.id) or have is None or Quality(have).rank < quality.rank:
                return False
        except ValueError:
            return False
        return await self._sound(target, meta.duration_s)

    async def _sound(self, target: Path, duration_s: float) -> bool:
        """Whether a file in the library decodes: trusted when tidalq verified it and it is
        untouched since; decoded otherwise (once: a file found broken stays so here)."""
        if await asyncio.to_thread(trust.still_verified, target):
            return True  # the file tidalq decoded when it published it, untouched since
        try:
            stamp = await asyncio.to_thread(_stamp, target)
        except FileNotFoundError:
            return False
        if stamp in self._found_broken:
            return False
        log.debug("%s is not the file tidalq verified (or it never was): decoding it", target)
        try:
            await verify.verify(target, duration_s)
        except IntegrityFailed as exc:
            log.warning("%s is in the library but broken (%s); downloading it again",
                        target, exc)
            if len(self._found_broken) > MAX_REMEMBERED_BROKEN:
                self._found_broken.clear()
            self._found_broken.add(stamp)
            return False
        await asyncio.to_thread(trust.mark_verified, target)
        return True

    async def skipped(self, target: Path, quality: Quality,
                       kept_better: bool = False) -> dict[str, Any]:
        return await asyncio.to_thread(_skipped, target, quality, kept_better)

    async def kept_anywhere(self, meta: TrackMeta, quality: Quality,
                            force: bool) -> dict[str, Any] | None:
        """:meth:`kept` before any folder is decided: this track's verified file in its
        plain folder or its edition folder (a playlist re-run asks this first)."""
        if force or self.settings.conflict != "overwrite_if_different":
            return None
        targets = [self.editions.target(meta, quality.extension, edition)
                   for edition in (False, True)]
        return await asyncio.to_thread(_first_kept, targets, meta, quality)

    async def free_way(self, req: TrackRequest, extension: str) -> TrackRequest | None:
        """The common case of a first download, in one trip off the loop: no file where
        the track goes nor beside it in the other container, so nothing is kept, skipped
        or weighed, and no other track's file is in the way. The request with its folder
        settled; None when there is something there (the full checks decide)."""
        settled = replace(req, edition=req.edition
                          or self.editions.held_by_another_album(req.meta, extension))
        target = self.target(settled, extension)
        places = {self.target(req, extension), target, *_containers(target)}
        if await asyncio.to_thread(lambda: not any(p.exists() for p in places)):
            return settled
        return None

    async def kept(self, req: TrackRequest, target: Path) -> dict[str, Any] | None:
        """The common case of a re-run, in one trip off the loop: this track's own file is
        at ``target``, at the quality asked or better, and untouched since tidalq verified
        it. Its result (skipped), or None: the full checks decide."""
        if self._conflict(req) != "overwrite_if_different":
            return None
        return await asyncio.to_thread(_kept_as_verified, target, req.meta, req.quality)

    async def add_tags_in_place(self, meta: TrackMeta, path: Path,
                                fields: dict[str, list[str]]) -> bool:
        """Set these tags on a file in the library, published like a download: a copy in
        staging is tagged, synced and verified in full, and renamed over the file under
        the folder's lock. False when the file no longer holds this track."""
        staging = self.staging_dir / f"retag-{secrets.token_hex(6)}{path.suffix}"
        try:
            if not await asyncio.to_thread(copy_if_ours, path, staging, meta):
                return False
            parsed = await asyncio.to_thread(add_tags_and_sync, staging, fields)
            await verify.verify(staging, meta.duration_s, parsed)
            await asyncio.to_thread(trust.mark_verified, staging)
            return await self.editions.publish(
                meta, path, True,
                lambda to: asyncio.to_thread(replace_if_ours, staging, to, meta))
        finally:
            staging.unlink(missing_ok=True)

    def _other_versions(self, target: Path, meta: TrackMeta) -> list[tuple[Path, Quality]]:
        """This track's files beside ``target`` in the other container (.m4a/.flac)."""
        found = []
        for other in _containers(target):
            if other == target or not other.exists():
                continue
            track_id, quality = tags.read_identity(other)
            if track_id == str(meta.id) and quality is not None \
                    and quality in Quality.__members__:
                found.append((other, Quality(quality)))
        return found

    async def better_version(self, req: TrackRequest, target: Path
                              ) -> tuple[Path, Quality] | None:
        """A file of this track at a quality at least as good, in the other container:
        a downgrade keeps it (one file per track), unless the job forces."""
        if req.force:
            return None
        for other, quality in await asyncio.to_thread(self._other_versions, target, req.meta):
            if quality.rank >= req.quality.rank and \
                    await self.already_there(req, other, quality):
                return other, quality
        return None

    def drop_worse_versions(self, published: Path, meta: TrackMeta, quality: Quality,
                             force: bool) -> str | None:
        """After an upgrade is published (and verified), the old file goes. Never a better
        one, unless the job forces the downgrade: a job for this track at a better quality
        may have published its file since this one's was placed."""
        replaced = None
        for other, other_quality in self._other_versions(published, meta):
            if force or other_quality.rank < quality.rank:
                other.unlink(missing_ok=True)
                replaced = str(other)
        return replaced

    async def place_unless_better(self, req: TrackRequest, staging: Path, to: Path
                                   ) -> tuple[Path, dict[str, Any] | None]:
        """Under the folder's lock, the checks this job made before it downloaded, made
        again: a file of this track at least as good that came meanwhile (its job at
        another quality published it) is kept, and this job's result says so; else the
        file moves to ``to``. Returns where the track is, and the result if skipped."""
        if await asyncio.to_thread(self._move_if_alone, staging, to, req):
            return to, None
        if await self.already_there(req, to, req.quality):
            return to, await self.skipped(to, req.quality)
        better = await self.better_version(req, to)
        if better is not None:
            return better[0], await self.skipped(*better, kept_better=True)
        await asyncio.to_thread(move_into_place, staging, to, req.attempt.check_lease)
        return to, None

    @staticmethod
    def _move_if_alone(staging: Path, to: Path, req: TrackRequest) -> bool:
        """The common case in one trip off the loop: no file at ``to`` nor beside it in
        the other container, so there is nothing to weigh and the file moves in."""
        if any(p.exists() for p in (to, *_containers(to))):
            return False
        move_into_place(staging, to, req.attempt.check_lease)
        return True

    async def same_audio(self, req: TrackRequest, target: Path,
                          facts: verify.AudioFacts) -> bool:
        """overwrite_if_different: the same decoded audio is not replaced. The MD5 in a
        header proves nothing about the frames after it, so the file must also verify."""
        if self._conflict(req) != "overwrite_if_different" or facts.md5 is None:
            return False
        if not target.exists() or await asyncio.to_thread(tags.flac_md5, target) != facts.md5:
            return False
        return await self._sound(target, req.meta.duration_s)

    def settle_in(self, target: Path, req: TrackRequest, quality: Quality,
                   cover: bytes | None, synced: str | None) -> str | None:
        """After the audio file is renamed into place: the album's ``cover.jpg`` if it has
        none, the ``.lrc`` beside the track, the old version of an upgraded track gone, and
        one sync of the folder for all of it. Returns the path of the version replaced."""
        try:
            if cover and not (target.parent / "cover.jpg").exists():
                place_bytes(target.parent / "cover.jpg", cover, self.staging_dir)
            if synced:
                text = synced if synced.endswith("\n") else synced + "\n"
                place_bytes(target.with_suffix(".lrc"), text.encode(), self.staging_dir)
            return self.drop_worse_versions(target, req.meta, quality, req.force)
        finally:
            fsync_dir(target.parent)  # the track's rename is durable even if an extra failed
