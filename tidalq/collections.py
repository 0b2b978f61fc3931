"""Collections: playlists and mixes as one job with an entry per item, and an artist's
discography expanded into album jobs.

- A playlist or mix entry is one playable item in playlist order. Every track lands at its
  normal album path through :meth:`Pipeline.track` (so a track already in the library is
  neither downloaded again nor duplicated, and a track listed twice is fetched once). An
  item that cannot be had (``PREVIEW_ONLY``, ``NOT_FOUND``) is reported on its entry and
  left out of the ``.m3u8``; it fails nothing else. Other failures fail the job, and a
  retry fetches only what is missing. The job writes ``{playlist_dir}/{title}.m3u8``.
- An artist job submits one album job per release its ``include`` selects (an equal live
  job is reused), records them as its entries at once (a restart reuses them), gives its
  download slot back, and ends when they end, with counts.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tidalq.attempt import Attempt, TrackRequest
from tidalq.config import Settings
from tidalq.errors import DownloadError, FailureCode, PreviewOnly, UpstreamNotFound
from tidalq.library.files import write_atomically
from tidalq.media.paths import sanitize
from tidalq.models import AlbumMeta, Collection, Job, JobSpec, TrackMeta
from tidalq.pipeline import AlbumFailed, Interrupted, Pipeline, Report

log = logging.getLogger(__name__)

UNAVAILABLE = {FailureCode.PREVIEW_ONLY.value, FailureCode.NOT_FOUND.value}
FINISHED = {"completed", "failed", "cancelled"}


class Children(Protocol):
    """What an artist job needs of the queue: the worker gives it the store."""

    async def submit(self, spec: JobSpec) -> str: ...

    async def statuses(self, job_ids: list[str]) -> dict[str, str]: ...

    async def changed(self, timeout_s: float) -> None: ...


# -- pure parts -----------------------------------------------------------------------------

def collection_entries(collection: Collection, previous: list[dict[str, Any]]
                       ) -> list[dict[str, Any]]:
    """One entry per playable item, in order; entries a previous attempt completed stay."""
    before = {(e.get("position"), e.get("trackId")): e for e in previous}
    entries = []
    for position, track in enumerate(collection.tracks, 1):
        old = before.get((position, track.id))
        numbers = {"discNumber": track.disc_number, "trackNumber": track.track_number}
        if old and old.get("status") == "completed":
            entries.append({**numbers, **old})  # entries of older versions lack the numbers
            continue
        entries.append({"position": position, "trackId": track.id, "title": track.full_title,
                        "artist": track.artist_name, "durationS": track.duration_s, **numbers,
                        "status": "queued", "progress": 0.0, "quality": None, "path": None,
                        "error": None, "skipped": False})
    return entries


def m3u8(entries: list[dict[str, Any]], folder: Path) -> str:
    """``#EXTM3U`` with the completed entries in order, paths relative to ``folder``."""
    lines = ["#EXTM3U"]
    for e in entries:
        if e.get("status") == "completed" and e.get("path"):
            lines.append(f"#EXTINF:{round(float(e.get('durationS') or 0))},"
                         f"{e.get('artist')} - {e.get('title')}")
            lines.append(os.path.relpath(e["path"], folder).replace(os.sep, "/"))
    return "\n".join(lines) + "\n"


def outcome(entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """(failed entries that count, whether another attempt may help). Items that cannot
    be had do not count."""
    failed = [e for e in entries if e.get("status") == "failed"
              and e.get("failureCode") not in UNAVAILABLE]
    return failed, any(e.get("retryable") for e in failed)


# -- running --------------------------------------------------------------------------------

@dataclass
class CollectionRunner:
    """Runs one collection or artist job (made per job: its album cache is the run's)."""

    pipeline: Pipeline
    settings: Settings
    _albums: dict[int, AlbumMeta | None] = field(default_factory=dict)
    _album_locks: dict[int, asyncio.Lock] = field(default_factory=dict)

    async def run_collection_job(self, job: Job, report: Report, attempt: Attempt
                                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A playlist or mix job: returns (result, entries); AlbumFailed when tracks
        failed that another attempt may get."""
        upstream = self.pipeline.upstream
        ref = str(job.spec.tidal_id)
        collection = await (upstream.playlist(ref) if job.spec.type == "playlist"
                            else upstream.mix(ref))
        attempt.learned({"albumTitle": collection.title})
        entries = collection_entries(collection, job.track_progress)

        def fraction() -> float:
            return sum(float(e["progress"]) for e in entries) / max(1, len(entries))

        report(fraction, entries, True)
        todo = list({e["trackId"]: track for e, track in zip(entries, collection.tracks,
                                                             strict=True)
                     if e["status"] != "completed"}.values())
        await self.pipeline.run_lanes(todo, attempt.pausing, lambda t: self._entry_track(
            job, t, entries, attempt, lambda: report(fraction, entries, False)))
        if (self.pipeline.draining or attempt.pausing()) and \
                any(e["status"] == "queued" for e in entries):
            report(fraction, entries, True)
            raise Interrupted(f"{job.spec.type} {ref}: stopped between tracks")
        path = await asyncio.to_thread(self._write_playlist, collection.title, entries)
        result = {"playlistPath": str(path.relative_to(self.settings.download_dir)),
                  "tracks": len(entries), "videosSkipped": collection.videos,
                  "unavailable": sum(1 for e in entries if e.get("failureCode") in UNAVAILABLE)}
        failed, retryable = outcome(entries)
        if failed:
            raise AlbumFailed(f"{len(failed)} of {len(entries)} tracks failed; first: "
                              f"{failed[0].get('error')}", failed[0].get("failureCode")
                              or "INTERNAL", retryable, entries)
        return result, entries

    async def _entry_track(self, job: Job, listed: TrackMeta, entries: list[dict[str, Any]],
                           attempt: Attempt, progress: Callable[[], None]) -> None:
        """One track of the collection, for every entry that lists it."""
        mine = [e for e in entries if e["trackId"] == listed.id]
        for e in mine:
            e.update(status="processing", error=None)
        progress()

        def on_progress(value: float) -> None:
            for e in mine:
                e["progress"] = round(value, 4)
            progress()

        try:
            result = await self._fetch(job, listed, attempt, on_progress)
        except DownloadError as exc:
            unavailable = isinstance(exc, PreviewOnly | UpstreamNotFound)
            for e in mine:
                e.update(status="failed", error=str(exc), failureCode=exc.code.value,
                         retryable=exc.retryable and not unavailable, progress=0.0)
            log.warning("%s %s: track %s failed: %s", job.spec.type, job.spec.tidal_id,
                        listed.id, exc)
        else:
            for e in mine:
                e.update(status="completed", progress=1.0, path=result["path"],
                         quality=result["quality"], skipped=result["skipped"],
                         bytes=result["bytes"])
                e.pop("failureCode", None)
                e.pop("retryable", None)
        progress()  # written with the next beat (a retry keeps what the library has)

    async def _fetch(self, job: Job, listed: TrackMeta, attempt: Attempt,
                     on_progress: Callable[[float], None]) -> dict[str, Any]:
        meta = await self._as_on_its_album(listed)
        spec = job.spec
        kept = await self.pipeline.publisher.kept_anywhere(meta, spec.quality, spec.force)
        if kept is not None:  # a re-run: the verified file is there, nothing to decide
            return kept
        async with self.pipeline.publisher.editions.track(meta, spec.quality.extension) as edition:
            request = TrackRequest(meta, spec.quality, spec.min_quality, attempt, edition,
                                   spec.force, looked=True)
            return await self.pipeline.track(request, on_progress)

    async def _as_on_its_album(self, listed: TrackMeta) -> TrackMeta:
        """A playlist lists a track without its album's artist and disc count: name and
        tag it as its album job would. Each album is listed once per run, however many
        of its tracks the playlist holds."""
        upstream = self.pipeline.upstream
        album_id = listed.album_id
        if album_id is None:
            return await upstream.track_in_album(listed.id)
        async with self._album_locks.setdefault(album_id, asyncio.Lock()):
            if album_id not in self._albums:
                try:
                    self._albums[album_id] = await upstream.album(album_id)
                except DownloadError as exc:
                    if exc.retryable:
                        raise
                    self._albums[album_id] = None
        album = self._albums[album_id]
        found = next((t for t in album.tracks if t.id == listed.id), None) if album else None
        return found or await upstream.track_in_album(listed.id)

    def _write_playlist(self, title: str, entries: list[dict[str, Any]]) -> Path:
        folder = self.settings.download_dir / self.settings.playlist_dir
        target = folder / sanitize(title, ".m3u8")
        write_atomically(target, m3u8(entries, folder).encode(), self.pipeline.staging_dir)
        return target

    # -- artists --------------------------------------------------------------------------
    async def run_artist_job(self, job: Job, report: Report, attempt: Attempt,
                             children: Children, give_back_slot: Callable[[], None]
                             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        discography = await self.pipeline.upstream.discography(job.spec.number,
                                                               job.spec.include)
        attempt.learned({"artistName": discography.artist})
        entries = [dict(e) for e in job.track_progress]
        known = {e.get("albumId") for e in entries}
        for release in discography.releases:
            if release.album_id in known:
                continue
            child = await children.submit(JobSpec("album", release.album_id, job.spec.quality,
                                                  job.spec.min_quality, force=job.spec.force))
            entries.append({"albumId": release.album_id, "title": release.title,
                            "kind": release.kind, "jobId": child, "status": "queued"})
        report(0.0, entries, True)  # the children are durable before anything waits
        give_back_slot()  # waiting for albums downloads nothing
        await self._wait_for(entries, children, report)
        return self._artist_result(job, discography.complete, entries)

    @staticmethod
    async def _wait_for(entries: list[dict[str, Any]], children: Children,
                        report: Report) -> None:
        while True:
            statuses = await children.statuses([e["jobId"] for e in entries])
            for e in entries:
                e["status"] = statuses.get(e["jobId"], "removed")
            ended = sum(1 for e in entries if e["status"] in FINISHED | {"removed"})
            report(ended / max(1, len(entries)), entries, False)
            if ended == len(entries):
                return
            await children.changed(5.0)

    @staticmethod
    def _artist_result(job: Job, complete: bool, entries: list[dict[str, Any]]
                       ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        counts = {s: sum(1 for e in entries if e["status"] == s)
                  for s in ("completed", "failed", "cancelled", "removed")}
        result: dict[str, Any] = {"children": [e["jobId"] for e in entries],
                                  "albums": len(entries), **counts,
                                  "complete": complete}
        if not complete:
            result["warning"] = ("the server offered only its plain listing (at most 100 "
                                 "releases, no compilations): the discography may be "
                                 "incomplete")
        if counts["failed"]:
            raise AlbumFailed(f"{counts['failed']} of {len(entries)} albums failed",
                              FailureCode.ALBUMS_FAILED.value, False, entries)
        return result, entries

