"""The Redis store: one queue shared by several daemons on several hosts.

Every state change is one Lua script (see :mod:`tidalq.store.redis_lua` for the key
layout), so a claim, a finish or a reap is atomic and costs one round trip. Redis errors
become :class:`~tidalq.errors.StoreUnavailable`; callers back off and reconnect, nothing
falls back to another store.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Awaitable, Collection
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from tidalq.errors import (
    AmbiguousJobId,
    FollowNotFound,
    IllegalTransition,
    JobNotFound,
    LeaseLost,
    StoreUnavailable,
)
from tidalq.models import (
    Claim,
    Event,
    Failure,
    Follow,
    Job,
    JobSpec,
    LeaseState,
    new_job_id,
    parse_max_attempts,
)
from tidalq.store import redis_lua as lua
from tidalq.store import rules
from tidalq.store.base import (
    JobStore,
    Titles,
    TrackProgress,
    check_annotation,
    check_limit,
    check_progress,
    check_size,
    check_titles,
    lease_ms,
)
from tidalq.store.redis_shared import SharedOnRedis
from tidalq.terms import JobStatus, Priority


def _opt_int(value: str | None) -> int | None:
    return int(float(value)) if value not in (None, "") else None


@functools.lru_cache(maxsize=4096)
def _spec(spec: str, titles: str, patch: str) -> JobSpec:
    """A job's spec from its three JSON fields. Cached: a worker reads the same job when
    it claims it and when it finishes it, and a web app polls the same jobs (JobSpec is
    frozen, and nothing changes its ``extra`` in place)."""
    fields = json.loads(spec)
    for more in (titles, patch):
        if more:
            fields.update(json.loads(more))
    return JobSpec.from_json(fields)


def _job_from_hash(flat: list[str] | dict[str, str]) -> Job:
    h = flat if isinstance(flat, dict) else dict(zip(flat[::2], flat[1::2], strict=True))
    return Job(
        id=h["id"], spec=_spec(h["spec"], h.get("titles") or "", h.get("patch") or ""),
        status=JobStatus(h["status"]), priority=Priority(h["priority"]),
        progress=float(h.get("progress") or 0), created_at=int(h["createdAt"]),
        started_at=_opt_int(h.get("startedAt")), completed_at=_opt_int(h.get("completedAt")),
        updated_at=int(h["updatedAt"]), next_retry_at=_opt_int(h.get("nextRetryAt")),
        attempts=int(h["attempts"]), max_attempts=int(h["maxAttempts"]),
        error=h.get("error") or None, failure_code=h.get("failureCode") or None,
        track_progress=json.loads(h["tracks"]) if h.get("tracks") else [],
        result=json.loads(h["result"]) if h.get("result") else None,
        stalls=int(h.get("stalls") or 0), token=h.get("token") or None,
        lease_until_ms=_opt_int(h.get("leaseUntil")), seq=int(h["seq"]),
        worker=h.get("worker") or None, pause_requested=h.get("pauseRequested") == "1",
    )


class RedisStore(SharedOnRedis, JobStore):
    """Jobs in Redis hashes, indexes in sorted sets, transitions in Lua."""

    def __init__(self, url: str, client: aioredis.Redis, prefix: str = "tidalq",
                 max_stalls: int = rules.DEFAULT_MAX_STALLS) -> None:
        self.url = url
        self.store_clock = True
        self.prefix = prefix
        self.max_stalls = max_stalls
        self._r = client
        self._rng = random.Random()
        scripts = {"submit": lua.SUBMIT, "claim": lua.CLAIM, "renew": lua.RENEW,
                   "progress": lua.PROGRESS, "finish": lua.FINISH,
                   "finish_and_claim": lua.FINISH_AND_CLAIM, "reap": lua.REAP,
                   "user": lua.USER, "purge": lua.PURGE, "qpause": lua.QUEUE_PAUSE,
                   "next_due": lua.NEXT_DUE, "follow_add": lua.FOLLOW_ADD,
                   "follow_remove": lua.FOLLOW_REMOVE, "follow_claim": lua.FOLLOW_CLAIM,
                   "follow_finish": lua.FOLLOW_FINISH, "lock_renew": lua.LOCK_RENEW,
                   "lock_release": lua.LOCK_RELEASE}
        self._scripts = {name: client.register_script(src) for name, src in scripts.items()}

    @classmethod
    async def open(cls, url: str, prefix: str = "tidalq") -> RedisStore:
        client = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=10,
                                         socket_connect_timeout=5, health_check_interval=15)
        store = cls(url, client, prefix)
        await store.ping()
        return store

    async def ping(self) -> None:
        await self._guard(self._r.ping())

    async def close(self) -> None:
        await self._r.aclose()

    async def _guard(self, call: Awaitable[Any]) -> Any:
        """Run one Redis call; redis-py's reply types are loose, so answers are Any here."""
        try:
            return await call
        except ResponseError as exc:
            raise StoreUnavailable(f"Redis refused a command: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis at {self._safe_url} is unreachable: {exc}") from exc

    @property
    def _safe_url(self) -> str:
        head, _, tail = self.url.rpartition("@")
        return ("redis://…@" + tail) if head else self.url

    async def _script(self, name: str, *args: str | int | float) -> Any:
        return await self._guard(self._scripts[name](keys=[self.prefix], args=list(args)))

    def _key(self, suffix: str) -> str:
        return f"{self.prefix}:{suffix}"

    @staticmethod
    def _user_answer(answer: list[Any], job_id: str) -> Job:
        tag = answer[0]
        if tag == "notfound":
            raise JobNotFound(f"no job {job_id}")
        if tag == "illegal":
            raise IllegalTransition(f"job {job_id} is {answer[1]}: not allowed")
        if tag == "conflict":
            raise IllegalTransition(f"an equal job {answer[1]} is already live")
        if tag == "lost":
            raise LeaseLost(f"lease on job {job_id} was lost")
        return _job_from_hash(answer[1])

    # -- submitting and reading -----------------------------------------------------------
    async def submit(self, spec: JobSpec, *, priority: Priority = Priority.NORMAL,
                     max_attempts: int = 3) -> tuple[Job, bool]:
        parse_max_attempts(max_attempts)
        created, flat = await self._script(
            "submit", new_job_id(), json.dumps(spec.to_json()), spec.dedupe_key,
            priority.rank, priority.value, max_attempts)
        return _job_from_hash(flat), bool(created)

    async def get(self, job_id: str) -> Job:
        h = await self._guard(self._r.hgetall(self._key(f"job:{job_id}")))
        if not h:
            raise JobNotFound(f"no job {job_id}")
        return _job_from_hash(h)

    async def resolve(self, prefix: str) -> str:
        if await self._guard(self._r.exists(self._key(f"job:{prefix}"))):
            return prefix
        found = await self._guard(self._r.zrangebylex(
            self._key("ids"), f"[{prefix}", f"[{prefix}\xff", start=0, num=2))
        if not found:
            raise JobNotFound(f"no job matches {prefix!r}")
        if len(found) > 1:
            raise AmbiguousJobId(f"{prefix!r} matches more than one job")
        return str(found[0])

    async def list_jobs(self, status: JobStatus | None = None, limit: int = 100) -> list[Job]:
        limit = check_limit(limit)
        key = self._key("all") if status is None else self._key(f"s:{status.value}")
        ids = await self._guard(self._r.zrevrange(key, 0, limit - 1))
        pipe = self._r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self._key(f"job:{job_id}"))
        hashes = await self._guard(pipe.execute())
        return [_job_from_hash(h) for h in hashes if h]

    async def stats(self) -> dict[str, int]:
        pipe = self._r.pipeline(transaction=False)
        for s in JobStatus:
            pipe.zcard(self._key(f"s:{s.value}"))
        counts = await self._guard(pipe.execute())
        return {s.value: int(n) for s, n in zip(JobStatus, counts, strict=True)}

    # -- the worker's side ----------------------------------------------------------------
    async def claim(self, worker: str, lease_s: float) -> Claim | None:
        token = rules.new_token()
        flat = await self._script("claim", lease_ms(lease_s), token, worker)
        if not flat:
            return None
        job = _job_from_hash(flat)
        return Claim(job, token, job.lease_until_ms or 0)

    async def renew(self, job_id: str, token: str, lease_s: float) -> LeaseState:
        return LeaseState(await self._script("renew", job_id, token, lease_ms(lease_s)))

    async def report_progress(self, job_id: str, token: str, progress: float,
                              track_progress: TrackProgress | None = None,
                              titles: Titles | None = None) -> LeaseState:
        progress = check_progress(progress)
        tracks, done = "", 0
        if track_progress is not None:
            check_size(track_progress, "trackProgress")
            tracks, done = json.dumps(track_progress), rules.completed_tracks(track_progress)
        learned = json.dumps(check_titles(titles)) if titles else ""
        return LeaseState(await self._script("progress", job_id, token, round(progress, 4),
                                             tracks, done, learned))

    async def _finish(self, job_id: str, token: str, action: str, result: str = "",
                      tracks: TrackProgress | None = None, failure: Failure | None = None) -> Job:
        fail_args: list[str | int] = ["", "", "0", "", "0"]
        if failure is not None:
            retry_after = "" if failure.retry_after_ms is None else failure.retry_after_ms
            fail_args = [failure.message[:2000], failure.code, "1" if failure.retryable else "0",
                         retry_after, repr(self._rng.random())]
        answer = await self._script("finish", job_id, token, action, result,
                                    "" if tracks is None else json.dumps(tracks), *fail_args)
        return self._user_answer(answer, job_id)

    async def complete(self, job_id: str, token: str, result: dict[str, Any] | None = None,
                       track_progress: TrackProgress | None = None) -> Job:
        check_size([result, track_progress], "result")
        return await self._finish(job_id, token, "complete",
                                  "" if result is None else json.dumps(result), track_progress)

    async def complete_and_claim(self, job_id: str, token: str, worker: str, lease_s: float,
                                 result: dict[str, Any] | None = None,
                                 track_progress: TrackProgress | None = None
                                 ) -> tuple[Job, Claim | None]:
        check_size([result, track_progress], "result")
        next_token = rules.new_token()
        done, flat = await self._script(
            "finish_and_claim", job_id, token, "complete",
            "" if result is None else json.dumps(result),
            "" if track_progress is None else json.dumps(track_progress), "", "", "0", "", "0",
            lease_ms(lease_s), next_token, worker)
        job = self._user_answer(done, job_id)
        if not flat:
            return job, None
        claimed = _job_from_hash(flat)
        return job, Claim(claimed, next_token, claimed.lease_until_ms or 0)

    async def fail(self, job_id: str, token: str, failure: Failure,
                   track_progress: TrackProgress | None = None) -> Job:
        check_size(track_progress, "trackProgress")
        return await self._finish(job_id, token, "fail", "", track_progress, failure)

    async def release(self, job_id: str, token: str) -> Job:
        return await self._finish(job_id, token, "release")

    async def reap(self, dead_workers: Collection[str] = (),
                   spare: Collection[str] = ()) -> list[str]:
        dead, live = list(dead_workers)[:500], list(spare)[:500]
        return [str(i) for i in await self._script("reap", self.max_stalls, len(dead), *dead,
                                                   *live)]

    # -- the user's side ------------------------------------------------------------------
    async def _user(self, job_id: str, op: str) -> Job:
        return self._user_answer(await self._script("user", job_id, op), job_id)

    async def cancel(self, job_id: str) -> Job:
        return await self._user(job_id, "cancel")

    async def retry(self, job_id: str) -> Job:
        return await self._user(job_id, "retry")

    async def pause(self, job_id: str) -> Job:
        return await self._user(job_id, "pause")

    async def resume(self, job_id: str) -> Job:
        return await self._user(job_id, "resume")

    async def set_priority(self, job_id: str, priority: Priority) -> Job:
        return self._user_answer(await self._script("user", job_id, "priority",
                                                    priority.value, priority.rank), job_id)

    async def annotate(self, job_id: str, fields: dict[str, str]) -> Job:
        patch = json.dumps(check_annotation(fields))
        return self._user_answer(await self._script("user", job_id, "annotate", patch), job_id)

    async def remove(self, job_id: str) -> None:
        answer = await self._script("user", job_id, "remove")
        if answer[0] != "removed":
            self._user_answer(answer, job_id)

    async def set_queue_paused(self, paused: bool) -> None:
        await self._script("qpause", "1" if paused else "0")

    async def queue_paused(self) -> bool:
        return bool(await self._guard(self._r.exists(self._key("qpaused"))))

    async def purge_finished(self, older_than_s: float, batch: int = 500) -> int:
        return int(await self._script("purge", int(older_than_s * 1000), batch))

    async def next_due_in(self) -> float | None:
        ms = int(await self._script("next_due"))
        return None if ms < 0 else ms / 1000

    # -- follows --------------------------------------------------------------------------
    async def add_follow(self, follow: Follow) -> tuple[Follow, bool]:
        answer = await self._script("follow_add", follow.id, follow.key,
                                    json.dumps(follow.to_json()), follow.next_check_at)
        return Follow.from_json(json.loads(answer[1])), bool(int(answer[0]))

    async def list_follows(self) -> list[Follow]:
        docs = await self._guard(self._r.hvals(f"{self.prefix}:follows"))
        return sorted((Follow.from_json(json.loads(d)) for d in docs), key=lambda f: f.key)

    async def remove_follow(self, follow_id: str) -> None:
        if not int(await self._script("follow_remove", follow_id)):
            raise FollowNotFound(f"no follow {follow_id}")

    async def claim_follow(self, lease_s: float) -> tuple[Follow, str] | None:
        token = rules.new_token()
        answer = await self._script("follow_claim", lease_ms(lease_s), token)
        if not answer:
            return None
        return Follow.from_json(json.loads(answer)), token

    async def finish_follow(self, follow: Follow, token: str) -> bool:
        return bool(int(await self._script("follow_finish", follow.id, token,
                                           json.dumps(follow.to_json()),
                                           follow.next_check_at)))

    # -- events ---------------------------------------------------------------------------
    @staticmethod
    def _event(entry_id: str, fields: dict[str, str]) -> Event:
        return Event(entry_id, fields.get("job", ""), fields.get("kind", ""),
                     fields.get("status", ""), float(fields.get("progress") or 0),
                     int(fields.get("at") or 0))

    async def last_event_id(self) -> str:
        last = await self._guard(self._r.xrevrange(self._key("events"), count=1))
        return str(last[0][0]) if last else "0-0"

    async def events_after(self, after: str, limit: int = 500) -> list[Event]:
        rows = await self._guard(self._r.xrange(self._key("events"), min=f"({after}",
                                                count=limit))
        return [self._event(i, f) for i, f in rows]

    async def wait_events(self, after: str, timeout_s: float, limit: int = 500) -> list[Event]:
        # Stay well under the socket timeout: a long BLOCK would look like a dead server.
        block = max(1, min(5000, int(timeout_s * 1000)))
        reply = await self._guard(self._r.xread({self._key("events"): after}, count=limit,
                                                block=block))
        if not reply:
            return []
        return [self._event(i, f) for i, f in reply[0][1]]

