"""The daemon's JSON-RPC methods: a flat table of small handlers over the store and pool.

Each handler takes validated params and returns a JSON-able result; errors are tidalq
exceptions, mapped to JSON-RPC error codes by :func:`error_code`. Streaming methods
(``events.subscribe``) are handled by the server, which owns the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tidalq import __version__
from tidalq.config import Settings, redact_url
from tidalq.errors import (
    AmbiguousJobId,
    FollowNotFound,
    IllegalTransition,
    InvalidInput,
    JobNotFound,
    StoreUnavailable,
)
from tidalq.login import LoginDesk
from tidalq.models import (
    RELEASE_KINDS,
    Follow,
    Job,
    JobSpec,
    now_ms,
    parse_max_attempts,
    parse_priority,
    parse_status,
    parse_tidal_id,
)
from tidalq.protocol import (
    MAX_IDS_PER_CALL,
    MAX_JOBS_PER_SUBMIT,
    PROTOCOL_VERSION,
    ErrorCode,
)
from tidalq.retag import retag_with_release
from tidalq.store.base import CLIENT_ANNOTATIONS, JobStore
from tidalq.terms import SEARCH_KINDS, JobStatus
from tidalq.worker import WorkerPool

Handler = Callable[["Context", dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_WAIT_S = 24 * 3600.0
MAX_UNWAITED = 10_000
MAX_QUERY = 200
MAX_ELSEWHERE = 200  # running jobs of other daemons that status lists


@dataclass
class Context:
    """What handlers may touch."""

    settings: Settings
    store: JobStore
    pool: WorkerPool
    request_shutdown: Callable[[], None]
    started_at: float = field(default_factory=time.time)
    checks: list[str] = field(default_factory=list)
    login: LoginDesk | None = None  # the TIDAL account's login desk
    # jobs submitted since a bare `wait` last reported them (insertion-ordered, capped)
    unwaited: dict[str, None] = field(default_factory=dict)

    def remember_submitted(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self.unwaited[job_id] = None
        while len(self.unwaited) > MAX_UNWAITED:
            del self.unwaited[next(iter(self.unwaited))]


def error_code(exc: Exception) -> ErrorCode:
    if isinstance(exc, InvalidInput):
        return ErrorCode.INVALID_PARAMS
    if isinstance(exc, JobNotFound):
        return ErrorCode.JOB_NOT_FOUND
    if isinstance(exc, AmbiguousJobId):
        return ErrorCode.AMBIGUOUS_JOB_ID
    if isinstance(exc, IllegalTransition):
        return ErrorCode.ILLEGAL_TRANSITION
    if isinstance(exc, StoreUnavailable):
        return ErrorCode.STORE_UNAVAILABLE
    return ErrorCode.INTERNAL_ERROR


# -- param helpers --------------------------------------------------------------------------

def _known(params: dict[str, Any], allowed: set[str]) -> None:
    for key in params:
        if key not in allowed:
            raise InvalidInput(f"unknown parameter {key!r}", key)


def _ids(params: dict[str, Any], required: bool = True) -> list[str]:
    ids = params.get("ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) and 0 < len(i) <= 64
                                            for i in ids):
        raise InvalidInput("ids must be a list of job ids (strings)", "ids")
    if len(ids) > MAX_IDS_PER_CALL:
        raise InvalidInput(f"at most {MAX_IDS_PER_CALL} ids per call", "ids")
    if required and not ids:
        raise InvalidInput("ids must name at least one job", "ids")
    return ids


def _timeout(params: dict[str, Any]) -> float | None:
    value = params.get("timeout")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not 0 < value <= MAX_WAIT_S:
        raise InvalidInput(f"timeout must be seconds between 0 and {MAX_WAIT_S:.0f}", "timeout")
    return float(value)


# -- handlers -------------------------------------------------------------------------------

async def submit(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    _known(params, {"job", "jobs", "priority", "maxAttempts"})
    raw = params["jobs"] if "jobs" in params else [params.get("job")]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_JOBS_PER_SUBMIT:
        raise InvalidInput(f"jobs must be a list of 1 to {MAX_JOBS_PER_SUBMIT} jobs", "jobs")
    specs = [JobSpec.from_json(j, ctx.settings.quality) for j in raw]
    priority = parse_priority(params.get("priority", "normal"))
    attempts = parse_max_attempts(params.get("maxAttempts", ctx.settings.max_attempts))
    jobs, created = [], []
    for spec in specs:
        job, new = await ctx.store.submit(spec, priority=priority, max_attempts=attempts)
        jobs.append(job.to_json())
        created.append(new)
    ctx.pool.wake()
    ctx.remember_submitted([j["id"] for j in jobs])
    return {"jobIds": [j["id"] for j in jobs], "created": created, "jobs": jobs}


async def list_jobs(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    _known(params, {"status", "limit"})
    status = parse_status(params["status"]) if params.get("status") is not None else None
    limit = params.get("limit", 100)
    jobs = await ctx.store.list_jobs(status, limit)
    return {"jobs": [j.to_json() for j in jobs], "count": len(jobs)}


async def get(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    _known(params, {"id"})
    job_id = _one_id(params)
    return {"job": (await ctx.store.get(await ctx.store.resolve(job_id))).to_json()}


def _each(op: Callable[[JobStore, str], Awaitable[Job | None]],
          after: Callable[[Context, str], None] | None = None) -> Handler:
    """A handler applying ``op`` to every id; per-id errors are reported, not raised."""

    async def handler(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        _known(params, {"ids"})
        results: list[dict[str, Any]] = []
        for prefix in _ids(params):
            try:
                job_id = await ctx.store.resolve(prefix)
                job = await op(ctx.store, job_id)
                if after is not None:
                    after(ctx, job_id)
                results.append({"id": job_id, "ok": True,
                                "job": job.to_json() if job is not None else None})
            except AlreadyEnded as ended:
                results.append({"id": ended.job.id, "ok": True, "job": ended.job.to_json(),
                                "message": f"already {ended.job.status.value}"})
            except (JobNotFound, AmbiguousJobId, IllegalTransition) as exc:
                results.append({"id": prefix, "ok": False, "error": str(exc),
                                "code": int(error_code(exc))})
        ctx.pool.wake()
        return {"results": results}

    return handler


class AlreadyEnded(IllegalTransition):
    """Raised by a cancel of a job that has already ended: a success that says so (the
    web app cancels twice: its Stop button, then the card's own cancel)."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} is already {job.status.value}")
        self.job = job


async def _cancel(store: JobStore, job_id: str) -> Job:
    try:
        return await store.cancel(job_id)
    except IllegalTransition:
        job = await store.get(job_id)
        if job.status.finished:
            raise AlreadyEnded(job) from None
        raise


def _forget(ctx: Context, job_id: str) -> None:
    """A job the user cancelled or removed is no bare `wait`'s failure to report."""
    ctx.unwaited.pop(job_id, None)


def _cancelled(ctx: Context, job_id: str) -> None:
    ctx.pool.cancel_local(job_id)
    _forget(ctx, job_id)


async def _remove(store: JobStore, job_id: str) -> None:
    await store.remove(job_id)


async def retry(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    _known(params, {"ids", "failed"})
    if params.get("failed") is True:
        failed = await ctx.store.list_jobs(JobStatus.FAILED, 10_000)
        params = {"ids": [j.id for j in failed][:MAX_IDS_PER_CALL]}
        if not params["ids"]:
            return {"results": []}
    return await _each(lambda s, i: s.retry(i))(ctx, params)


async def set_priority(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Move a waiting job: ``{"id", "priority": "high"|"normal"|"low"}``."""
    _known(params, {"id", "priority"})
    job_id = params.get("id")
    if not isinstance(job_id, str) or not 0 < len(job_id) <= 64:
        raise InvalidInput("id must be a job id (string)", "id")
    priority = parse_priority(params.get("priority"))
    job = await ctx.store.set_priority(await ctx.store.resolve(job_id), priority)
    ctx.pool.wake()
    return {"job": job.to_json()}


async def annotate(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Set client fields on a job (``set_musicbrainz_release``). A completed job's files
    are re-tagged with the release at once, and its ``musicBrainzMatch`` says how it went;
    a job yet to run uses the release when it runs."""
    _known(params, {"id", "fields"})
    fields = params.get("fields")
    if not isinstance(fields, dict) or not set(fields) <= set(CLIENT_ANNOTATIONS):
        raise InvalidInput(f"fields must be an object of {', '.join(CLIENT_ANNOTATIONS)}",
                           "fields")
    job_id = await ctx.store.resolve(_one_id(params))
    job = await ctx.store.annotate(job_id, fields)
    if "musicBrainzReleaseId" in fields and job.status is JobStatus.COMPLETED:
        job = await ctx.store.annotate(job_id, {"musicBrainzMatch": await _retag(ctx, job)})
    return {"job": job.to_json()}


async def _retag(ctx: Context, job: Job) -> str:
    if ctx.pool.pipeline is None:
        return "this daemon downloads nothing (workers off): its files were not re-tagged"
    return (await retag_with_release(ctx.pool.pipeline, job))[:1000]


def _one_id(params: dict[str, Any]) -> str:
    job_id = params.get("id")
    if not isinstance(job_id, str) or not 0 < len(job_id) <= 64:
        raise InvalidInput("id must be a job id (string)", "id")
    return job_id


def _pause_or_resume(paused: bool) -> Handler:
    job_op = _each(lambda s, i: s.pause(i) if paused else s.resume(i),
                   (lambda ctx, i: ctx.pool.pause_local(i)) if paused else None)

    async def handler(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("ids"):
            return await job_op(ctx, params)
        _known(params, {"ids"})
        await ctx.store.set_queue_paused(paused)
        ctx.pool.wake()
        return {"queuePaused": paused}

    return handler


async def stats(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    _known(params, set())
    pool = ctx.pool
    try:
        counts = await ctx.store.stats()
        paused = await ctx.store.queue_paused()
    except StoreUnavailable:
        counts, paused = {}, False
    active = [s.summary() for s in pool.active.values()]
    daemons: list[dict[str, Any]] = []
    with contextlib.suppress(StoreUnavailable):
        daemons = await ctx.store.daemons()
        if len(daemons) > 1:  # what the other daemons run, from the store
            active += await _elsewhere(ctx, {s.job_id for s in pool.active.values()})
    return {
        "success": True,
        "queue": {**{s.value: counts.get(s.value, 0) for s in JobStatus},
                  "total": sum(counts.get(s.value, 0) for s in JobStatus)},
        "worker": {"running": pool.running, "activeDownloads": pool.active_downloads,
                   "maxConcurrent": ctx.settings.max_concurrent, "queuePaused": paused,
                   "storeOk": pool.store_ok, "problem": pool.problem(),
                   "downloadBps": round(pool.meter.rate()),
                   "resting": pool.rate_limiting()["servers"],
                   "workers": "on" if pool.pipeline is not None else "off"},
        "active": active,
        "account": ctx.login.show() if ctx.login is not None else None,
        "daemons": sorted(daemons, key=lambda d: (d.get("host", ""), d.get("id", ""))),
        "daemon": {"version": __version__, "pid": os.getpid(),
                   "uptimeS": round(time.time() - ctx.started_at, 1),
                   "store": redact_url(ctx.store.url),
                   "downloadDir": str(ctx.settings.download_dir), "checks": ctx.checks},
    }


async def _elsewhere(ctx: Context, here: set[str]) -> list[dict[str, Any]]:
    """Jobs other daemons on this store are running, as `status` lists them."""
    found = []
    for job in await ctx.store.list_jobs(JobStatus.PROCESSING, MAX_ELSEWHERE):
        if job.id in here:
            continue
        spec = job.spec
        found.append({"id": job.id, "type": spec.type, "tidalId": spec.tidal_id,
                      "quality": spec.quality.value, **spec.to_json(),
                      "progress": round(job.progress, 4), "etaS": None,
                      "daemon": job.worker, "trackCount": None, "completedTracks": None})
    return found


async def wait(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Block until the jobs are finished. With no ids: every queued or running job, and
    every job submitted since a wait last reported it, unless cancelled or removed since
    (so ``add … && wait`` reports what was just added however fast it ended). A named job
    removed meanwhile is listed in ``missing``."""
    _known(params, {"ids", "timeout"})
    timeout = _timeout(params)
    named = [await ctx.store.resolve(p) for p in _ids(params, required=False)]
    ids = named or await _whole_queue(ctx)
    deadline = None if timeout is None else time.monotonic() + timeout
    cursor = await ctx.store.last_event_id()
    while True:
        jobs = {i: await _get_or_none(ctx.store, i) for i in ids}
        present = [j for j in jobs.values() if j is not None]
        missing = [i for i, j in jobs.items() if j is None and named]
        left = None if deadline is None else deadline - time.monotonic()
        if all(j.status.finished for j in present) or (left is not None and left <= 0):
            timed_out = not all(j.status.finished for j in present)
            if not timed_out:
                for job_id in ids:
                    ctx.unwaited.pop(job_id, None)
            return {"jobs": [j.to_json() for j in present], "missing": missing,
                    "timedOut": timed_out}
        events = await ctx.store.wait_events(cursor, min(5.0, left or 5.0))
        if events:
            cursor = events[-1].id


async def _whole_queue(ctx: Context) -> list[str]:
    live = [j.id for status in (JobStatus.QUEUED, JobStatus.PROCESSING)
            for j in await ctx.store.list_jobs(status, 10_000)]
    return list(dict.fromkeys([*ctx.unwaited, *live]))


async def _get_or_none(store: JobStore, job_id: str) -> Job | None:
    try:
        return await store.get(job_id)
    except JobNotFound:
        return None


async def hello(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    client_protocol = params.get("protocol")
    compatible = client_protocol is None or client_protocol == PROTOCOL_VERSION
    return {"daemon": "tidalq", "version": __version__, "protocol": PROTOCOL_VERSION,
            "compatible": compatible, "pid": os.getpid(), "methods": list(METHOD_TABLE)}


async def shutdown(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    _known(params, set())
    asyncio.get_running_loop().call_soon(ctx.request_shutdown)
    return {"stopping": True}


async def follow_add(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Follow an artist, playlist or mix: ``{"kind", "id", "include"?, "quality"?,
    "backfill"?}``; following an already followed item returns that follow."""
    _known(params, {"kind", "id", "include", "quality", "backfill"})
    follow = Follow.parse(params, ctx.settings.quality, now_ms())
    if follow.kind == "favorites":
        _can_read_favourites(ctx)
    kept, created = await ctx.store.add_follow(follow)
    return {"follow": kept.to_json(), "created": created}


def _can_read_favourites(ctx: Context) -> None:
    if "tidal" not in ctx.settings.upstream:
        raise InvalidInput("favourites come from your own TIDAL account: set upstream = "
                           "\"tidal\" (or [\"tidal\", \"hifi\"]) and run tidalq login", "kind")
    problem = ctx.login.account.problem() if ctx.login is not None else "no account"
    if problem is not None:
        raise InvalidInput(f"cannot follow favourites: {problem}", "kind")


def _desk(ctx: Context) -> LoginDesk:
    if ctx.login is None:
        raise InvalidInput("this daemon has no TIDAL login desk", "method")
    return ctx.login


async def search(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Search the catalogue: ``{query, kind?: track|album|artist|playlist, limit?}``."""
    _known(params, {"query", "kind", "limit"})
    query = params.get("query")
    if not isinstance(query, str) or not query.strip() or len(query) > MAX_QUERY:
        raise InvalidInput(f"query must be words to look for (at most {MAX_QUERY} "
                           "characters)", "query")
    kind = params.get("kind", "album")
    if kind not in SEARCH_KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(SEARCH_KINDS)}", "kind")
    limit = params.get("limit", 20)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise InvalidInput("limit must be a whole number from 1 to 100", "limit")
    pipeline = ctx.pool.pipeline
    if pipeline is None:
        raise InvalidInput(ctx.pool.problem() or "this daemon downloads nothing, so it "
                           "searches nothing (workers are off)", "kind")
    upstream = pipeline.upstream
    hits = await upstream.search(kind, query.strip(), limit)
    return {"kind": kind, "query": query.strip(), "results": [
        {**h.to_json(), "coverUrl": upstream.cover_url(h.cover, 160) if h.cover else None}
        for h in hits]}


async def releases(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """An artist's releases of every kind: ``{"id": artistId}`` (the page's artist card)."""
    _known(params, {"id"})
    artist_id = parse_tidal_id(params.get("id"), "id")
    pipeline = ctx.pool.pipeline
    if pipeline is None:
        raise InvalidInput(ctx.pool.problem() or "workers are off", "id")
    found = await pipeline.upstream.discography(artist_id, RELEASE_KINDS)
    return {"artist": found.artist, "complete": found.complete,
            "releases": [{"id": r.album_id, "title": r.title, "kind": r.kind}
                         for r in found.releases]}


async def account_login(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Start a device login (or return the pending one): ``{link, code, expiresInS}``."""
    _known(params, set())
    return await _desk(ctx).start()


async def account_wait(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Wait up to ``timeout`` seconds (at most 60) for the pending login to end."""
    _known(params, {"timeout"})
    return await _desk(ctx).wait(_timeout(params) or 30.0)


async def account_logout(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    _known(params, set())
    return await _desk(ctx).logout()


async def account_show(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    _known(params, set())
    return {"account": _desk(ctx).show()}


async def follow_list(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    _known(params, set())
    return {"follows": [f.to_json() for f in await ctx.store.list_follows()]}


async def follow_remove(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    _known(params, {"id"})
    follow_id = params.get("id")
    if not isinstance(follow_id, str) or not 0 < len(follow_id) <= 64:
        raise InvalidInput("id must be a follow id (string)", "id")
    for follow in await ctx.store.list_follows():  # a prefix is enough, as for jobs
        if follow.id.startswith(follow_id) or str(follow.ref) == follow_id:
            await ctx.store.remove_follow(follow.id)
            return {"removed": follow.id}
    raise FollowNotFound(f"no follow {follow_id}")


METHOD_TABLE: dict[str, Handler] = {
    "catalog.search": search,
    "catalog.releases": releases,
    "account.login": account_login,
    "account.wait": account_wait,
    "account.logout": account_logout,
    "account.show": account_show,
    "follows.add": follow_add,
    "follows.list": follow_list,
    "follows.remove": follow_remove,
    "queue.submit": submit,
    "queue.list": list_jobs,
    "queue.get": get,
    "queue.cancel": _each(_cancel, _cancelled),
    "queue.retry": retry,
    "queue.remove": _each(_remove, _forget),
    "queue.pause": _pause_or_resume(True),
    "queue.annotate": annotate,
    "queue.priority": set_priority,
    "queue.resume": _pause_or_resume(False),
    "queue.stats": stats,
    "queue.wait": wait,
    "daemon.hello": hello,
    "daemon.shutdown": shutdown,
}


async def dispatch(ctx: Context, method: str, params: dict[str, Any]) -> Any:
    """Run one method; raises KeyError for unknown methods, TidalqError for failures."""
    handler = METHOD_TABLE[method]
    return await handler(ctx, params)

