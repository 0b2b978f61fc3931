"""What every HTTP request passes before a route sees it: the error mapping (one JSON shape,
``{"success": false, "error": "…"}``, with the status each error class means), CORS for the
origins in ``http_cors_origins``, and the door — a bearer token when ``http_token`` is set,
otherwise loopback only and a Host header that names this listener (no DNS rebinding).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from tidalq.config import Settings
from tidalq.errors import (
    AmbiguousJobId,
    DownloadError,
    FollowNotFound,
    IllegalTransition,
    InvalidInput,
    JobNotFound,
    StoreUnavailable,
)
from tidalq.jsontext import BadJson, loads_strict

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def fail(status: int, message: str) -> web.Response:
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


def is_public(request: web.Request) -> bool:
    """The page and its files hold no data: a browser loads them before it has a token."""
    return request.method == "GET" and (request.path in ("/", "/favicon.ico") or
                                        request.path.startswith("/static/"))


class Guards:
    """The middlewares, in order: errors outermost, then CORS, then the door."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.allowed_hosts: set[str] = set()  # set once the listener's address is known

    @property
    def middlewares(self) -> list[Middleware]:
        return [self.errors, self.cors, self.door]

    @web.middleware
    async def errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except InvalidInput as exc:
            return fail(400, str(exc))
        except FollowNotFound as exc:
            return fail(404, str(exc))
        except JobNotFound:
            return fail(404, "Job not found")
        except AmbiguousJobId as exc:
            return fail(404, str(exc))
        except IllegalTransition as exc:
            return fail(409, str(exc))
        except StoreUnavailable as exc:
            return fail(503, str(exc))
        except DownloadError as exc:  # the upstream failed (search): not our fault
            return fail(502, str(exc))
        except web.HTTPRequestEntityTooLarge:
            return fail(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
        except web.HTTPException as exc:
            return fail(exc.status, exc.reason)
        except Exception:
            log.exception("HTTP API handler failed")
            return fail(500, "internal error")

    @web.middleware
    async def cors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and origin in self.settings.http_cors_origins
        if request.method == "OPTIONS":
            if not allowed:
                return fail(403, "cross-origin requests are not allowed")
            return web.Response(status=204, headers=cors_headers(origin or ""))
        response = await handler(request)
        if allowed:
            response.headers.update(cors_headers(origin or ""))
        return response

    @web.middleware
    async def door(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = self.settings.http_token
        if token and not is_public(request):
            given = request.headers.get("Authorization", "")
            if request.path == "/api/events" and "token" in request.query:
                given = f"Bearer {request.query['token']}"  # EventSource sends no headers
            expected = f"Bearer {token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return fail(401, "missing or wrong bearer token")
        elif request.headers.get("Host", "").lower() not in self.allowed_hosts:
            # without a token, a page on any site could reach us through DNS rebinding
            return fail(403, f"Host {request.headers.get('Host', '')!r} is not allowed: "
                             "add it to http_allowed_hosts or set http_token")
        return await handler(request)


def cors_headers(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
            "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE",
            "Access-Control-Allow-Headers": "Content-Type, Authorization"}


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object: at most 64 KiB, ``application/json``, strict JSON."""
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
