"""The work a job exists for: one track, or every track of an album, into the library.

One track: resolve metadata and the stream → decide the target path → apply the conflict
policy (an identical file means no download at all) → stream into staging on the
library's filesystem (DASH remuxed to FLAC) → tag and fsync → verify → publish
(``os.replace``, then one fsync of the folder for the track, its ``.lrc`` and the album's
``cover.jpg``). One album: its tracks through the same steps, several at once within the
daemon's download slots; publishing is per track and additive; a retry skips the tracks
already done.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
import shutil
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol, TypeAlias, TypeVar

from tidalq.config import Settings
from tidalq.editions import Editions
from tidalq.errors import (
    CdnExpired,
    DownloadError,
    FailureCode,
    IntegrityFailed,
    QualityUnavailable,
    TidalqError,
    from_os_error,
)
from tidalq.media import tags, verify
from tidalq.media.fetch import Fetcher
from tidalq.models import AlbumMeta, Job, TrackMeta
from tidalq.terms import Quality
from tidalq.upstream.base import Upstream
from tidalq.upstream.http import read_capped
from tidalq.upstream.manifest import DashStream, Served
from tidalq.upstream.musicbrainz import MusicBrainz

log = logging.getLogger(__name__)

T = TypeVar("T")
Lazy: TypeAlias = T | Callable[[], T]  # a value, or what computes it when it is needed

# report(progress, album track states or None, force): records the latest state; the worker
# reads and writes it to the store at most every half second, and at once when forced.
Report = Callable[[Lazy[float], Lazy[list[dict[str, Any]]] | None, bool], None]
Progress = Callable[[float], None]
FRESH_MANIFEST_TRIES = 3


class Attempt(Protocol):
    """One attempt at a job, as the worker runs it under a lease."""

    @property
    def key(self) -> str:
        """Names this attempt's staging files: no two attempts share one."""

    def check_lease(self) -> None:
        """Raise LeaseLost when this attempt may no longer publish anything."""

    def learned(self, titles: dict[str, str]) -> None:
        """The job's artist, album and track titles, once the upstream told them."""

    def pausing(self) -> bool:
        """The user paused the job while it ran: an album starts no more tracks."""


@dataclass(frozen=True)
class Unleased:
    """An attempt outside the worker pool (tests, benchmarks): it always may publish."""

    key: str

    def check_lease(self) -> None:
        return None

    def learned(self, titles: dict[str, str]) -> None:
        return None

    def pausing(self) -> bool:
        return False


@dataclass(frozen=True)
class TrackRequest:
    meta: TrackMeta
    quality: Quality
    min_quality: Quality | None
    attempt: Attempt
    edition: bool = False  # the album folder carries the album id (another edition is there)
    force: bool = False  # replace what the library has (the job's forceOverwrite)
    musicbrainz: dict[str, list[str]] | None = None  # this track's MusicBrainz tags


class Slots(asyncio.Semaphore):
    """The daemon's download slots: a semaphore that knows how many are in use."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size
        self.in_use = 0

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        self.in_use += 1
        return True

    def release(self) -> None:
        self.in_use -= 1
        super().release()


class Interrupted(TidalqError):
    """Raised by an album job that stopped starting tracks because the daemon drains."""


class AlbumFailed(DownloadError):
    """Raised when some tracks of an album failed; the others are in the library."""

    def __init__(self, message: str, code: str, retryable: bool,
                 tracks: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.code = FailureCode(code) if code in FailureCode.__members__ else FailureCode.INTERNAL
        self.retryable = retryable
        self.tracks = tracks


def sync_file(path: Path) -> None:
    """The file's bytes on disk, so that the rename that publishes it never publishes a
    file a power cut would leave empty."""
    with path.open("rb+") as fh:
        os.fsync(fh.fileno())


def move_into_place(staging: Path, target: Path, check_lease: Callable[[], None]) -> None:
    """Rename a synced staging file onto ``target``, if the lease still holds. A target
    on another filesystem gets a copy beside it first, so the final step is always one
    rename. Durable once the target's folder is synced."""
    target.parent.mkdir(parents=True, exist_ok=True)
    check_lease()
    try:
        os.replace(staging, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _publish_across_filesystems(staging, target, check_lease)


def _publish_across_filesystems(staging: Path, target: Path,
                                check_lease: Callable[[], None]) -> None:
    tmp = target.with_name(f".{secrets.token_hex(6)}.tidalq-tmp")
    try:
        with staging.open("rb") as src, tmp.open("xb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        check_lease()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    staging.unlink()


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(target: Path, data: bytes, staging_dir: Path) -> None:
    place_bytes(target, data, staging_dir)
    fsync_dir(target.parent)


def place_bytes(target: Path, data: bytes, staging_dir: Path) -> None:
    """Write ``data`` whole to ``target`` by rename; durable once the folder is synced."""
    staging_dir.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir / f"{secrets.token_hex(8)}.tmp{target.suffix}"
    tmp.write_bytes(data)
    sync_file(tmp)
    move_into_place(tmp, target, lambda: None)


def _naming_the_track(exc: DownloadError, staging: Path, target: Path) -> DownloadError:
    """Errors are read by users: they name the track's file, never a staging file."""
    text = str(exc).replace(str(staging), str(target)).replace(staging.name, target.name)
    exc.args = (text,)
    return exc


def _copy_if_ours(path: Path, staging: Path, meta: TrackMeta) -> bool:
    if tags.read_identity(path)[0] != str(meta.id):
        return False
    staging.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, staging)
    return True


def _add_and_sync(staging: Path, fields: dict[str, list[str]]) -> verify.AudioFacts:
    facts = tags.add_fields(staging, fields)
    sync_file(staging)
    return facts


def _replace_if_ours(staging: Path, target: Path, meta: TrackMeta) -> bool:
    """Under the folder's lock: the file still holds this track, so the copy replaces it."""
    if tags.read_identity(target)[0] != str(meta.id):
        return False
    move_into_place(staging, target, lambda: None)
    fsync_dir(target.parent)
    return True


class Pipeline:
    """Runs track and album jobs; shares the daemon's download slots."""

    def __init__(self, settings: Settings, upstream: Upstream, fetcher: Fetcher,
                 slots: Slots | asyncio.Semaphore | None = None,
                 staging_dir: Path | None = None, musicbrainz: MusicBrainz | None = None
                 ) -> None:
        self.settings = settings
        self.staging_dir = staging_dir or settings.staging_dir
        self.editions = Editions(settings.download_dir, settings.path_template)
        self.musicbrainz = musicbrainz
        self.upstream = upstream
        self.fetcher = fetcher
        self.slots = slots
        self.draining = False  # set on shutdown: albums finish running tracks, start no more
        self._covers: OrderedDict[str, bytes | None] = OrderedDict()

    # -- jobs --------------------------------------------------------------------------------
    async def run_track_job(self, job: Job, report: Report,
                            attempt: Attempt | None = None) -> dict[str, Any]:
        meta = await self.upstream.track_in_album(job.spec.number)
        attempt = attempt or Unleased(job.id)
        attempt.learned({"artistName": meta.album_artist, "albumTitle": meta.album_title,
                         "trackTitle": meta.full_title})

        def on_progress(fraction: float) -> None:
            report(fraction, None, False)

        mb = await self._musicbrainz_of_track(job, meta, attempt)
        async with self.editions.track(meta, job.spec.quality.extension) as edition:
            request = TrackRequest(meta, job.spec.quality, job.spec.min_quality, attempt,
                                   edition, job.spec.force, mb)
            return await self.track(request, on_progress)

    async def run_album_job(self, job: Job, report: Report,
                            attempt: Attempt | None = None) -> list[dict[str, Any]]:
        """Download the album's missing tracks; raises AlbumFailed if any track failed."""
        album = await self.upstream.album(job.spec.number)
        attempt = attempt or Unleased(job.id)
        attempt.learned({"artistName": album.artist, "albumTitle": album.title})
        entries = self._album_entries(album, job.track_progress)
        self._tell(report, album, entries, True)
        todo = [t for t in album.tracks if entries[t.id]["status"] != "completed"]
        earlier = [e.get("path") for e in entries.values()]
        mb = await self._musicbrainz_of_album(job, album, attempt)
        async with self.editions.album(album, job.spec.quality.extension, earlier) as edition:
            await self.run_lanes(todo, attempt.pausing, lambda t: self._album_track(
                TrackRequest(t, job.spec.quality, job.spec.min_quality, attempt, edition,
                             job.spec.force, mb.get(t.id)),
                album, entries, report))
        tracks = [entries[t.id] for t in album.tracks]
        if (self.draining or attempt.pausing()) and any(e["status"] == "queued" for e in tracks):
            self._tell(report, album, entries, True)
            why = "for shutdown" if self.draining else "paused"
            raise Interrupted(f"album {album.id}: stopped between tracks ({why})")
        for entry in tracks:
            if entry["status"] not in ("completed", "failed"):  # a lane died of a bug
                entry.update(status="failed", error="internal error", retryable=True,
                             failureCode=FailureCode.INTERNAL.value)
        failed = [e for e in tracks if e["status"] == "failed"]
        if failed:
            retryable = any(e.get("retryable") and e.get("attempts", 0) < job.max_attempts
                            for e in failed)
            raise AlbumFailed(f"{len(failed)} of {len(tracks)} tracks failed; first: "
                              f"{failed[0].get('error')}", failed[0].get("failureCode") or
                              "INTERNAL", retryable, tracks)
        return tracks

    # -- MusicBrainz ------------------------------------------------------------------------
    async def _musicbrainz_of_album(self, job: Job, album: AlbumMeta, attempt: Attempt
                                    ) -> dict[int, dict[str, list[str]]]:
        """MusicBrainz tags per track id, when the job asks (or the config does). A given
        release id is written even when MusicBrainz cannot be asked (the user chose it),
        but not when MusicBrainz says it is another release (see :mod:`mbmatch`)."""
        spec = job.spec
        given = spec.musicbrainz_release
        if not (spec.wants_musicbrainz or self.settings.musicbrainz == "auto"):
            return {}
        if self.musicbrainz is None:
            return {t.id: {"MUSICBRAINZ_ALBUMID": [given]} for t in album.tracks} \
                if given else {}
        match, why = await self.musicbrainz.match(album, given, spec.strict_musicbrainz)
        attempt.learned({"musicBrainzMatch": why[:1000],
                         **({"musicBrainzReleaseId": match.release_id} if match else {})})
        return match.tags if match is not None else {}

    async def _musicbrainz_of_track(self, job: Job, meta: TrackMeta, attempt: Attempt
                                    ) -> dict[str, list[str]] | None:
        if meta.album_id is None or not (job.spec.wants_musicbrainz
                                         or self.settings.musicbrainz == "auto"):
            return None
        try:
            album = await self.upstream.album(meta.album_id)
        except DownloadError as exc:
            log.warning("track %s: no album listing for MusicBrainz: %s", meta.id, exc)
            return None
        return (await self._musicbrainz_of_album(job, album, attempt)).get(meta.id)

    # -- albums ------------------------------------------------------------------------------
    @staticmethod
    def _album_entries(album: AlbumMeta, previous: list[dict[str, Any]]
                       ) -> dict[int, dict[str, Any]]:
        before = {e.get("trackId"): e for e in previous}
        entries = {}
        for t in album.tracks:
            old = before.get(t.id)
            if old and old.get("status") == "completed":
                entries[t.id] = dict(old)
                continue
            entries[t.id] = {"trackId": t.id, "title": t.full_title, "discNumber": t.disc_number,
                             "trackNumber": t.track_number, "status": "queued", "progress": 0.0,
                             "quality": None, "path": None, "error": None, "skipped": False,
                             "attempts": (old or {}).get("attempts", 0)}
        return entries

    def _tell(self, report: Report, album: AlbumMeta, entries: dict[int, dict[str, Any]],
              force: bool = False) -> None:
        """Report the album's state; computed only when the worker reads it."""
        report(lambda: self._album_fraction(album, entries), lambda: list(entries.values()),
               force)

    @staticmethod
    def _album_fraction(album: AlbumMeta, entries: dict[int, dict[str, Any]]) -> float:
        """Progress weighted by duration: bytes are proportional to it at one quality."""
        weights = {t.id: max(t.duration_s, 1.0) for t in album.tracks}
        total = sum(weights.values())
        return sum(weights[i] * float(e["progress"]) for i, e in entries.items()) / total

    async def _album_track(self, request: TrackRequest, album: AlbumMeta,
                           entries: dict[int, dict[str, Any]], report: Report) -> None:
        track = request.meta
        entry = entries[track.id]
        entry.update(status="processing", progress=0.0, error=None)
        entry["attempts"] = entry.get("attempts", 0) + 1
        self._tell(report, album, entries)

        def on_progress(fraction: float) -> None:
            entry["progress"] = round(fraction, 4)
            self._tell(report, album, entries)

        try:
            result = await self.track(request, on_progress)
        except DownloadError as exc:
            entry.update(status="failed", error=str(exc), failureCode=exc.code.value,
                         retryable=exc.retryable, progress=0.0)
            log.warning("album %s track %s failed: %s", album.id, track.id, exc)
        else:
            entry.update(status="completed", progress=1.0, path=result["path"],
                         quality=result["quality"], skipped=result["skipped"],
                         bytes=result["bytes"], replaced=result.get("replaced"))
            entry.pop("failureCode", None)
            entry.pop("retryable", None)
        # written with the next beat: a crash before it loses nothing, the retry finds the
        # track in the library (verified) and keeps it
        self._tell(report, album, entries)

    async def run_lanes(self, todo: list[TrackMeta], paused: Callable[[], bool],
                         run: Callable[[TrackMeta], Awaitable[None]]) -> None:
        """Run tracks in lanes: one on the slot the job holds, extra lanes each on a slot
        of their own, so the daemon never runs more downloads than it has slots. No lane
        starts a track once the daemon drains or the job is paused."""
        pending = list(reversed(todo))

        async def drain() -> None:
            while pending and not self.draining and not paused():
                await run(pending.pop())

        started: set[int] = set()

        async def extra_lane(n: int) -> None:
            assert self.slots is not None
            async with self.slots:
                started.add(n)
                await drain()

        extras = [asyncio.create_task(extra_lane(n))
                  for n in range(min(len(todo) - 1, self.settings.max_concurrent - 1))] \
            if self.slots is not None else []
        try:
            await drain()
            for n, task in enumerate(extras):
                if n not in started:
                    task.cancel()
            await asyncio.gather(*extras, return_exceptions=True)
        finally:
            for task in extras:
                task.cancel()

    # -- one track ---------------------------------------------------------------------------
    def _target(self, req: TrackRequest, extension: str) -> Path:
        return self.editions.target(req.meta, extension, req.edition)

    async def _settle_edition(self, req: TrackRequest, extension: str) -> TrackRequest:
        return replace(req, edition=await self.editions.settle(req.meta, extension,
                                                               req.edition))

    def _conflict(self, req: TrackRequest) -> str:
        return "overwrite" if req.force else self.settings.conflict

    async def _already_there(self, req: TrackRequest, target: Path, quality: Quality) -> bool:
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
        try:
            await verify.verify(target, meta.duration_s)
        except IntegrityFailed as exc:
            log.warning("%s is in the library but broken (%s); downloading it again",
                        target, exc)
            return False
        return True

    async def _skipped(self, target: Path, quality: Quality,
                       kept_better: bool = False) -> dict[str, Any]:
        facts = await asyncio.to_thread(verify.probe, target)
        return {"path": str(target), "quality": quality.value, "codec": facts.codec,
                "bitDepth": facts.bit_depth, "sampleRate": facts.sample_rate,
                "bytes": target.stat().st_size, "skipped": True, "keptBetter": kept_better,
                "replaced": None}

    async def track(self, req: TrackRequest, on_progress: Progress) -> dict[str, Any]:
        """One track into the library; a filesystem error is the job's error with a code,
        never an internal one."""
        try:
            result = await self._track(req, on_progress)
            if result["skipped"] and req.musicbrainz and not await asyncio.to_thread(
                    tags.has_fields, Path(result["path"]), req.musicbrainz):
                # a file already in the library gets the release the job names too
                await self.add_tags_in_place(req.meta, Path(result["path"]), req.musicbrainz)
            return result
        except OSError as exc:
            raise from_os_error(exc) from exc

    async def add_tags_in_place(self, meta: TrackMeta, path: Path,
                                fields: dict[str, list[str]]) -> bool:
        """Set these tags on a file in the library, published like a download: a copy in
        staging is tagged, synced and verified in full, and renamed over the file under
        the folder's lock. False when the file no longer holds this track."""
        staging = self.staging_dir / f"retag-{secrets.token_hex(6)}{path.suffix}"
        try:
            if not await asyncio.to_thread(_copy_if_ours, path, staging, meta):
                return False
            parsed = await asyncio.to_thread(_add_and_sync, staging, fields)
            await verify.verify(staging, meta.duration_s, parsed)
            return await self.editions.publish(
                meta, path, True,
                lambda to: asyncio.to_thread(_replace_if_ours, staging, to, meta))
        finally:
            staging.unlink(missing_ok=True)

    async def _track(self, req: TrackRequest, on_progress: Progress) -> dict[str, Any]:
        meta = req.meta
        req = await self._settle_edition(req, req.quality.extension)
        target = self._target(req, req.quality.extension)
        if await self._already_there(req, target, req.quality):
            return await self._skipped(target, req.quality)
        better = await self._better_version(req, target)
        if better is not None:
            return await self._skipped(better[0], better[1], kept_better=True)
        served = await self.upstream.stream(meta.id, req.quality)
        if req.min_quality is not None and served.quality.rank < req.min_quality.rank:
            raise QualityUnavailable(f"the upstream serves {served.quality.value}, below the "
                                     f"minimum {req.min_quality.value}")
        extension = ".flac" if served.stream.codec == "flac" else ".m4a"
        if extension != target.suffix:
            req = await self._settle_edition(req, extension)
            target = self._target(req, extension)
            if await self._already_there(req, target, served.quality):
                return await self._skipped(target, served.quality)
        staging = self.staging_dir / f"{req.attempt.key}-{meta.id}.part{extension}"
        return await self._download_and_publish(req, served, staging, target, on_progress)

    def _other_versions(self, target: Path, meta: TrackMeta) -> list[tuple[Path, Quality]]:
        """This track's files beside ``target`` in the other container (.m4a/.flac)."""
        found = []
        for other in (target.with_suffix(".flac"), target.with_suffix(".m4a")):
            if other == target or not other.exists():
                continue
            track_id, quality = tags.read_identity(other)
            if track_id == str(meta.id) and quality is not None \
                    and quality in Quality.__members__:
                found.append((other, Quality(quality)))
        return found

    async def _better_version(self, req: TrackRequest, target: Path
                              ) -> tuple[Path, Quality] | None:
        """A file of this track at a quality at least as good, in the other container:
        a downgrade keeps it (one file per track), unless the job forces."""
        if req.force:
            return None
        for other, quality in await asyncio.to_thread(self._other_versions, target, req.meta):
            if quality.rank >= req.quality.rank and \
                    await self._already_there(req, other, quality):
                return other, quality
        return None

    def _drop_worse_versions(self, published: Path, meta: TrackMeta, quality: Quality,
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

    async def _place_unless_better(self, req: TrackRequest, staging: Path, to: Path
                                   ) -> tuple[Path, dict[str, Any] | None]:
        """Under the folder's lock, the checks this job made before it downloaded, made
        again: a file of this track at least as good that came meanwhile (its job at
        another quality published it) is kept, and this job's result says so; else the
        file moves to ``to``. Returns where the track is, and the result if skipped."""
        if await asyncio.to_thread(self._move_if_alone, staging, to, req):
            return to, None
        if await self._already_there(req, to, req.quality):
            return to, await self._skipped(to, req.quality)
        better = await self._better_version(req, to)
        if better is not None:
            return better[0], await self._skipped(*better, kept_better=True)
        await asyncio.to_thread(move_into_place, staging, to, req.attempt.check_lease)
        return to, None

    @staticmethod
    def _move_if_alone(staging: Path, to: Path, req: TrackRequest) -> bool:
        """The common case in one trip off the loop: no file at ``to`` nor beside it in
        the other container, so there is nothing to weigh and the file moves in."""
        if any(p.exists() for p in (to, to.with_suffix(".flac"), to.with_suffix(".m4a"))):
            return False
        move_into_place(staging, to, req.attempt.check_lease)
        return True

    async def _download_and_publish(self, req: TrackRequest, served: Served, staging: Path,
                                    target: Path,
                                    on_progress: Progress
                                    ) -> dict[str, Any]:
        try:
            staging.parent.mkdir(parents=True, exist_ok=True)
            served = await self._fetch_fresh(req, served, staging, on_progress)
            extras = await asyncio.gather(self.cover(req.meta), self.upstream.lyrics(req.meta.id))
            cover, lyrics = extras
            data = tags.TagData(req.meta, served.quality.value, served.replay_gain, cover,
                                lyrics.text if lyrics else None, req.musicbrainz)
            parsed, size = await asyncio.to_thread(self._tag_and_sync, staging, data)
            facts = await verify.verify(staging, req.meta.duration_s, parsed)
            if await self._same_audio(req, target, facts):
                staging.unlink()
                replaced = await asyncio.to_thread(self._drop_worse_versions, target,
                                                   req.meta, served.quality, req.force)
                return {**await self._skipped(target, served.quality), "replaced": replaced}
            target, kept = await self.editions.publish(
                req.meta, target, req.edition,
                lambda to: self._place_unless_better(req, staging, to))
            if kept is not None:
                return kept
            replaced = await asyncio.to_thread(self._settle_in, target, req, served.quality,
                                               cover, lyrics.synced if lyrics else None)
        except DownloadError as exc:
            raise _naming_the_track(exc, staging, target) from None
        except OSError as exc:
            raise _naming_the_track(from_os_error(exc), staging, target) from exc
        finally:
            staging.unlink(missing_ok=True)  # this attempt's own file: no one else's
        return {"path": str(target), "quality": served.quality.value, "codec": facts.codec,
                "bitDepth": facts.bit_depth, "sampleRate": facts.sample_rate, "bytes": size,
                "skipped": False, "keptBetter": False, "replaced": replaced}

    @staticmethod
    def _tag_and_sync(staging: Path, data: tags.TagData) -> tuple[verify.AudioFacts, int]:
        """Tag the staging file and put it on disk (one trip off the loop); returns what
        tagging parsed of the stream, and the file's size."""
        facts = tags.write_tags(staging, data)
        sync_file(staging)
        return facts, staging.stat().st_size

    async def _fetch_fresh(self, req: TrackRequest, served: Served, staging: Path,
                           on_progress: Progress) -> Served:
        """Fetch the stream; a CDN 403 (expired signature) asks the API again."""
        def progress(done: int, total: int | None) -> None:
            if total:
                on_progress(min(0.99, done / total))

        for attempt in range(FRESH_MANIFEST_TRIES):
            try:
                if isinstance(served.stream, DashStream):
                    await self.fetcher.fetch_dash(served.stream, staging, progress)
                else:
                    await self.fetcher.fetch_file(served.stream.url, staging, progress)
                return served
            except CdnExpired:
                if attempt == FRESH_MANIFEST_TRIES - 1:
                    raise
                log.info("CDN URL for track %s expired; asking for a fresh one", req.meta.id)
                staging.unlink(missing_ok=True)
                served = await self.upstream.stream(req.meta.id, req.quality)
        raise AssertionError("unreachable")

    async def _same_audio(self, req: TrackRequest, target: Path,
                          facts: verify.AudioFacts) -> bool:
        """overwrite_if_different: the same decoded audio is not replaced. The MD5 in a
        header proves nothing about the frames after it, so the file must also verify."""
        if self._conflict(req) != "overwrite_if_different" or facts.md5 is None:
            return False
        if not target.exists() or await asyncio.to_thread(tags.flac_md5, target) != facts.md5:
            return False
        try:
            await verify.verify(target, req.meta.duration_s)
        except IntegrityFailed:
            return False
        return True

    async def cover(self, meta: TrackMeta) -> bytes | None:
        """The album's 1280×1280 cover, fetched once per album (missing covers are fine)."""
        if not meta.album_cover:
            return None
        if meta.album_cover in self._covers:
            return self._covers[meta.album_cover]
        url = self.upstream.cover_url(meta.album_cover)
        data: bytes | None = None
        try:
            async with self.fetcher.session.get(url, timeout=self.fetcher.timeout) as resp:
                if resp.status == 200:
                    data = await read_capped(resp, 8 << 20)
        except Exception as exc:  # a cover is decoration: never fail a track for it
            log.warning("cover %s could not be fetched: %s", url, exc)
        self._covers[meta.album_cover] = data
        while len(self._covers) > 32:
            self._covers.popitem(last=False)
        return data

    def _settle_in(self, target: Path, req: TrackRequest, quality: Quality,
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
            return self._drop_worse_versions(target, req.meta, quality, req.force)
        finally:
            fsync_dir(target.parent)  # the track's rename is durable even if an extra failed
