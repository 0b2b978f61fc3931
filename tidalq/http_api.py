"""The seed's HTTP API (optional): ``/api/download-queue`` for web clients.

Bodies are the seed's (``{"success": true, …}``); errors are
``{"success": false, "error": "…"}`` with 400 (bad input, naming the field), 404 (unknown
job), 409 (illegal transition), 413 (body over 64 KiB), 415 (not JSON), 503 (store down).
Loopback-only unless ``http_token`` is set; with a token every request needs
``Authorization: Bearer TOKEN`` (compared in constant time). Cross-origin requests get no
CORS headers unless their origin is listed in ``http_cors_origins``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tidalq.errors import (
    AmbiguousJobId,
    ConfigError,
    IllegalTransition,
    InvalidInput,
    JobNotFound,
    StoreUnavailable,
)
from tidalq.jsontext import BadJson, loads_strict
from tidalq.models import parse_status
from tidalq.rpc import Context, stats, submit

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
BASE = "/api/download-queue"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _fail(status: int, message: str) -> web.Response:
    return web.json_response({"success": False, "error": message}, status=status)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(listen_host: str, port: int, extra: tuple[str, ...]) -> set[str]:
    """The Host header values that name this listener, with and without the port."""
    names = {"127.0.0.1", "localhost", "[::1]", listen_host.lower()}
    if ":" in listen_host and not listen_host.startswith("["):
        names.add(f"[{listen_host.lower()}]")
    allowed = {n for name in names for n in (name, f"{name}:{port}")} - {"::1", f"::1:{port}"}
    return allowed | {h.lower() for h in extra}


class HttpApi:
    """The aiohttp application and its listener."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.allowed_hosts: set[str] = set()
        self.runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=MAX_BODY_BYTES,
                                   middlewares=[self._errors, self._cors, self._auth])
        r = self.app.router
        r.add_post(BASE, self.post_job)
        r.add_get(BASE, self.list_jobs)
        r.add_get(f"{BASE}/stats", self.get_stats)
        r.add_get(BASE + "/{job_id}", self.get_job)
        r.add_delete(BASE + "/{job_id}", self.delete_job)

    async def start(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self.allowed_hosts = allowed_hosts(host, int(port), self.ctx.settings.http_allowed_hosts)
        host = host.strip("[]")
        if not is_loopback(host) and not self.ctx.settings.http_token:
            raise ConfigError(f"http_listen {listen} is not loopback: set http_token first",
                              "http_token")
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, host, int(port)).start()
        log.info("HTTP API on http://%s/api/download-queue", listen)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # -- middlewares --------------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except InvalidInput as exc:
            return _fail(400, str(exc))
        except (JobNotFound, AmbiguousJobId) as exc:
            return _fail(404, str(exc))
        except IllegalTransition as exc:
            return _fail(409, str(exc))
        except StoreUnavailable as exc:
            return _fail(503, str(exc))
        except web.HTTPRequestEntityTooLarge:
            return _fail(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
        except web.HTTPException as exc:
            return _fail(exc.status, exc.reason)
        except Exception:
            log.exception("HTTP API handler failed")
            return _fail(500, "internal error")

    @web.middleware
    async def _cors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and origin in self.ctx.settings.http_cors_origins
        if request.method == "OPTIONS":
            if not allowed:
                return _fail(403, "cross-origin requests are not allowed")
            return web.Response(status=204, headers=self._cors_headers(origin or ""))
        response = await handler(request)
        if allowed:
            response.headers.update(self._cors_headers(origin or ""))
        return response

    @staticmethod
    def _cors_headers(origin: str) -> dict[str, str]:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                "Access-Control-Allow-Methods": "GET, POST, DELETE",
                "Access-Control-Allow-Headers": "Content-Type, Authorization"}

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = self.ctx.settings.http_token
        if token:
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return _fail(401, "missing or wrong bearer token")
        elif request.headers.get("Host", "").lower() not in self.allowed_hosts:
            # without a token, a page on any site could reach us through DNS rebinding
            return _fail(403, f"Host {request.headers.get('Host', '')!r} is not allowed: "
                              "add it to http_allowed_hosts or set http_token")
        return await handler(request)

    # -- endpoints ----------------------------------------------------------------------------
    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES,
                                                actual_size=request.content_length)
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(reason="send application/json")
        raw = await request.read()
        try:
            body = loads_strict(raw)
        except BadJson as exc:
            raise InvalidInput(f"body: {exc}", "body") from None
        except (ValueError, RecursionError):
            raise InvalidInput("body is not valid JSON", "body") from None
        if not isinstance(body, dict):
            raise InvalidInput("body must be a JSON object", "body")
        return body

    async def post_job(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        for key in body:
            if key not in ("job", "priority", "maxRetries", "maxAttempts"):
                raise InvalidInput(f"unknown field {key}", key)
        if "job" not in body:
            raise InvalidInput("job is required", "job")
        params: dict[str, Any] = {"job": body["job"]}
        if "priority" in body:
            params["priority"] = body["priority"]
        if "maxAttempts" in body:
            params["maxAttempts"] = body["maxAttempts"]
        elif "maxRetries" in body:  # the seed's name: retries after the first attempt
            retries = body["maxRetries"]
            if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
                raise InvalidInput("maxRetries must be a whole number from 0", "maxRetries")
            params["maxAttempts"] = retries + 1
        out = await submit(self.ctx, params)
        created = out["created"][0]
        return web.json_response(
            {"success": True, "jobId": out["jobIds"][0],
             "message": "Job added to queue" if created else "An equal job is already queued"},
            status=201 if created else 200)

    async def list_jobs(self, request: web.Request) -> web.Response:
        q = request.query
        status = parse_status(q["status"]) if "status" in q else None
        limit = _query_int(q.get("limit"), "limit", 100, 1, 1000)
        offset = _query_int(q.get("offset"), "offset", 0, 0, 9000)
        jobs = await self.ctx.store.list_jobs(status, limit + offset)
        page = [j.to_json() for j in jobs[offset:offset + limit]]
        return web.json_response({"success": True, "jobs": page, "count": len(page)})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(await stats(self.ctx, {}))

    async def _resolve(self, request: web.Request) -> str:
        job_id = request.match_info["job_id"]
        if len(job_id) > 64:
            raise InvalidInput("jobId is too long", "jobId")
        return await self.ctx.store.resolve(job_id)

    async def get_job(self, request: web.Request) -> web.Response:
        job = await self.ctx.store.get(await self._resolve(request))
        return web.json_response({"success": True, "job": job.to_json()})

    async def delete_job(self, request: web.Request) -> web.Response:
        job_id = await self._resolve(request)
        job = await self.ctx.store.get(job_id)
        if job.status.live:
            await self.ctx.store.cancel(job_id)
            self.ctx.pool.cancel_local(job_id)
            return web.json_response({"success": True, "message": "Job cancelled"})
        await self.ctx.store.remove(job_id)
        return web.json_response({"success": True, "message": "Job removed"})


def _query_int(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise InvalidInput(f"{name} must be a whole number from {low} to {high}", name)
    return int(raw)
