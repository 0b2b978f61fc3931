"""The seed's HTTP API (optional): ``/api/download-queue`` for web clients, drop-in for the
seed's web app (shared/design/web-client.md; shapes in :mod:`tidalq.webshape`).

Routes: ``POST``/``GET /api/download-queue``, ``GET``/``PATCH``/``DELETE …/{jobId}``,
``GET …/stats``, ``…/dashboard``, ``…/metrics``; ``/api/follows`` and ``GET /api/search``
(502 when the upstream fails). Every action goes through the same RPC
handlers as the socket and the CLI. Bodies are the seed's (``{"success": true, …}``);
errors are ``{"success": false, "error": "…"}`` with 400 (bad input naming the field, or
an action that does not apply, saying why), 404 (unknown job), 409 (illegal transition),
413 (body over 64 KiB), 415 (not JSON), 503 (store down).
Who may call, and how errors look, is :mod:`tidalq.http_guard`; the page at ``/`` and its
event stream are :mod:`tidalq.http_page`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tidalq.errors import ConfigError, InvalidInput
from tidalq.http_guard import MAX_BODY_BYTES, Guards, allowed_hosts, is_loopback, json_body
from tidalq.http_page import PageRoutes
from tidalq.models import Job, now_ms, parse_status
from tidalq.rpc import (
    METHOD_TABLE,
    Context,
    annotate,
    follow_add,
    follow_list,
    follow_remove,
    set_priority,
    stats,
    submit,
)
from tidalq.store.base import MAX_LIST
from tidalq.terms import JobStatus
from tidalq.webshape import metrics, queue_counts, web_job

log = logging.getLogger(__name__)

BASE = "/api/download-queue"


class HttpApi:
    """The aiohttp application and its listener."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.guards = Guards(ctx.settings)
        self.page = PageRoutes(ctx)
        self.runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=MAX_BODY_BYTES,
                                   middlewares=self.guards.middlewares)
        r = self.app.router
        r.add_post(BASE, self.post_job)
        r.add_get(BASE, self.list_jobs)
        r.add_get(f"{BASE}/stats", self.get_stats)
        r.add_get(f"{BASE}/dashboard", self.get_dashboard)
        r.add_get(f"{BASE}/metrics", self.get_metrics)
        r.add_get(BASE + "/{job_id}", self.get_job)
        r.add_patch(BASE + "/{job_id}", self.patch_job)
        r.add_delete(BASE + "/{job_id}", self.delete_job)
        r.add_get("/api/follows", self.list_follows)
        r.add_post("/api/follows", self.add_follow)
        r.add_delete("/api/follows/{follow_id}", self.remove_follow)
        self.page.add_to(r)

    async def start(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self.guards.allowed_hosts = allowed_hosts(host, int(port),
                                                  self.ctx.settings.http_allowed_hosts)
        host = host.strip("[]")
        if not is_loopback(host) and not self.ctx.settings.http_token:
            raise ConfigError(f"http_listen {listen} is not loopback: set http_token first",
                              "http_token")
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, host, int(port)).start()
        log.info("HTTP API on http://%s/api/download-queue", listen)

    async def close(self) -> None:
        self.page.closing = True
        if self.runner is not None:
            await self.runner.cleanup()

    # -- endpoints ----------------------------------------------------------------------------
    async def post_job(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        if "job" not in body:
            raise InvalidInput("job is required", "job")
        job = body["job"]
        if _flag(body, "forceOverwrite") and isinstance(job, dict):
            job = {**job, "forceOverwrite": True}
        params: dict[str, Any] = {"job": job}
        if "priority" in body:
            params["priority"] = body["priority"]
        if "maxAttempts" in body:
            params["maxAttempts"] = body["maxAttempts"]
        elif "maxRetries" in body:  # the seed's name: retries after the first attempt
            retries = body["maxRetries"]
            if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
                raise InvalidInput("maxRetries must be a whole number from 0", "maxRetries")
            params["maxAttempts"] = retries + 1
        no_dedupe = _flag(body, "checkDuplicate", default=True) is False
        out = await submit(self.ctx, params)
        created = out["created"][0]
        answer: dict[str, Any] = {
            "success": True, "jobId": out["jobIds"][0],
            "message": "Job added to queue" if created else "An equal job is already queued"}
        if no_dedupe and not created:
            answer["warning"] = ("checkDuplicate: false is not supported: tidalq never runs "
                                 "two equal jobs at once; the live one is returned")
        return web.json_response(answer, status=201 if created else 200)

    async def list_jobs(self, request: web.Request) -> web.Response:
        q = request.query
        status = parse_status(q["status"]) if "status" in q else None
        limit = _query_int(q.get("limit"), "limit", MAX_LIST, 1, MAX_LIST)
        offset = _query_int(q.get("offset"), "offset", 0, 0, MAX_LIST - 1)
        jobs = await self.ctx.store.list_jobs(status, min(MAX_LIST, limit + offset))
        page = [web_job(j) for j in jobs[offset:offset + limit]]
        return web.json_response({"success": True, "jobs": page, "count": len(page)})

    def _sources(self) -> dict[str, Any]:
        url = self.ctx.store.url
        return {"queueSource": "redis" if url.startswith(("redis", "unix")) else
                url.split(":", 1)[0] or "memory",
                "localMode": not self.ctx.settings.http_token,
                "rateLimiting": self.ctx.pool.rate_limiting()}

    async def _recent_finished(self) -> list[Job]:
        recent: list[Job] = []
        for status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
            recent += await self.ctx.store.list_jobs(status, RECENT_FINISHED)
        recent.sort(key=lambda j: j.completed_at or 0, reverse=True)
        return recent[:RECENT_FINISHED]

    async def get_stats(self, request: web.Request) -> web.Response:
        answer = await stats(self.ctx, {})
        counts = answer["queue"]  # read once, with the rest of the stats
        return web.json_response({
            **answer, **self._sources(), "queue": queue_counts(counts),
            "metrics": metrics(counts, await self._recent_finished()),
            "timestamp": now_ms()})

    async def get_metrics(self, request: web.Request) -> web.Response:
        counts = await self.ctx.store.stats()
        return web.json_response({
            "success": True, "generatedAt": _iso_now(),
            "source": self._sources()["queueSource"], "queue": queue_counts(counts),
            "metrics": metrics(counts, await self._recent_finished())})

    async def get_dashboard(self, request: web.Request) -> web.Response:
        """What the Download Manager polls twice a second: every running job with its
        tracks, the head of the queue, paused jobs and recent history, counts for the
        rest. Its cost does not grow with the queue."""
        store = self.ctx.store
        answer = await stats(self.ctx, {})
        counts = answer["queue"]  # read once, with the worker's state
        running = await store.list_jobs(JobStatus.PROCESSING, MAX_LIST)
        waiting = [*await store.list_jobs(JobStatus.QUEUED, DASHBOARD_QUEUED),
                   *await store.list_jobs(JobStatus.PAUSED, DASHBOARD_QUEUED)]
        recent = await self._recent_finished()
        live = {a["id"]: a for a in answer["active"]}
        jobs = [{**web_job(j), **live_figures(live.get(j.id))} for j in running] + \
            [web_job(j, with_tracks=False) for j in (*waiting, *recent)]
        figures = metrics(counts, recent)
        return web.json_response({
            "success": True, "jobs": jobs, "queue": queue_counts(counts),
            "metrics": figures, "worker": answer["worker"],
            "coverBase": self.ctx.settings.cover_url,
            "queueEtaS": queue_eta_s(list(live.values()), counts, figures,
                                     self.ctx.settings.max_concurrent),
            **self._sources(), "generatedAt": _iso_now()})

    async def _resolve(self, request: web.Request) -> str:
        job_id = request.match_info["job_id"]
        if len(job_id) > 64:
            raise InvalidInput("jobId is too long", "jobId")
        return await self.ctx.store.resolve(job_id)

    async def get_job(self, request: web.Request) -> web.Response:
        job = await self.ctx.store.get(await self._resolve(request))
        return web.json_response({"success": True, "job": web_job(job)})

    async def patch_job(self, request: web.Request) -> web.Response:
        """The app's job actions, each through the socket's handler for it."""
        job_id = await self._resolve(request)
        body = await json_body(request)
        action = body.get("action")
        if action == "set_musicbrainz_release":
            release = body.get("musicBrainzReleaseId")
            if not isinstance(release, str) or not release.strip():
                raise InvalidInput("musicBrainzReleaseId must be a non-empty string",
                                   "musicBrainzReleaseId")
            answer = await annotate(self.ctx, {
                "id": job_id, "fields": {"musicBrainzReleaseId": release.strip()}})
            job = answer["job"]
            retagged = job["job"].get("musicBrainzMatch") \
                if job["status"] == JobStatus.COMPLETED.value else None
            return _done(job_id, f"MusicBrainz release set: {retagged}" if retagged
                         else "MusicBrainz release set")
        if action == "set_priority":
            await set_priority(self.ctx, {"id": job_id, "priority": body.get("priority")})
            return _done(job_id, f"Priority set to {body.get('priority')}")
        if action not in JOB_ACTIONS:
            raise InvalidInput(f"action must be one of {', '.join(JOB_ACTIONS)}, "
                               "set_musicbrainz_release, set_priority", "action")
        said = await self._act(job_id, action)
        return _done(job_id, said or JOB_ACTIONS[action])

    async def _act(self, job_id: str, action: str) -> str | None:
        """Run the socket's handler for ``action``; its message, if it said one."""
        answer = await METHOD_TABLE[f"queue.{action}"](self.ctx, {"ids": [job_id]})
        result = answer["results"][0]
        if not result["ok"]:
            raise InvalidInput(f"Cannot {action} job {job_id}: {result['error']}", "action")
        message: str | None = result.get("message")
        return message

    async def delete_job(self, request: web.Request) -> web.Response:
        job_id = await self._resolve(request)
        job = await self.ctx.store.get(job_id)
        if job.status in (JobStatus.QUEUED, JobStatus.PROCESSING):
            raise InvalidInput(f"Cannot delete a {job.status.value} job. Use PATCH to cancel "
                               "instead.", "jobId")
        if job.status is JobStatus.PAUSED:
            await self._act(job_id, "cancel")
        await self._act(job_id, "remove")
        return _done(job_id, "Job deleted")


    # -- follows --------------------------------------------------------------------------
    async def list_follows(self, request: web.Request) -> web.Response:
        return web.json_response({"success": True, **await follow_list(self.ctx, {})})

    async def add_follow(self, request: web.Request) -> web.Response:
        answer = await follow_add(self.ctx, await json_body(request))
        return web.json_response({"success": True, **answer},
                                 status=201 if answer["created"] else 200)

    async def remove_follow(self, request: web.Request) -> web.Response:
        follow_id = request.match_info["follow_id"]
        answer = await follow_remove(self.ctx, {"id": follow_id})
        return web.json_response({"success": True, **answer})


JOB_ACTIONS = {"cancel": "Cancellation requested", "pause": "Pause requested",
               "resume": "Resume requested", "retry": "Retry requested"}
RECENT_FINISHED = 100
DASHBOARD_QUEUED = 100


def live_figures(active: dict[str, Any] | None) -> dict[str, Any]:
    """What a running job's daemon knows beyond the store: bytes, speed, ETA."""
    if active is None:
        return {}
    return {k: active[k] for k in ("bytesDone", "bytesTotal", "speedBps", "etaS")
            if active.get(k) is not None}


def queue_eta_s(active: list[dict[str, Any]], counts: dict[str, int],
                figures: dict[str, Any], slots: int) -> float | None:
    """When the queue will be empty, roughly: the longest running ETA, then the queued
    jobs at the recent average job duration over the download slots. None when unknown."""
    running = [a["etaS"] for a in active if a.get("etaS") is not None]
    queued = int(counts.get("queued", 0))
    average_s = float(figures.get("avg_job_duration_ms") or 0) / 1000
    if not running and not queued:
        return 0.0 if not counts.get("processing") else None
    if queued and not average_s:
        return None
    return round(max(running, default=0.0) + queued * average_s / max(1, slots), 1)


def _done(job_id: str, message: str) -> web.Response:
    return web.json_response({"success": True, "message": message, "jobId": job_id})


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _flag(body: dict[str, Any], key: str, default: bool = False) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"{key} must be true or false", key)
    return value


def _query_int(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise InvalidInput(f"{name} must be a whole number from {low} to {high}", name)
    return int(raw)
