"""The user's own TIDAL account: device login, the token file, and tokens kept valid.

- **Login** is OAuth 2.0 device authorization, as TIDAL's TV apps do it: a form POST to
  ``{tidal_auth_url}/device_authorization`` gives a code and a link (``link.tidal.com/…``,
  without a scheme); the person opens it anywhere (a phone will do) while we poll
  ``{tidal_auth_url}/token`` at the server's ``interval`` — ``authorization_pending`` waits,
  ``slow_down`` waits five seconds longer each time, ``expired_token`` and
  ``access_denied`` end the login with a message.
- **The token file** (``tidal-login.json`` in the state folder) is created 0600, written to
  a temporary file and renamed; it holds the tokens, their absolute expiry, the user id,
  country, best quality of the subscription and the client id they belong to. Tokens are
  never logged, never in the job store, never in a job's JSON; ``repr`` hides them.
- **Validity:** a token with under a minute left is refreshed before use, and a 401 causes one
  refresh; both under one lock, so four workers cause one refresh. A refused refresh (4xx)
  means the login is gone: :class:`LoginRequired` ("run tidalq login") until the next login.
  A refresh that fails otherwise (5xx, no answer) backs off, doubling up to five minutes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tidalq.errors import AuthFailed, UpstreamUnavailable
from tidalq.upstream.http import json_of, read_capped

log = logging.getLogger(__name__)

TOKEN_FILE = "tidal-login.json"
SCOPE = "r_usr w_usr w_sub"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
REFRESH_AHEAD_S = 60.0
REFRESH_BACKOFF_MAX_S = 300.0
SLOW_DOWN_STEP_S = 5.0
MAX_ANSWER_BYTES = 1 << 20
TIMEOUT = aiohttp.ClientTimeout(total=30)


class LoginRequired(AuthFailed):
    """No usable login: jobs that need the account fail with AUTH, not to be retried."""

    retryable = False


@dataclass(frozen=True)
class Tokens:
    """A login, as the token file keeps it."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: float  # epoch seconds
    user_id: int
    country_code: str
    client_id: str
    best_quality: str | None = None

    def public(self) -> dict[str, Any]:
        """What `tidalq status` shows of the account: no token."""
        return {"userId": self.user_id, "countryCode": self.country_code,
                "bestQuality": self.best_quality, "expiresAt": int(self.expires_at * 1000)}

    @classmethod
    def from_json(cls, raw: Any) -> Tokens:
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        return cls(access_token=str(raw["access_token"]),
                   refresh_token=str(raw["refresh_token"]),
                   expires_at=float(raw["expires_at"]), user_id=int(raw["user_id"]),
                   country_code=str(raw["country_code"]), client_id=str(raw["client_id"]),
                   best_quality=raw.get("best_quality"))


class TokenFile:
    """The login on disk; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Tokens | None:
        try:
            return Tokens.from_json(json.loads(self.path.read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the TIDAL login in %s: %s", self.path, type(exc).__name__)
            return None

    def save(self, tokens: Tokens) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        part = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a leftover part file of another mode is ours now
            os.write(fd, json.dumps(asdict(tokens)).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(part, self.path)

    def delete(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


@dataclass(frozen=True)
class DeviceCode:
    """What the person needs to approve a login, and what we poll with."""

    device_code: str = field(repr=False)
    user_code: str
    link: str  # with https:// added
    expires_in: float
    interval: float


class LoginFailed(LoginRequired):
    """The device login ended without a login (expired, refused, or the server said no)."""


class AuthServer:
    """TIDAL's OAuth endpoints for one client: form POSTs, answers as JSON."""

    def __init__(self, auth_url: str, client_id: str, client_secret: str,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.auth_url = auth_url.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.session = session

    async def post(self, endpoint: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """(status, JSON object) of a form POST; UpstreamUnavailable when there is none."""
        url = f"{self.auth_url}/{endpoint}"
        session = self.session or aiohttp.ClientSession()
        try:
            async with session.post(url, data=form, headers=self._basic_auth(),
                                    timeout=TIMEOUT) as resp:
                raw = await read_capped(resp, MAX_ANSWER_BYTES)
                status = resp.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamUnavailable(f"TIDAL's login server did not answer: {exc!r}") from exc
        finally:
            if self.session is None:
                await session.close()
        body = json_of(raw, MAX_ANSWER_BYTES, "TIDAL's login server")
        return status, body if isinstance(body, dict) else {}

    def _basic_auth(self) -> dict[str, str]:
        """The client secret as HTTP Basic, as TIDAL's apps send it (none without one)."""
        if not self.client_secret:
            return {}
        pair = f"{self.client_id}:{self.client_secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}

    async def start_device_login(self) -> DeviceCode:
        status, body = await self.post("device_authorization",
                                       {"client_id": self.client_id, "scope": SCOPE})
        if body.get("error") == "invalid_client":
            raise LoginFailed(f"TIDAL does not accept this client ({describe(body)}): check "
                              "tidal_client_id and tidal_client_secret")
        if status != 200 or not body.get("deviceCode") or not body.get("userCode"):
            raise LoginFailed(f"TIDAL did not start a login ({status}): {describe(body)}")
        link = str(body.get("verificationUriComplete") or body.get("verificationUri") or "")
        return DeviceCode(str(body["deviceCode"]), str(body["userCode"]),
                          link if "://" in link else f"https://{link}",
                          float(body.get("expiresIn") or 300), float(body.get("interval") or 2))

    async def poll(self, code: DeviceCode) -> dict[str, Any] | str:
        """The token answer once approved, else the error word (``authorization_pending``…)."""
        status, body = await self.post("token", {
            "client_id": self.client_id, "device_code": code.device_code,
            "grant_type": DEVICE_GRANT, "scope": SCOPE})
        if status == 200 and body.get("access_token"):
            return body
        if status >= 500:
            return "server_error"
        return str(body.get("error") or f"status {status}")

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        status, body = await self.post("token", {
            "client_id": self.client_id, "refresh_token": refresh_token,
            "grant_type": "refresh_token", "scope": SCOPE})
        if status == 200 and body.get("access_token"):
            return body
        if 400 <= status < 500:
            raise LoginRequired(f"TIDAL refused to renew the login ({describe(body)}): "
                                "run tidalq login")
        raise UpstreamUnavailable(f"TIDAL's login server answered {status} to a renewal")

    async def revoke(self, token: str) -> None:
        await self.post("revoke", {"client_id": self.client_id, "token": token})


def describe(body: dict[str, Any]) -> str:
    """The server's words for an error, without anything that looks like a token."""
    text = body.get("error_description") or body.get("userMessage") or body.get("error")
    return str(text or "no reason given")[:200]


async def wait_for_approval(server: AuthServer, code: DeviceCode,
                            sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                            clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Poll until the person approved the code; the token answer."""
    interval, deadline = code.interval, clock() + code.expires_in
    while True:
        await sleep(interval)
        answer = await server.poll(code)
        if isinstance(answer, dict):
            return answer
        if answer == "slow_down":
            interval += SLOW_DOWN_STEP_S
        elif answer == "expired_token" or clock() >= deadline:
            raise LoginFailed("the code expired before it was approved: run tidalq login "
                              "again and open the link within five minutes")
        elif answer == "access_denied":
            raise LoginFailed("the login was refused on TIDAL's page")
        elif answer not in ("authorization_pending", "server_error"):
            raise LoginFailed(f"TIDAL ended the login: {answer}")


Fetch = Callable[[str, dict[str, str]], Awaitable[Any]]


class Account:
    """The logged-in user for one daemon (or one `tidalq login` without a daemon)."""

    def __init__(self, token_file: TokenFile, server: AuthServer,
                 clock: Callable[[], float] = time.time) -> None:
        self.token_file = token_file
        self.server = server
        self.clock = clock
        self.tokens = token_file.load()
        self.refused: str | None = None  # why the last refresh was refused
        self._lock = asyncio.Lock()
        self._refresh_blocked_until = 0.0
        self._refresh_backoff_s = 0.0

    def problem(self) -> str | None:
        """Why the account cannot serve now, or None."""
        if self.tokens is None:
            return "not logged in to TIDAL: run tidalq login"
        if self.refused:
            return f"{self.refused}"
        if self.tokens.client_id != self.server.client_id:
            return ("the TIDAL login belongs to another client id than tidal_client_id: "
                    "run tidalq login")
        return None

    def show(self) -> dict[str, Any] | None:
        if self.tokens is None:
            return None
        return {**self.tokens.public(), "problem": self.problem()}

    async def bearer(self) -> str:
        """A token with at least a minute left, refreshed first when needed."""
        tokens = self._usable()
        if tokens.expires_at - self.clock() > REFRESH_AHEAD_S:
            return tokens.access_token
        return await self.refresh(tokens.access_token)

    async def refresh(self, used: str) -> str:
        """A fresh token after ``used`` was refused or is about to expire: one refresh for
        every caller that holds the same old token."""
        async with self._lock:
            tokens = self._usable()
            if tokens.access_token != used and tokens.expires_at - self.clock() > REFRESH_AHEAD_S:
                return tokens.access_token  # another caller refreshed meanwhile
            blocked_s = self._refresh_blocked_until - self.clock()
            if blocked_s > 0:
                raise UpstreamUnavailable("renewing the TIDAL login failed; trying again in "
                                          f"{blocked_s:.0f} s", retry_after_s=blocked_s)
            try:
                answer = await self.server.refresh(tokens.refresh_token)
            except LoginRequired as exc:
                self.refused = str(exc)
                log.error("TIDAL login refused on renewal: run tidalq login")
                raise
            except UpstreamUnavailable as exc:
                self._refresh_backoff_s = min(REFRESH_BACKOFF_MAX_S,
                                              max(5.0, self._refresh_backoff_s * 2))
                self._refresh_blocked_until = self.clock() + self._refresh_backoff_s
                # the job comes back when the next renewal may be tried, not before
                raise UpstreamUnavailable(str(exc), retry_after_s=self._refresh_backoff_s
                                          ) from exc
            self._refresh_backoff_s = 0.0
            self.tokens = self._renewed(tokens, answer)
            self.token_file.save(self.tokens)
            log.info("TIDAL login renewed (user %s)", self.tokens.user_id)
            return self.tokens.access_token

    def _usable(self) -> Tokens:
        problem = self.problem()
        if problem is not None or self.tokens is None:
            raise LoginRequired(problem or "not logged in to TIDAL: run tidalq login")
        return self.tokens

    def _renewed(self, tokens: Tokens, answer: dict[str, Any]) -> Tokens:
        return Tokens(str(answer["access_token"]),
                      str(answer.get("refresh_token") or tokens.refresh_token),
                      self.clock() + float(answer.get("expires_in") or 3600), tokens.user_id,
                      tokens.country_code, tokens.client_id, tokens.best_quality)

    async def logged_in(self, answer: dict[str, Any], fetch: Fetch) -> Tokens:
        """Keep the login of an approved device code; ``fetch(url, headers)`` reads the
        account's API (for its country, user id and subscription)."""
        access = str(answer["access_token"])
        headers = {"Authorization": f"Bearer {access}"}
        user: dict[str, Any] = answer["user"] if isinstance(answer.get("user"), dict) else {}
        user_id, country = user.get("userId") or answer.get("user_id"), user.get("countryCode")
        if not user_id or not country:
            session = await fetch("sessions", headers)
            user_id, country = session.get("userId"), session.get("countryCode")
        best = None
        try:
            sub = await fetch(f"users/{user_id}/subscription?countryCode={country}", headers)
            best = sub.get("highestSoundQuality")
        except (UpstreamUnavailable, AuthFailed) as exc:
            log.warning("could not read the TIDAL subscription: %s", exc)
        self.tokens = Tokens(access, str(answer.get("refresh_token") or ""),
                             self.clock() + float(answer.get("expires_in") or 3600),
                             int(user_id or 0), str(country or "US"), self.server.client_id,
                             str(best) if best else None)
        self.refused = None
        self.token_file.save(self.tokens)
        log.info("logged in to TIDAL as user %s (%s)", self.tokens.user_id, country)
        return self.tokens

    async def logout(self) -> bool:
        """Revoke the login (best effort: TIDAL may be away) and delete the token file."""
        tokens, self.tokens = self.tokens, None
        if tokens is not None:
            try:
                await self.server.revoke(tokens.refresh_token or tokens.access_token)
            except UpstreamUnavailable as exc:
                log.warning("could not revoke the TIDAL login (deleted here anyway): %s", exc)
        return self.token_file.delete() or tokens is not None
