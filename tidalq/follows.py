"""Following: the daemon keeps followed artists, playlists and mixes, and the TIDAL
account's favourites, up to date by itself.

Follows live in the job store, so every daemon on one store shares them. A check is
claimed under a lease like a job (:meth:`JobStore.claim_follow`): each follow is checked
by exactly one daemon per ``follow_interval`` (with ±10 % jitter so a big list spreads
out), and a daemon that dies mid-check frees it when the lease runs out.

What a check submits is what is new since the last one: new releases of an artist (after
its include filter) as album jobs; for a playlist or mix with new entries, a playlist job
(which downloads only what is missing and rewrites the ``.m3u8``, so removed entries leave
it). Favourites: new favourite tracks and albums as jobs, new favourite playlists and
artists as follows of their own. The first check only records what is there, unless the
follow asked for ``backfill`` (favourites do unless told not to). A failing check (upstream
down, playlist gone private) is recorded in the follow and tried again with backoff, never
dropped.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from tidalq.config import Settings
from tidalq.errors import DownloadError, StoreUnavailable
from tidalq.models import Follow, JobSpec, now_ms
from tidalq.store.base import JobStore
from tidalq.terms import Quality
from tidalq.upstream.base import Upstream

log = logging.getLogger(__name__)

Key = TypeVar("Key", int, str, int | str)
ARTIST_INCLUDE = ("albums", "eps", "singles")  # what a followed favourite artist brings

CHECK_LEASE_S = 300.0
RETRY_BASE_S = 60.0
IDLE_POLL_S = 5.0


def new_items(follow: Follow, current: Sequence[Key]) -> list[Key]:
    """What a check should act on: everything on the first check with backfill, nothing
    else on the first check, and afterwards what was not there before."""
    if follow.seen is None:
        return list(current) if follow.backfill else []
    before = set(follow.seen)
    return [i for i in current if i not in before]


def next_check(follow: Follow, interval_s: float, now: int, failed: bool,
               rng: random.Random) -> int:
    if failed:  # 1, 2, 4 … minutes, never later than the regular interval
        wait = min(interval_s, RETRY_BASE_S * 2 ** max(0, follow.failures - 1))
    else:
        wait = interval_s * rng.uniform(0.9, 1.1)
    return now + int(wait * 1000)


@dataclass
class FollowChecker:
    """The daemon's room for follows: claims due checks and runs them."""

    store: JobStore
    upstream: Upstream
    settings: Settings
    rng: random.Random = random.Random()  # noqa: RUF009 - one generator, deliberately shared

    async def run(self) -> None:
        while True:
            try:
                claimed = await self.store.claim_follow(CHECK_LEASE_S)
            except StoreUnavailable as exc:
                log.warning("follows: store unavailable: %s", exc)
                claimed = None
            if claimed is None:
                await asyncio.sleep(min(IDLE_POLL_S, self.settings.follow_interval))
                continue
            follow, token = claimed
            await self.check(follow)
            if not await self.store.finish_follow(follow, token):
                log.warning("follow %s: its check lease was lost", follow.id)

    async def check(self, follow: Follow) -> None:
        """One check: submit what is new and record the outcome in ``follow``."""
        now = now_ms()
        try:
            submitted = await asyncio.wait_for(self._submit_new(follow), CHECK_LEASE_S * 0.8)
        except (DownloadError, StoreUnavailable, TimeoutError) as exc:
            follow.failures += 1
            follow.last_outcome = f"failed: {exc or 'timed out'}"
            log.warning("follow %s (%s): check failed: %s", follow.id, follow.key, exc)
            failed = True
        else:
            follow.failures = 0
            follow.last_outcome = f"ok: {submitted} submitted"
            log.info("follow %s (%s): %s", follow.id, follow.key, follow.last_outcome)
            failed = False
        follow.checks += 1
        follow.last_check_at = now
        follow.next_check_at = next_check(follow, self.settings.follow_interval, now, failed,
                                          self.rng)

    async def _submit_new(self, follow: Follow) -> int:
        if follow.kind == "artist":
            return await self._artist(follow)
        if follow.kind == "favorites":
            return await self._favourites(follow)
        return await self._collection(follow)

    async def _artist(self, follow: Follow) -> int:
        discography = await self.upstream.discography(int(follow.ref), follow.include)
        follow.title = discography.artist
        current = [r.album_id for r in discography.releases]
        fresh = new_items(follow, current)
        for album_id in fresh:
            await self.store.submit(JobSpec("album", album_id, follow.quality))
        follow.seen = sorted(set(follow.seen or []) | set(current))
        return len(fresh)

    async def _favourites(self, follow: Follow) -> int:
        """The account's favourites: new tracks and albums are downloaded, new playlists
        and artists are followed (a playlist with backfill, an artist from now on)."""
        current: list[int | str] = []
        for kind in follow.include:
            current += [f"{kind}:{ref}" for ref in await self.upstream.favorites(kind)]
        fresh = new_items(follow, current)
        for key in fresh:
            kind, _, ref = str(key).partition(":")
            await self._take_favourite(kind, ref, follow.quality)
        follow.seen = sorted(set(follow.seen or []) | set(current), key=str)
        return len(fresh)

    async def _take_favourite(self, kind: str, ref: str, quality: Quality) -> None:
        if kind == "tracks":
            await self.store.submit(JobSpec("track", int(ref), quality))
            return
        if kind == "albums":
            await self.store.submit(JobSpec("album", int(ref), quality))
            return
        follow = Follow.parse({"kind": kind[:-1], "id": ref, "quality": quality.value,
                               "include": list(ARTIST_INCLUDE) if kind == "artists" else None,
                               "backfill": kind == "playlists"}, quality, now_ms())
        await self.store.add_follow(follow)

    async def _collection(self, follow: Follow) -> int:
        ref = str(follow.ref)
        collection = await (self.upstream.playlist(ref) if follow.kind == "playlist"
                            else self.upstream.mix(ref))
        follow.title = collection.title
        current = [t.id for t in collection.tracks]
        fresh = new_items(follow, current)
        changed = bool(fresh or set(follow.seen or []) - set(current))
        if changed:
            # one playlist job: it fetches what is missing and rewrites the .m3u8
            await self.store.submit(JobSpec("playlist" if follow.kind == "playlist" else "mix",
                                            ref, follow.quality))
        follow.seen = list(current)
        return 1 if changed else 0
