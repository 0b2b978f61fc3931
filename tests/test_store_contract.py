"""The job store contract (queue.md), one suite over memory, SQLite and Redis."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.conftest import make_store
from tests.helpers import RedisServer
from tidalq.errors import AmbiguousJobId, IllegalTransition, InvalidInput, JobNotFound, LeaseLost
from tidalq.models import Failure, JobSpec, LeaseState
from tidalq.store.base import JobStore
from tidalq.store.rules import BACKOFF_BASE_MS
from tidalq.terms import JobStatus, Priority, Quality


def track(n: int, quality: Quality = Quality.LOSSLESS) -> JobSpec:
    return JobSpec("track", n, quality)


async def recount(store: JobStore) -> dict[str, int]:
    jobs = await store.list_jobs(limit=10_000)
    return {s.value: sum(1 for j in jobs if j.status is s) for s in JobStatus}


async def test_submit_get_and_list_newest_first(store: JobStore) -> None:
    a, created = await store.submit(track(1))
    b, _ = await store.submit(JobSpec("album", 2, Quality.HI_RES_LOSSLESS))
    assert created and a.status is JobStatus.QUEUED and a.id.startswith("job-")
    assert (await store.get(a.id)).spec == track(1)
    assert [j.id for j in await store.list_jobs()] == [b.id, a.id]
    assert [j.id for j in await store.list_jobs(JobStatus.QUEUED, limit=1)] == [b.id]
    assert await store.resolve(a.id) == a.id
    assert await store.resolve(b.id[:-2]) == b.id
    with pytest.raises(AmbiguousJobId):
        await store.resolve("job-")
    with pytest.raises(JobNotFound):
        await store.get("job-nope")


async def test_illegal_transitions_are_refused_and_change_nothing(store: JobStore) -> None:
    job, _ = await store.submit(track(1))
    for op in (store.resume, store.retry, store.remove):
        with pytest.raises(IllegalTransition):
            await op(job.id)
    claim = await store.claim("w", 30)
    assert claim is not None
    with pytest.raises(IllegalTransition):
        await store.resume(job.id)  # a running job is not paused (pausing it is a request)
    await store.complete(job.id, claim.token, {"path": "x"})
    for op in (store.cancel, store.pause, store.resume):
        with pytest.raises(IllegalTransition):
            await op(job.id)
    after = await store.get(job.id)
    assert after.status is JobStatus.COMPLETED and after.result == {"path": "x"}
    assert await store.stats() == await recount(store)


async def test_priority_then_fifo(store: JobStore) -> None:
    low, _ = await store.submit(track(1), priority=Priority.LOW)
    n1, _ = await store.submit(track(2))
    high, _ = await store.submit(track(3), priority=Priority.HIGH)
    n2, _ = await store.submit(track(4))
    order = []
    while (c := await store.claim("w", 30)) is not None:
        order.append(c.job.id)
    assert order == [high.id, n1.id, n2.id, low.id]


async def test_delayed_retry_is_never_claimed_early(store: JobStore) -> None:
    job, _ = await store.submit(track(1), max_attempts=3)
    claim = await store.claim("w", 30)
    assert claim is not None
    failed = await store.fail(job.id, claim.token,
                              Failure("429", "RATE_LIMITED", True, retry_after_ms=400))
    assert failed.status is JobStatus.QUEUED and failed.next_retry_at is not None
    due_at = failed.next_retry_at
    while (c := await store.claim("w", 30)) is None:
        await asyncio.sleep(0.01)
    assert time.time() * 1000 >= due_at - 5  # server clock and ours agree to a few ms
    assert c.job.id == job.id and c.job.attempts == 2


async def test_dedupe_under_concurrent_submitters(store: JobStore) -> None:
    results = await asyncio.gather(*(store.submit(track(7)) for _ in range(50)))
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    other, created = await store.submit(track(7, Quality.HIGH))
    assert created and other.id != results[0][0].id
    assert (await store.stats())["queued"] == 2


async def test_backoff_within_jitter_bounds_and_max_attempts(store: JobStore) -> None:
    job, _ = await store.submit(track(1), max_attempts=3)
    for attempt in (1, 2):
        claim = await store.claim("w", 30)
        while claim is None:
            await asyncio.sleep(0.02)
            claim = await store.claim("w", 30)
        before = time.time() * 1000
        failure = Failure("boom", "UPSTREAM_UNAVAILABLE", True)
        failed = await store.fail(job.id, claim.token, failure)
        full = BACKOFF_BASE_MS * 2 ** (attempt - 1)
        delay = (failed.next_retry_at or 0) - before
        assert full / 2 - 50 <= delay <= full + 50, (attempt, delay)
        assert failed.status is JobStatus.QUEUED and failed.attempts == attempt
        await asyncio.sleep(delay / 1000)
    claim = await store.claim("w", 30)
    while claim is None:
        await asyncio.sleep(0.02)
        claim = await store.claim("w", 30)
    final = await store.fail(job.id, claim.token, Failure("boom", "UPSTREAM_UNAVAILABLE", True))
    assert final.status is JobStatus.FAILED and final.attempts == 3
    assert final.failure_code == "UPSTREAM_UNAVAILABLE"


async def test_non_retryable_failure_fails_at_once(store: JobStore) -> None:
    job, _ = await store.submit(track(1), max_attempts=5)
    claim = await store.claim("w", 30)
    assert claim is not None
    failed = await store.fail(job.id, claim.token, Failure("gone", "NOT_FOUND", False))
    assert failed.status is JobStatus.FAILED and failed.error == "gone"


async def test_finish_is_token_checked_and_idempotent(store: JobStore) -> None:
    job, _ = await store.submit(track(1))
    claim = await store.claim("w", 30)
    assert claim is not None
    with pytest.raises(LeaseLost):
        await store.complete(job.id, "not-the-token")
    done = await store.complete(job.id, claim.token, {"bytes": 1})
    again = await store.complete(job.id, claim.token, {"bytes": 2})
    assert done.status is again.status is JobStatus.COMPLETED
    assert again.result == {"bytes": 1}
    assert (await store.stats())["completed"] == 1


async def test_cancel_queued_paused_and_running(store: JobStore) -> None:
    a, _ = await store.submit(track(1))
    b, _ = await store.submit(track(2))
    c, _ = await store.submit(track(3))
    await store.pause(b.id)
    claim = await store.claim("w", 30)
    assert claim is not None and claim.job.id == a.id
    for job in (a, b, c):
        assert (await store.cancel(job.id)).status is JobStatus.CANCELLED
    assert await store.renew(a.id, claim.token, 30) is LeaseState.CANCELLED
    late = await store.complete(a.id, claim.token, {"path": "x"})
    assert late.status is JobStatus.CANCELLED
    assert await store.claim("w", 30) is None
    retried = await store.retry(a.id)
    assert retried.status is JobStatus.QUEUED and retried.attempts == 0
    assert await store.stats() == await recount(store)


async def test_race_cancel_finish_and_lease_expiry_end_in_one_state(store: JobStore) -> None:
    for n in range(20):
        job, _ = await store.submit(track(100 + n))
        claim = await store.claim("w", 0.05)
        assert claim is not None
        await asyncio.sleep(0.06 if n % 2 else 0)

        async def attempt(coro: object) -> object:
            try:
                return await coro  # type: ignore[misc]
            except (IllegalTransition, LeaseLost) as exc:
                return exc

        await asyncio.gather(attempt(store.cancel(job.id)),
                             attempt(store.complete(job.id, claim.token)),
                             attempt(store.reap()))
        final = await store.get(job.id)
        assert final.status in (JobStatus.CANCELLED, JobStatus.COMPLETED, JobStatus.QUEUED)
    assert await store.stats() == await recount(store)


async def test_pause_stops_claims_and_resume_wakes_an_idle_claimer(store: JobStore) -> None:
    await store.set_queue_paused(True)
    assert await store.queue_paused()
    job, _ = await store.submit(track(1))
    assert await store.claim("w", 30) is None
    after = await store.last_event_id()

    async def idle_claimer() -> float:
        cursor = after
        while True:
            claim = await store.claim("w", 30)
            if claim is not None:
                return time.monotonic()
            events = await store.wait_events(cursor, 5)
            if events:
                cursor = events[-1].id

    task = asyncio.create_task(idle_claimer())
    await asyncio.sleep(0.3)
    assert not task.done()
    resumed_at = time.monotonic()
    await store.set_queue_paused(False)
    claimed_at = await asyncio.wait_for(task, 5)
    assert claimed_at - resumed_at < 0.1
    assert (await store.get(job.id)).status is JobStatus.PROCESSING


async def test_a_spared_job_is_not_reaped_for_its_lease_but_for_a_dead_holder(
        store: JobStore) -> None:
    """``spare``: jobs held live (by the reaping daemon itself, or by a daemon whose lock
    proves it alive) are not judged by a clock; a dead holder still loses them."""
    spared, other = (await store.submit(track(1)))[0], (await store.submit(track(2)))[0]
    for _ in (1, 2):
        assert await store.claim("a", 0.2) is not None
    await asyncio.sleep(0.25)
    assert await store.reap(spare=[spared.id]) == [other.id]
    assert (await store.get(spared.id)).status is JobStatus.PROCESSING
    assert await store.reap(dead_workers=["a"], spare=[spared.id]) == [spared.id]


async def test_expired_lease_is_reaped_and_late_finish_refused(store: JobStore) -> None:
    job, _ = await store.submit(track(1))
    first = await store.claim("a", 0.2)
    assert first is not None
    assert await store.reap() == []
    await asyncio.sleep(0.25)
    assert await store.reap() == [job.id]
    second = await store.claim("b", 30)
    assert second is not None and second.job.id == job.id and second.job.stalls == 1
    with pytest.raises(LeaseLost):
        await store.complete(job.id, first.token)
    assert await store.renew(job.id, first.token, 30) is LeaseState.LOST
    assert (await store.complete(job.id, second.token)).status is JobStatus.COMPLETED


async def test_renewed_lease_is_never_reclaimed(store: JobStore) -> None:
    job, _ = await store.submit(track(1))
    claim = await store.claim("a", 0.2)
    assert claim is not None
    deadline = time.monotonic() + 1.0  # 5x the lease
    while time.monotonic() < deadline:
        assert await store.renew(job.id, claim.token, 0.2) is LeaseState.HELD
        assert await store.reap() == []
        await asyncio.sleep(0.06)
    assert (await store.get(job.id)).status is JobStatus.PROCESSING


async def test_a_job_that_keeps_killing_workers_ends_failed(store: JobStore) -> None:
    job, _ = await store.submit(track(1))
    for _ in range(store.max_stalls):
        claim = await store.claim("doomed", 0.05)
        assert claim is not None
        await asyncio.sleep(0.06)
        await store.reap()
    final = await store.get(job.id)
    assert final.status is JobStatus.FAILED and final.failure_code == "STALLED"
    assert await store.claim("w", 30) is None


async def test_an_album_that_completes_tracks_between_crashes_never_stalls_out(
        store: JobStore) -> None:
    """Stalls count crashes without durable progress: a daemon killed again and again
    while an album gets further each time must not fail that album."""
    job, _ = await store.submit(JobSpec("album", 9))
    for done in range(1, 3 * store.max_stalls):
        claim = await store.claim("crashy", 30)
        assert claim is not None
        tracks = [{"trackId": n, "status": "completed" if n < done else "queued"}
                  for n in range(3 * store.max_stalls)]
        assert await store.report_progress(job.id, claim.token, 0.1, tracks) is LeaseState.HELD
        assert await store.reap(["crashy"]) == [job.id]
    assert (await store.get(job.id)).status is JobStatus.QUEUED
    for _ in range(store.max_stalls - 1):  # no further progress: now it stalls out
        claim = await store.claim("crashy", 30)
        assert claim is not None
        await store.reap(["crashy"])
    assert (await store.get(job.id)).failure_code == "STALLED"


async def test_pausing_a_running_job_pauses_it_when_its_worker_releases_it(
        store: JobStore) -> None:
    job, _ = await store.submit(JobSpec("album", 9))
    claim = await store.claim("w", 30)
    assert claim is not None
    asked = await store.pause(job.id)
    assert asked.status is JobStatus.PROCESSING and asked.pause_requested
    assert await store.renew(job.id, claim.token, 30) is LeaseState.PAUSE
    released = await store.release(job.id, claim.token)
    assert released.status is JobStatus.PAUSED and not released.pause_requested
    assert released.attempts == 0 and await store.claim("w", 30) is None
    resumed = await store.resume(job.id)
    assert resumed.status is JobStatus.QUEUED
    again = await store.claim("w", 30)
    assert again is not None
    await store.pause(job.id)
    await store.resume(job.id)  # changed our mind before it took effect
    assert await store.renew(job.id, again.token, 30) is LeaseState.HELD
    done = await store.complete(job.id, again.token)
    assert done.status is JobStatus.COMPLETED
    assert await store.stats() == await recount(store)


async def test_annotating_a_job_adds_to_its_job_object(store: JobStore) -> None:
    job, _ = await store.submit(JobSpec("album", 2**53 - 1))
    marked = await store.annotate(job.id, {"musicBrainzReleaseId": "b1a9c0e4-release"})
    assert marked.spec.musicbrainz_release == "b1a9c0e4-release"
    got = await store.get(job.id)
    assert got.spec.tidal_id == 2**53 - 1 and got.spec.musicbrainz_release == "b1a9c0e4-release"
    await store.cancel(job.id)
    ended = await store.annotate(job.id, {"musicBrainzReleaseId": "x"})
    assert ended.status is JobStatus.CANCELLED and ended.spec.musicbrainz_release == "x"
    with pytest.raises(InvalidInput):
        await store.annotate(job.id, {"bogus": "x"})


async def test_release_does_not_spend_an_attempt(store: JobStore) -> None:
    job, _ = await store.submit(track(1), max_attempts=1)
    claim = await store.claim("w", 30)
    assert claim is not None
    released = await store.release(job.id, claim.token)
    assert released.status is JobStatus.QUEUED and released.attempts == 0
    again = await store.claim("w", 30)
    assert again is not None and again.job.attempts == 1


async def test_progress_and_album_tracks_survive_retry(store: JobStore) -> None:
    job, _ = await store.submit(JobSpec("album", 9))
    claim = await store.claim("w", 30)
    assert claim is not None
    tracks = [{"trackId": 1, "status": "completed"}, {"trackId": 2, "status": "failed"}]
    assert await store.report_progress(job.id, claim.token, 0.5, tracks) is LeaseState.HELD
    failed = await store.fail(job.id, claim.token, Failure("one track failed", "NOT_FOUND", False),
                              tracks)
    body = failed.to_json()
    assert body["completedTracks"] == 1 and body["failedTracks"] == 1 and body["trackCount"] == 2
    retried = await store.retry(job.id)
    assert retried.track_progress == tracks


async def test_retention_purges_incrementally(store: JobStore) -> None:
    for n in range(5):
        job, _ = await store.submit(track(n + 1))
        claim = await store.claim("w", 30)
        assert claim is not None
        await store.complete(job.id, claim.token)
    live, _ = await store.submit(track(99))
    await asyncio.sleep(0.05)
    assert await store.purge_finished(3600) == 0
    assert await store.purge_finished(0.01, batch=2) == 2
    assert await store.purge_finished(0.01, batch=10) == 3
    assert [j.id for j in await store.list_jobs()] == [live.id]
    assert await store.stats() == await recount(store)


async def test_events_resume_from_last_id(store: JobStore) -> None:
    start = await store.last_event_id()
    job, _ = await store.submit(track(1))
    claim = await store.claim("w", 30)
    assert claim is not None
    first = await store.events_after(start)
    assert [(e.job_id, e.kind) for e in first] == [(job.id, "submitted"), (job.id, "claimed")]
    await store.complete(job.id, claim.token)
    rest = await store.wait_events(first[-1].id, 1)
    assert [(e.kind, e.status) for e in rest] == [("completed", "completed")]


async def test_bad_input_raises_clear_errors_and_changes_nothing(store: JobStore) -> None:
    with pytest.raises(InvalidInput, match="maxAttempts"):
        await store.submit(track(1), max_attempts=0)
    with pytest.raises(InvalidInput, match="limit"):
        await store.list_jobs(limit=0)
    job, _ = await store.submit(track(1))
    claim = await store.claim("w", 30)
    assert claim is not None
    with pytest.raises(InvalidInput, match="result"):
        await store.complete(job.id, claim.token, {"blob": "x" * 300_000})
    assert (await store.get(job.id)).status is JobStatus.PROCESSING
    assert (await store.stats())["queued"] == 0 and (await store.stats())["processing"] == 1


def test_spec_validation_names_the_field() -> None:
    with pytest.raises(InvalidInput, match=r"job\.trackId"):
        JobSpec.from_json({"type": "track", "trackId": -1})
    with pytest.raises(InvalidInput, match=r"job\.quality"):
        JobSpec.from_json({"type": "track", "trackId": 1, "quality": "ULTRA"})
    with pytest.raises(InvalidInput, match=r"job\.type"):
        JobSpec.from_json({"type": "video"})
    with pytest.raises(InvalidInput, match=r"job\.playlistId"):
        JobSpec.from_json({"type": "playlist", "playlistId": "../../etc"})
    with pytest.raises(InvalidInput, match=r"job\.include"):
        JobSpec.from_json({"type": "artist", "artistId": 1, "include": ["bootlegs"]})
    with pytest.raises(InvalidInput, match=r"job\.forceOverwrite"):
        JobSpec.from_json({"type": "track", "trackId": 1, "forceOverwrite": "yes"})
    with pytest.raises(InvalidInput, match=r"job\.trackCount"):
        JobSpec.from_json({"type": "album", "albumId": 1, "trackCount": "12"})
    # fields no tidalq knows are ignored: newer web clients add fields
    assert JobSpec.from_json({"type": "track", "trackId": 1, "bogus": 1}).extra == {}
    assert JobSpec.from_json({"type": "album", "albumId": "789"}).tidal_id == 789


async def test_complete_and_claim_takes_the_next_job(store: JobStore) -> None:
    a, _ = await store.submit(track(1))
    b, _ = await store.submit(track(2))
    claim = await store.claim("w", 30)
    assert claim is not None and claim.job.id == a.id
    done, following = await store.complete_and_claim(a.id, claim.token, "w", 30, {"n": 1})
    assert done.status is JobStatus.COMPLETED and done.result == {"n": 1}
    assert following is not None and following.job.id == b.id
    assert following.job.status is JobStatus.PROCESSING
    with pytest.raises(LeaseLost):
        await store.complete_and_claim(b.id, "stolen", "w", 30)
    assert (await store.get(b.id)).status is JobStatus.PROCESSING
    tracks = [{"trackId": 7, "status": "completed", "progress": 1.0}]
    last, none = await store.complete_and_claim(b.id, following.token, "w", 30, None, tracks)
    assert last.status is JobStatus.COMPLETED and none is None
    assert (await store.get(b.id)).track_progress == tracks


async def test_jobs_of_a_dead_worker_are_reaped_before_their_lease_ends(store: JobStore) -> None:
    mine, _ = await store.submit(track(1))
    theirs, _ = await store.submit(track(2))
    dead = await store.claim("host:boot:111", 60)
    alive = await store.claim("host:boot:222", 60)
    assert dead is not None and alive is not None
    assert (await store.get(mine.id)).worker == "host:boot:111"
    assert await store.reap(["host:boot:999"]) == []
    assert await store.reap(["host:boot:111"]) == [mine.id]
    again = await store.get(mine.id)
    assert again.status is JobStatus.QUEUED and again.stalls == 1 and again.attempts == 0
    assert (await store.get(theirs.id)).status is JobStatus.PROCESSING
    with pytest.raises(LeaseLost):
        await store.complete(mine.id, dead.token)


async def test_daemons_announce_themselves_and_fade(store: JobStore) -> None:
    await store.announce({"id": "a-1", "host": "one", "slotsInUse": 1}, ttl_s=30)
    await store.announce({"id": "b-2", "host": "two", "slotsInUse": 0}, ttl_s=0.2)
    assert {d["id"] for d in await store.daemons()} == {"a-1", "b-2"}
    await store.announce({"id": "a-1", "host": "one", "slotsInUse": 3}, ttl_s=30)
    await asyncio.sleep(0.4)
    assert await store.daemons() == [{"id": "a-1", "host": "one", "slotsInUse": 3}]


async def test_shared_locks_fence_and_expire(redis_server: RedisServer,
                                             tmp_path: Path) -> None:
    """The publish lock of several machines: one holder, growing fencing tokens, renewal
    and release by the holder's token only, and a vanished holder's lock expires."""
    store = await make_store("redis", tmp_path, redis_server)
    other = await make_store("redis", tmp_path, redis_server, prefix=store.prefix)  # type: ignore[attr-defined]
    try:
        assert store.shares_locks
        first = await store.try_lock("publish:x", 0.5)
        assert first is not None and await other.try_lock("publish:x", 0.5) is None
        assert not await other.renew_lock("publish:x", "1:forged", 5)
        await other.unlock("publish:x", "1:forged")
        assert await other.try_lock("publish:x", 0.5) is None, "a wrong token frees nothing"
        assert await store.renew_lock("publish:x", first, 0.5)
        await asyncio.sleep(0.7)  # the holder vanished: the lock expires
        second = await other.try_lock("publish:x", 5)
        assert second is not None and int(second.split(":")[0]) > int(first.split(":")[0])
        assert not await store.renew_lock("publish:x", first, 5), "the old holder lost it"
        await other.unlock("publish:x", second)
        assert await store.try_lock("publish:x", 5) is not None
    finally:
        await store.close()
        await other.close()


async def test_a_waiting_job_moves_to_its_new_priority(store: JobStore) -> None:
    a, _ = await store.submit(track(1))
    b, _ = await store.submit(track(2))
    c, _ = await store.submit(track(3))
    d, _ = await store.submit(track(4))
    await store.pause(d.id)
    assert (await store.set_priority(c.id, Priority.HIGH)).priority is Priority.HIGH
    await store.set_priority(a.id, Priority.LOW)
    await store.set_priority(d.id, Priority.HIGH)
    await store.resume(d.id)
    order = []
    for _ in range(4):
        claim = await store.claim("w", 30)
        assert claim is not None
        order.append(claim.job.id)
    assert order == [c.id, d.id, b.id, a.id]
    with pytest.raises(IllegalTransition):
        await store.set_priority(a.id, Priority.HIGH)
    kinds = [e.kind for e in await store.events_after("0", 100) if e.job_id == c.id]
    assert "priority_changed" in kinds


async def test_an_artist_job_built_without_release_kinds_reads_back(store: JobStore) -> None:
    """A spec made in code (a benchmark, a follow) gets the default kinds, as one parsed
    from a client does; before, it was stored with none and every read of it failed."""
    job, _ = await store.submit(JobSpec("artist", 90))
    assert (await store.get(job.id)).spec.include == ("albums", "eps", "singles")
