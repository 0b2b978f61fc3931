"""Re-tagging a finished job's files with the MusicBrainz release chosen after it ended
(the web app's ``set_musicbrainz_release`` on a completed job).

The release is matched to the album as a download would match it (:mod:`tidalq.upstream.
mbmatch`: another edition is refused), then each file of the job that still holds its
track gets the release's tags the way a download is published: a copy in staging is
tagged, synced and verified in full, and renamed over the file under the folder's publish
lock. A file that changed since (another track, or gone) is left alone and counted.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tidalq.errors import DownloadError, TidalqError
from tidalq.models import AlbumMeta, Job
from tidalq.pipeline import Pipeline

log = logging.getLogger(__name__)

RETAGGABLE = ("track", "album")


def files_of(job: Job) -> dict[int, Path]:
    """The library files a finished job placed (or kept), by TIDAL track id."""
    found: dict[int, Path] = {}
    if job.spec.type == "track" and job.result and job.result.get("path"):
        found[job.spec.number] = Path(job.result["path"])
    for entry in job.track_progress or ():
        if entry.get("status") == "completed" and entry.get("path") and entry.get("trackId"):
            found[int(entry["trackId"])] = Path(entry["path"])
    return found


async def _album_of(pipeline: Pipeline, job: Job) -> AlbumMeta:
    if job.spec.type == "album":
        return await pipeline.upstream.album(job.spec.number)
    meta = await pipeline.upstream.track_in_album(job.spec.number)
    if meta.album_id is None:
        raise DownloadError(f"track {meta.id} lists no album to match a release to")
    return await pipeline.upstream.album(meta.album_id)


async def retag_with_release(pipeline: Pipeline, job: Job) -> str:
    """Write the job's ``musicBrainzReleaseId`` into its files; returns the sentence for
    the job's ``musicBrainzMatch``."""
    release = job.spec.musicbrainz_release
    if release is None or job.spec.type not in RETAGGABLE:
        return "a MusicBrainz release belongs to a track or an album job: nothing re-tagged"
    if pipeline.musicbrainz is None:
        return "MusicBrainz is not configured: nothing re-tagged"
    files = files_of(job)
    try:
        album = await _album_of(pipeline, job)
    except TidalqError as exc:
        return f"the album could not be listed ({exc}): nothing re-tagged"
    match, why = await pipeline.musicbrainz.match(album, release, job.spec.strict_musicbrainz)
    if match is None:
        return f"{why}; nothing re-tagged"
    metas = {t.id: t for t in album.tracks}
    written = 0
    for track_id, path in files.items():
        fields = match.tags.get(track_id)
        if fields is None or track_id not in metas:
            continue
        try:
            written += await pipeline.publisher.add_tags_in_place(metas[track_id], path, fields)
        except TidalqError as exc:
            log.warning("job %s: re-tagging %s failed: %s", job.id, path, exc)
    return f"{why}; re-tagged {written} of {len(files)} files"
