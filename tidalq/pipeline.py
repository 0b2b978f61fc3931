"""The work a job exists for: one track, or every track of an album, into the library.

One track: resolve metadata and the stream → decide the target path → apply the conflict
policy (an identical file means no download at all) → into staging on the library's
filesystem, tagged, synced and verified (:mod:`tidalq.staging`) → publish
(``os.replace``, then one fsync of the folder for the track, its ``.lrc`` and the album's
``cover.jpg``). One album: its tracks through the same steps, several at once within the
daemon's download slots; publishing is per track and additive; a retry skips the tracks
already done.

The pipeline keeps the order of these stages and nothing else: the catalogue is an
:class:`~tidalq.upstream.base.Upstream`, and where a file goes and how it gets there is the
:class:`~tidalq.library.publisher.Publisher`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from tidalq.attempt import Attempt, Lazy, TrackRequest, Unleased
from tidalq.config import Settings
from tidalq.errors import (
    DownloadError,
    FailureCode,
    QualityUnavailable,
    TidalqError,
    from_os_error,
)
from tidalq.library.locks import FolderLocks
from tidalq.library.publisher import Publisher
from tidalq.media import tags
from tidalq.media.fetch import Fetcher
from tidalq.models import AlbumMeta, Job, TrackMeta
from tidalq.staging import Extras, Progress, Stager
from tidalq.upstream.base import Upstream
from tidalq.upstream.manifest import Served
from tidalq.upstream.musicbrainz import MusicBrainz

log = logging.getLogger(__name__)


async def _nothing() -> None:
    return None


# report(progress, album track states or None, force): records the latest state; the worker
# reads and writes it to the store at most every half second, and at once when forced.
Report = Callable[[Lazy[float], Lazy[list[dict[str, Any]]] | None, bool], None]


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


def _naming_the_track(exc: DownloadError, staging: Path, target: Path) -> DownloadError:
    """Errors are read by users: they name the track's file, never a staging file."""
    text = str(exc).replace(str(staging), str(target)).replace(staging.name, target.name)
    exc.args = (text,)
    return exc


def album_entries(album: AlbumMeta, previous: list[dict[str, Any]]
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


def album_fraction(album: AlbumMeta, entries: dict[int, dict[str, Any]]) -> float:
    """Progress weighted by duration: bytes are proportional to it at one quality."""
    weights = {t.id: max(t.duration_s, 1.0) for t in album.tracks}
    total = sum(weights.values())
    return sum(weights[i] * float(e["progress"]) for i, e in entries.items()) / total


THUMBNAIL_PX = 320  # a size TIDAL's image host serves


class Pipeline:
    """Runs track and album jobs; shares the daemon's download slots."""

    def __init__(self, settings: Settings, upstream: Upstream, fetcher: Fetcher,
                 slots: Slots | asyncio.Semaphore | None = None,
                 staging_dir: Path | None = None, musicbrainz: MusicBrainz | None = None,
                 locks: FolderLocks | None = None) -> None:
        self.settings = settings
        self.staging_dir = staging_dir or settings.staging_dir
        self.publisher = Publisher(settings, self.staging_dir, locks)
        self.musicbrainz = musicbrainz
        self.upstream = upstream
        self.fetcher = fetcher
        self.stager = Stager(upstream, fetcher)
        self.slots = slots
        self.draining = False  # set on shutdown: albums finish running tracks, start no more

    # -- jobs --------------------------------------------------------------------------------
    async def run_track_job(self, job: Job, report: Report,
                            attempt: Attempt | None = None) -> dict[str, Any]:
        meta = await self.upstream.track_in_album(job.spec.number)
        attempt = attempt or Unleased(job.id)
        attempt.learned({"artistName": meta.album_artist, "albumTitle": meta.album_title,
                         "trackTitle": meta.full_title, **self._cover_of(meta.album_cover)})

        def on_progress(fraction: float) -> None:
            report(fraction, None, False)

        mb = await self._musicbrainz_of_track(job, meta, attempt)
        async with self.publisher.editions.track(meta, job.spec.quality.extension) as edition:
            request = TrackRequest(meta, job.spec.quality, job.spec.min_quality, attempt,
                                   edition, job.spec.force, mb)
            return await self.track(request, on_progress)

    def _cover_of(self, cover: str | None) -> dict[str, str]:
        """The job's cover thumbnail for the page and web clients (``coverUrl``)."""
        return {"coverUrl": self.upstream.cover_url(cover, THUMBNAIL_PX)} if cover else {}

    async def run_album_job(self, job: Job, report: Report,
                            attempt: Attempt | None = None) -> list[dict[str, Any]]:
        """Download the album's missing tracks; raises AlbumFailed if any track failed."""
        album = await self.upstream.album(job.spec.number)
        attempt = attempt or Unleased(job.id)
        attempt.learned({"artistName": album.artist, "albumTitle": album.title,
                         **self._cover_of(album.cover)})
        entries = album_entries(album, job.track_progress)
        self._tell(report, album, entries, True)
        todo = [t for t in album.tracks if entries[t.id]["status"] != "completed"]
        earlier = [e.get("path") for e in entries.values()]
        mb = await self._musicbrainz_of_album(job, album, attempt)
        editions = self.publisher.editions
        async with editions.album(album, job.spec.quality.extension, earlier) as edition:
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
    def _tell(self, report: Report, album: AlbumMeta, entries: dict[int, dict[str, Any]],
              force: bool = False) -> None:
        """Report the album's state; computed only when the worker reads it."""
        report(lambda: album_fraction(album, entries), lambda: list(entries.values()),
               force)

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
    async def track(self, req: TrackRequest, on_progress: Progress) -> dict[str, Any]:
        """One track into the library; a filesystem error is the job's error with a code,
        never an internal one."""
        try:
            result = await self._track(req, on_progress)
            if result["skipped"] and req.musicbrainz and not await asyncio.to_thread(
                    tags.has_fields, Path(result["path"]), req.musicbrainz):
                # a file already in the library gets the release the job names too
                await self.publisher.add_tags_in_place(req.meta, Path(result["path"]),
                                                       req.musicbrainz)
            return result
        except OSError as exc:
            raise from_os_error(exc) from exc

    async def _track(self, req: TrackRequest, on_progress: Progress) -> dict[str, Any]:
        free = await self.publisher.free_way(req, req.quality.extension)
        if free is not None:
            return await self._download(free, on_progress)
        if not req.looked:
            kept = await self.publisher.kept(req,
                                             self.publisher.target(req, req.quality.extension))
            if kept is not None:
                return kept
        req = await self.publisher.settle_edition(req, req.quality.extension)
        target = self.publisher.target(req, req.quality.extension)
        if await self.publisher.already_there(req, target, req.quality):
            return await self.publisher.skipped(target, req.quality)
        better = await self.publisher.better_version(req, target)
        if better is not None:
            return await self.publisher.skipped(better[0], better[1], kept_better=True)
        return await self._download(req, on_progress)

    async def _download(self, req: TrackRequest, on_progress: Progress) -> dict[str, Any]:
        """Fetch, verify and publish a track whose folder is settled and which the
        conflict policy downloads."""
        meta = req.meta
        target = self.publisher.target(req, req.quality.extension)
        # the cover and lyrics are asked beside the stream: the file is written with them
        served, extras = await asyncio.gather(self.upstream.stream(meta.id, req.quality),
                                              self._extras(meta))
        if req.min_quality is not None and served.quality.rank < req.min_quality.rank:
            raise QualityUnavailable(f"the upstream serves {served.quality.value}, below the "
                                     f"minimum {req.min_quality.value}")
        extension = ".flac" if served.stream.codec == "flac" else ".m4a"
        if extension != target.suffix:
            req = await self.publisher.settle_edition(req, extension)
            target = self.publisher.target(req, extension)
            if await self.publisher.already_there(req, target, served.quality):
                return await self.publisher.skipped(target, served.quality)
        staging = self.staging_dir / f"{req.attempt.key}-{meta.id}.part{extension}"
        return await self._download_and_publish(req, served, staging, target, extras,
                                                on_progress)

    async def _download_and_publish(self, req: TrackRequest, served: Served, staging: Path,
                                    target: Path, extras: Extras,
                                    on_progress: Progress) -> dict[str, Any]:
        try:
            staged = await self.stager.stage(req, served, staging, extras, on_progress)
            served, facts = staged.served, staged.facts
            if await self.publisher.same_audio(req, target, facts):
                staging.unlink()
                replaced = await asyncio.to_thread(self.publisher.drop_worse_versions, target,
                                                   req.meta, served.quality, req.force)
                return {**await self.publisher.skipped(target, served.quality),
                        "replaced": replaced}
            await req.attempt.confirm_lease()  # resumed past its deadline: renewed first
            target, kept = await self.publisher.publish(req, staging, target)
            if kept is not None:
                return kept
            replaced = await asyncio.to_thread(
                self.publisher.settle_in, target, req, served.quality, extras.cover,
                extras.lyrics.synced if extras.lyrics else None)
        except DownloadError as exc:
            raise _naming_the_track(exc, staging, target) from None
        except OSError as exc:
            raise _naming_the_track(from_os_error(exc), staging, target) from exc
        finally:
            staging.unlink(missing_ok=True)  # this attempt's own file: no one else's
        return {"path": str(target), "quality": served.quality.value, "codec": facts.codec,
                "bitDepth": facts.bit_depth, "sampleRate": facts.sample_rate,
                "bytes": staged.size, "skipped": False, "keptBetter": False,
                "replaced": replaced}

    async def _extras(self, meta: TrackMeta) -> Extras:
        """The cover (once per album) and, when the settings want them, the lyrics."""
        cover, lyrics = await asyncio.gather(
            self.stager.cover(meta),
            self.upstream.lyrics(meta.id) if self.settings.lyrics else _nothing())
        return Extras(cover, lyrics)
