"""A fake of TIDAL's own login and v1 API, over the fake's catalogue and CDN, written from
public descriptions of TIDAL's API (shared/design/account.md); mounted at ``/tidal/`` of
the fake upstream, so ``tidal_auth_url = <fake>/tidal/auth/v1/oauth2`` and
``tidal_api_url = <fake>/tidal/v1``.

- **Device login:** ``device_authorization`` gives a code and a link (without a scheme,
  like TIDAL's); ``GET /tidal/link/{userCode}`` is the person approving it on their phone
  (``?deny=1`` refusing). Polling ``token`` answers ``authorization_pending`` until then,
  ``slow_down`` when polled faster than the ``interval``, ``expired_token`` after
  ``expiresIn``. ``revoke`` forgets a token.
- **Tokens** live ``token_ttl_s``; an expired one gets 401 subStatus 11003, an unknown one
  11002. ``grant_type=refresh_token`` issues a new access token (no new refresh token).
- **The API** checks the bearer token and ``countryCode`` on every call and serves tracks,
  albums with paged items, playlists, mixes, artists with their listings, lyrics, playback
  info (BTS for LOSSLESS, DASH for hi-res, over the same media as hifi-api), the session,
  the subscription and the user's favourites (paged, newest first).
- **Faults** (``TidalFaults``, or ``POST /tidal/_fake/faults``): 429s with Retry-After,
  refused or failing refreshes, expiring every token now, a subscription that forbids
  streaming, slower polling demands. Every request is recorded by the fake upstream.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tidalq.config import DEFAULT_TIDAL_CLIENT_ID, DEFAULT_TIDAL_CLIENT_SECRET

if TYPE_CHECKING:
    from tidalq.testing.fakeapi import FakeUpstream

USER_ID = 5550001
TEST_CLIENT_ID = "tidalqTestClient"
TEST_CLIENT_SECRET = "dGVzdC1zZWNyZXQ="
# the clients the fake TIDAL knows: python-tidal's (tidalq's default) and one for tests
CLIENTS = {DEFAULT_TIDAL_CLIENT_ID: DEFAULT_TIDAL_CLIENT_SECRET,
           TEST_CLIENT_ID: TEST_CLIENT_SECRET}
COUNTRY = "NO"
PAGE_LIMIT = 100


@dataclass
class TidalFaults:
    token_ttl_s: float = 3600.0  # lifetime of the access tokens issued from now on
    interval_s: float = 1.0  # the polling interval a device login asks for
    code_ttl_s: float = 300.0
    rate_limit: int = 0  # next N API requests answer 429…
    retry_after: str | None = "1"  # …with this Retry-After
    refuse_refresh: bool = False  # refreshes answer 400 invalid_grant
    refresh_500: int = 0  # next N refreshes answer 503
    no_streaming: bool = False  # playback answers 403 subStatus 4033
    best_quality: str = "HI_RES_LOSSLESS"  # the subscription's highestSoundQuality

    def take(self, name: str) -> bool:
        count: int = getattr(self, name)
        if count > 0:
            setattr(self, name, count - 1)
            return True
        return False


@dataclass
class Device:
    user_code: str
    expires_at: float
    client_id: str
    approved: bool | None = None  # None while waiting, False when refused
    last_poll: float = 0.0


@dataclass
class Favourites:
    tracks: list[int] = field(default_factory=list)
    albums: list[int] = field(default_factory=list)
    playlists: list[str] = field(default_factory=list)
    artists: list[int] = field(default_factory=list)


class FakeTidal:
    """See the module docstring. ``api`` is the fake upstream whose catalogue and CDN serve."""

    def __init__(self, api: FakeUpstream) -> None:
        self.api = api
        self.catalog = api.catalog
        self.faults = TidalFaults()
        self.devices: dict[str, Device] = {}
        self.access: dict[str, float] = {}  # token -> expiry (time.time())
        self.refresh_tokens: set[str] = set()
        self.favourites = Favourites()
        self.refreshes = 0
        self.revoked: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_post("/auth/v1/oauth2/device_authorization", self.device_authorization)
        r.add_post("/auth/v1/oauth2/token", self.token)
        r.add_post("/auth/v1/oauth2/revoke", self.revoke)
        r.add_get("/link/{code}", self.link)
        r.add_post("/_fake/faults", self.set_faults)
        r.add_post("/_fake/favourites", self.set_favourites)
        for path, handler in (
                ("sessions", self.session), ("users/{uid}/subscription", self.subscription),
                ("tracks/{id}", self.track), ("tracks/{id}/lyrics", self.lyrics),
                ("tracks/{id}/playbackinfopostpaywall", self.playback),
                ("albums/{id}", self.album), ("albums/{id}/items", self.album_items),
                ("playlists/{id}", self.playlist), ("playlists/{id}/items", self.playlist_items),
                ("mixes/{id}/items", self.mix_items), ("pages/mix", self.mix_page),
                ("artists/{id}", self.artist), ("artists/{id}/albums", self.artist_albums),
                ("users/{uid}/favorites/{kind}", self.favorites), ("search", self.search)):
            r.add_get(f"/v1/{path}", self._authorized(handler))
        return app

    # -- login ------------------------------------------------------------------------------
    async def device_authorization(self, request: web.Request) -> web.Response:
        form = await request.post()
        refused = _client_refused(request, str(form.get("client_id") or ""))
        if refused is not None:
            return refused
        device_code = secrets.token_urlsafe(24)
        user_code = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(5))
        self.devices[device_code] = Device(user_code, time.time() + self.faults.code_ttl_s,
                                           str(form["client_id"]))
        host = f"{request.host}/tidal/link"
        return web.json_response({
            "deviceCode": device_code, "userCode": user_code, "verificationUri": host,
            "verificationUriComplete": f"{host}/{user_code}",
            "expiresIn": int(self.faults.code_ttl_s), "interval": self.faults.interval_s})

    async def link(self, request: web.Request) -> web.Response:
        """The person opens the link and approves (or refuses) the device."""
        code = request.match_info["code"]
        device = next((d for d in self.devices.values() if d.user_code == code), None)
        if device is None:
            return web.Response(status=404, text="no such code")
        device.approved = "deny" not in request.query
        return web.Response(text="approved" if device.approved else "refused")

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        refused = _client_refused(request, str(form.get("client_id") or ""))
        if refused is not None:
            return refused
        grant = form.get("grant_type")
        if grant == "refresh_token":
            return self._refresh(str(form.get("refresh_token") or ""))
        if grant != "urn:ietf:params:oauth:grant-type:device_code":
            return _oauth_error(400, "unsupported_grant_type", "unknown grant")
        device = self.devices.get(str(form.get("device_code") or ""))
        if device is None:
            return _oauth_error(400, "invalid_grant", "unknown device code")
        now = time.time()
        if now >= device.expires_at:
            return _oauth_error(400, "expired_token", "the code expired")
        too_soon = now - device.last_poll < self.faults.interval_s * 0.9
        device.last_poll = now
        if device.approved is False:
            return _oauth_error(400, "access_denied", "the user refused")
        if device.approved is None:
            if too_soon:
                return _oauth_error(400, "slow_down", "poll at the interval")
            return _oauth_error(400, "authorization_pending", "waiting for the user",
                                sub_status=1002)
        del self.devices[str(form["device_code"])]
        refresh = secrets.token_urlsafe(32)
        self.refresh_tokens.add(refresh)
        return web.json_response({**self._issue(), "refresh_token": refresh,
                                  "scope": "r_usr w_usr w_sub", "user_id": USER_ID,
                                  "user": {"userId": USER_ID, "countryCode": COUNTRY,
                                           "username": "fake@example.com"}})

    def _issue(self) -> dict[str, Any]:
        access = secrets.token_urlsafe(32)
        self.access[access] = time.time() + self.faults.token_ttl_s
        return {"access_token": access, "token_type": "Bearer",
                "expires_in": int(self.faults.token_ttl_s)}

    def _refresh(self, refresh: str) -> web.Response:
        self.refreshes += 1
        if self.faults.take("refresh_500"):
            return web.json_response({"error": "server_error"}, status=503)
        if self.faults.refuse_refresh or refresh not in self.refresh_tokens:
            return _oauth_error(400, "invalid_grant", "Refresh token is no longer valid")
        return web.json_response(self._issue())

    async def revoke(self, request: web.Request) -> web.Response:
        token = str((await request.post()).get("token") or "")
        self.revoked.append(token)
        self.refresh_tokens.discard(token)
        self.access.pop(token, None)
        return web.Response(status=200)

    def expire_all_tokens(self) -> None:
        """Every access token issued so far expires now (refresh tokens stay good)."""
        for token in self.access:
            self.access[token] = 0.0

    # -- control ----------------------------------------------------------------------------
    async def set_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        for key, value in body.items():
            if key == "expire_all_tokens":
                self.expire_all_tokens()
            elif hasattr(self.faults, key):
                setattr(self.faults, key, value)
            else:
                return web.json_response({"error": f"unknown fault {key}"}, status=400)
        return web.json_response(asdict(self.faults))

    async def set_favourites(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.favourites = Favourites(**body)
        return web.json_response(asdict(self.favourites))

    # -- the API ----------------------------------------------------------------------------
    def _authorized(self, handler: Any) -> Any:
        async def checked(request: web.Request) -> web.StreamResponse:
            given = request.headers.get("Authorization", "")
            token = given.removeprefix("Bearer ")
            if token not in self.access:
                return _api_error(401, 11002, "Token is invalid")
            if time.time() >= self.access[token]:
                return _api_error(401, 11003, "The token has expired.")
            if self.faults.take("rate_limit"):
                headers = {"Retry-After": self.faults.retry_after} \
                    if self.faults.retry_after else {}
                return web.json_response({"status": 429, "subStatus": 0,
                                          "userMessage": "Too many requests"}, status=429,
                                         headers=headers)
            if request.query.get("countryCode") != COUNTRY and request.path != "/tidal/v1/sessions":
                return _api_error(400, 1002, "countryCode is missing or wrong")
            result: web.StreamResponse = await handler(request)
            return result

        return checked

    async def session(self, request: web.Request) -> web.Response:
        return web.json_response({"sessionId": "fake", "userId": USER_ID,
                                  "countryCode": COUNTRY})

    async def subscription(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ACTIVE", "subscription": {"type": "HIFI_PLUS"},
                                  "highestSoundQuality": self.faults.best_quality})

    def _number(self, request: web.Request) -> int:
        raw = request.match_info["id"]
        return int(raw) if raw.isdigit() else -1

    async def track(self, request: web.Request) -> web.Response:
        track = self.catalog.tracks.get(self._number(request))
        if track is None:
            return _api_error(404, 2001, "Track not found")
        return web.json_response(self.catalog.track_json(track, self.api.media.duration(track)))

    async def lyrics(self, request: web.Request) -> web.Response:
        track = self.catalog.tracks.get(self._number(request))
        if track is None or not track.lyrics:
            return _api_error(404, 2001, "Lyrics not found")
        return web.json_response({"trackId": track.id, "lyrics": "First line\nSecond line",
                                  "subtitles": "[00:00.50] First line\n[00:02.00] Second line"})

    async def playback(self, request: web.Request) -> web.Response:
        track = self.catalog.tracks.get(self._number(request))
        if track is None:
            return _api_error(404, 2001, "Track not found")
        if self.faults.no_streaming:
            return _api_error(403, 4033, "Your subscription does not allow streaming")
        asked = request.query.get("audioquality", "LOSSLESS")
        if asked == "HI_RES_LOSSLESS" and self.faults.best_quality != "HI_RES_LOSSLESS":
            asked = "LOSSLESS"
        return web.json_response(await self.api.playback(request, track, asked))

    async def album(self, request: web.Request) -> web.Response:
        album = self.catalog.albums.get(self._number(request))
        if album is None:
            return _api_error(404, 2001, "Album not found")
        return web.json_response(self.catalog.album_json(album))

    async def album_items(self, request: web.Request) -> web.Response:
        album = self.catalog.albums.get(self._number(request))
        if album is None:
            return _api_error(404, 2001, "Album not found")
        durations = {t.id: self.api.media.duration(t) for t in album.tracks}
        return _paged(request, self.catalog.album_items(album, durations))

    async def playlist(self, request: web.Request) -> web.Response:
        playlist = self.catalog.playlists.get(request.match_info["id"])
        if playlist is None:
            return _api_error(404, 2001, "Playlist not found")
        videos = sum(1 for i in playlist.items if isinstance(i, tuple))
        return web.json_response({
            "uuid": playlist.uuid, "title": playlist.title, "description": "",
            "numberOfTracks": len(playlist.items) - videos, "numberOfVideos": videos,
            "type": "USER", "creator": {"id": USER_ID}})

    async def playlist_items(self, request: web.Request) -> web.Response:
        playlist = self.catalog.playlists.get(request.match_info["id"])
        if playlist is None:
            return _api_error(404, 2001, "Playlist not found")
        return _paged(request, self._items(playlist.items))

    def _items(self, items: list[int | tuple[str, int]]) -> list[dict[str, Any]]:
        return [{"type": "video", "item": {"id": i[1], "title": "A Video"}, "cut": None}
                if isinstance(i, tuple) else
                {"type": "track", "item": self.api.listed_track(i), "cut": None} for i in items]

    async def mix_items(self, request: web.Request) -> web.Response:
        mix = self.catalog.mixes.get(request.match_info["id"])
        if mix is None:
            return _api_error(404, 2001, "Mix not found")
        return _paged(request, self._items(mix.items))

    async def mix_page(self, request: web.Request) -> web.Response:
        mix = self.catalog.mixes.get(request.query.get("mixId", ""))
        if mix is None:
            return _api_error(404, 2001, "Mix not found")
        return web.json_response({"id": f"mix-{mix.uuid}", "title": mix.title, "rows": []})

    async def artist(self, request: web.Request) -> web.Response:
        artist = self.catalog.artists.get(self._number(request))
        if artist is None:
            return _api_error(404, 2001, "Artist not found")
        return web.json_response({"id": artist.id, "name": artist.name})

    async def artist_albums(self, request: web.Request) -> web.Response:
        artist = self.catalog.artists.get(self._number(request))
        if artist is None:
            return _api_error(404, 2001, "Artist not found")
        ids = artist.listings.get(request.query.get("filter", "ALBUMS"), [])
        return _paged(request, [self.catalog.album_json(self.catalog.albums[i]) for i in ids])

    async def search(self, request: web.Request) -> web.Response:
        """``/v1/search?query=&types=ALBUMS,TRACKS&limit=``: a page per type asked."""
        query = request.query.get("query", "")
        types = [t.strip().lower() for t in request.query.get("types", "").split(",") if t]
        limit = int(request.query.get("limit", "10") or 10)
        if not query or not types or limit > PAGE_LIMIT:
            return _api_error(400, 1002, "query, types and a limit up to 100 are needed")
        return web.json_response({
            t: {"limit": limit, "offset": 0, "items": self.catalog.search(t[:-1], query)[:limit]}
            for t in types if t in ("tracks", "albums", "artists", "playlists")})

    async def favorites(self, request: web.Request) -> web.Response:
        if request.match_info["uid"] != str(USER_ID):
            return _api_error(403, 0, "not your favourites")
        kind = request.match_info["kind"]
        if kind == "tracks":
            items = [self.api.listed_track(i) for i in self.favourites.tracks]
        elif kind == "albums":
            items = [self.catalog.album_json(self.catalog.albums[i])
                     for i in self.favourites.albums]
        elif kind == "playlists":
            items = [{"uuid": u, "title": self.catalog.playlists[u].title}
                     for u in self.favourites.playlists]
        elif kind == "artists":
            items = [{"id": a, "name": self.catalog.artists[a].name}
                     for a in self.favourites.artists]
        else:
            return _api_error(404, 2001, "no such favourites")
        return _paged(request, [{"created": "2026-12-01T00:00:00.000+0000", "item": i}
                                for i in items])


def _client_refused(request: web.Request, client_id: str) -> web.Response | None:
    """TIDAL knows its clients: an unknown id, or a Basic secret that is not its, is 401."""
    if client_id not in CLIENTS:
        return _oauth_error(401, "invalid_client", f"Client id {client_id!r} not found")
    given = request.headers.get("Authorization", "")
    if given.startswith("Basic "):
        try:
            pair = base64.b64decode(given[6:]).decode()
        except ValueError:
            pair = ""
        if pair != f"{client_id}:{CLIENTS[client_id]}":
            return _oauth_error(401, "invalid_client", "Client authentication failed")
    return None


def _paged(request: web.Request, items: list[Any]) -> web.Response:
    q = request.query
    limit = int(q.get("limit", "10")) if q.get("limit", "10").isdigit() else 10
    if limit > PAGE_LIMIT:
        return _api_error(400, 1002, f"limit must be at most {PAGE_LIMIT}")
    offset = int(q.get("offset", "0")) if q.get("offset", "0").isdigit() else 0
    return web.json_response({"limit": limit, "offset": offset,
                              "totalNumberOfItems": len(items),
                              "items": items[offset:offset + limit]})


def _api_error(status: int, sub_status: int, message: str) -> web.Response:
    return web.json_response({"status": status, "subStatus": sub_status,
                              "userMessage": message}, status=status)


def _oauth_error(status: int, error: str, description: str,
                 sub_status: int | None = None) -> web.Response:
    body: dict[str, Any] = {"status": status, "error": error,
                            "error_description": description}
    if sub_status is not None:
        body["sub_status"] = sub_status
    return web.json_response(body, status=status)
