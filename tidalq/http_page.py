"""The page at ``/`` and what it talks to: its static files (a strict CSP: images from the
configured cover host only), ``POST /api/add`` (any TIDAL link and a quality),
``GET /api/search`` and ``GET /api/artist/{id}/releases`` (finding), and ``GET
/api/events``, Server-Sent Events of the job events (the ones `tidalq watch` reads),
resumable with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from tidalq import links
from tidalq.errors import InvalidInput, StoreUnavailable
from tidalq.http_guard import json_body
from tidalq.models import ID_FIELDS
from tidalq.rpc import Context, releases, search, submit

SSE_KEEPALIVE_S = 15.0
WEB_FILES = {"index.html": "text/html", "app.js": "text/javascript",
             "style.css": "text/css"}


async def _no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204)


def _asset(name: str, cover_origin: str) -> web.Response:
    if name not in WEB_FILES:
        raise web.HTTPNotFound(reason="no such file")
    body = resources.files("tidalq.web").joinpath(name).read_bytes()
    # images from the configured cover host only; nothing else leaves 'self'
    policy = (f"default-src 'self'; style-src 'self'; script-src 'self'; "
              f"img-src 'self' {cover_origin}")
    return web.Response(body=body, content_type=WEB_FILES[name], charset="utf-8",
                        headers={"Cache-Control": "no-cache",
                                 "Content-Security-Policy": policy})


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class PageRoutes:
    """The page's routes; ``closing`` ends the event streams (the daemon is stopping)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.closing = False

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", self.page)
        router.add_get("/static/{name}", self.static)
        router.add_get("/favicon.ico", _no_icon)
        router.add_get("/api/events", self.events)
        router.add_post("/api/add", self.add_link)
        router.add_get("/api/search", self.search)
        router.add_get("/api/artist/{artist_id}/releases", self.releases)

    async def page(self, request: web.Request) -> web.Response:
        return _asset("index.html", origin_of(self.ctx.settings.cover_url))

    async def static(self, request: web.Request) -> web.Response:
        return _asset(request.match_info["name"], origin_of(self.ctx.settings.cover_url))

    async def search(self, request: web.Request) -> web.Response:
        """``GET /api/search?q=&type=album&limit=20``: the catalogue's results."""
        q = request.query
        limit = q.get("limit", "20")
        params: dict[str, Any] = {"query": q.get("q", ""), "kind": q.get("type", "album"),
                                  "limit": int(limit) if limit.isascii() and limit.isdigit()
                                  and len(limit) < 6 else -1}
        return web.json_response({"success": True, **await search(self.ctx, params)})

    async def releases(self, request: web.Request) -> web.Response:
        """``GET /api/artist/{id}/releases``: what an artist result opens on the page."""
        answer = await releases(self.ctx, {"id": request.match_info["artist_id"]})
        return web.json_response({"success": True, **answer})

    async def add_link(self, request: web.Request) -> web.Response:
        """What the page's field sends: any TIDAL link, and a quality."""
        body = await json_body(request)
        link = body.get("link")
        if not isinstance(link, str) or not link.strip():
            raise InvalidInput("link must be a TIDAL link", "link")
        kind, ref = links.parse(link)
        job: dict[str, Any] = {"type": kind, ID_FIELDS[kind]: ref}
        if body.get("quality"):
            job["quality"] = body["quality"]
        out = await submit(self.ctx, {"job": job})
        return web.json_response({"success": True, "jobId": out["jobIds"][0],
                                  "created": out["created"][0]})

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: the job events `tidalq watch` reads, resumable with
        ``Last-Event-ID`` (or ``?after=``); a comment every 15 s keeps proxies open."""
        store = self.ctx.store
        after = request.headers.get("Last-Event-ID") or request.query.get("after")
        if after is not None and (len(after) > 64 or not after.replace("-", "").isalnum()):
            raise InvalidInput("Last-Event-ID is not an event id", "Last-Event-ID")
        cursor = after or await store.last_event_id()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(b": tidalq events\n\n")
        quiet_s = 0.0
        while not self.closing:  # checked each second: a stopping daemon ends the stream
            try:
                batch = await store.wait_events(cursor, 1.0)
            except StoreUnavailable:
                batch = []
                await asyncio.sleep(1)
            quiet_s = 0.0 if batch else quiet_s + 1.0
            chunk = b"".join(
                f"id: {e.id}\nevent: job\ndata: {json.dumps(e.to_json())}\n\n".encode()
                for e in batch)
            if quiet_s >= SSE_KEEPALIVE_S:
                chunk, quiet_s = b": keep-alive\n\n", 0.0
            if batch:
                cursor = batch[-1].id
            try:
                if chunk:
                    await response.write(chunk)
            except ConnectionError:
                break
        return response
