"""The work a job exists for: one track, or every track of an album, into the library.

One track: resolve metadata and the stream → decide the target path → apply the conflict
policy (an identical file means no download at all) → stream into staging on the
library's filesystem (DASH remuxed to FLAC) → tag and fsync → verify → publish
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
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from tidalq.attempt import Attempt, Lazy, TrackRequest, Unleased
from tidalq.config import Settings
from tidalq.errors import (
    CdnExpired,
    DownloadError,
    FailureCode,
    QualityUnavailable,
    TidalqError,
    from_os_error,
)
from tidalq.library.files import sync_file
from tidalq.library.locks import FolderLocks
from tidalq.library.publisher import Publisher
from tidalq.media import tags, verify
from tidalq.media.fetch import Fetcher
from tidalq.models import AlbumMeta, Job, TrackMeta
from tidalq.upstream.base import Lyrics, Upstream
from tidalq.upstream.http import read_capped
from tidalq.upstream.manifest import DashStream, Served
from tidalq.upstream.musicbrainz import MusicBrainz

log = logging.getLogger(__name__)


# report(progress, album track states or None, force): records the latest state; the worker
# reads and writes it to the store at most every half second, and at once when forced.
Report = Callable[[Lazy[float], Lazy[list[dict[str, Any]]] | None, bool], None]
Progress = Callable[[float], None]
FRESH_MANIFEST_TRIES = 3


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
        self.slots = slots
        self.draining = False  # set on shutdown: albums finish running tracks, start no more
        self._covers: OrderedDict[str, bytes | None] = OrderedDict()

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

    async def _lyrics(self, track_id: int) -> Lyrics | None:
        """The track's lyrics when the settings want them (one more upstream request)."""
        return await self.upstream.lyrics(track_id) if self.settings.lyrics else None

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
        meta = req.meta
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
        served = await self.upstream.stream(meta.id, req.quality)
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
        return await self._download_and_publish(req, served, staging, target, on_progress)

    async def _download_and_publish(self, req: TrackRequest, served: Served, staging: Path,
                                    target: Path,
                                    on_progress: Progress
                                    ) -> dict[str, Any]:
        try:
            staging.parent.mkdir(parents=True, exist_ok=True)
            served = await self._fetch_fresh(req, served, staging, on_progress)
            extras = await asyncio.gather(self.cover(req.meta), self._lyrics(req.meta.id))
            cover, lyrics = extras
            data = tags.TagData(req.meta, served.quality.value, served.replay_gain, cover,
                                lyrics.text if lyrics else None, req.musicbrainz)
            parsed, size = await asyncio.to_thread(self._tag_and_sync, staging, data)
            facts = await verify.verify(staging, req.meta.duration_s, parsed)
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
            replaced = await asyncio.to_thread(self.publisher.settle_in, target, req,
                                               served.quality, cover,
                                               lyrics.synced if lyrics else None)
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
            req.attempt.fetched(req.meta.id, done, total)
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
