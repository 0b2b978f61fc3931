"""The login desk: one TIDAL device login at a time, for the daemon (``account.login``,
``account.wait``, ``account.logout``, ``account.show`` over the socket) or for `tidalq login`
when no daemon runs. The daemon runs the login itself so that the token lands in its own
state folder, whichever user typed the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from tidalq.config import Settings
from tidalq.errors import DownloadError, UpstreamUnavailable
from tidalq.upstream import factory
from tidalq.upstream.account import Account, DeviceCode, LoginFailed, wait_for_approval
from tidalq.upstream.http import json_of, read_capped

log = logging.getLogger(__name__)

MAX_WAIT_S = 60.0  # one account.wait call at most; the CLI calls again


class LoginDesk:
    """Starts a login, lets clients wait for it, and logs out; see the module docstring."""

    def __init__(self, account: Account, api_url: str,
                 on_login: Callable[[], None] = lambda: None) -> None:
        self.account = account
        self.api_url = api_url.rstrip("/")
        self.on_login = on_login
        self.code: DeviceCode | None = None
        self.task: asyncio.Task[None] | None = None
        self.error: str | None = None

    async def start(self) -> dict[str, Any]:
        """A device code and its link: the pending one while it is still waiting."""
        if self.task is None or self.task.done():
            self.code = await self.account.server.start_device_login()
            self.error = None
            self.task = asyncio.create_task(self._finish(self.code), name="tidal login")
        assert self.code is not None
        return {"link": self.code.link, "code": self.code.user_code,
                "expiresInS": self.code.expires_in, "intervalS": self.code.interval}

    async def _finish(self, code: DeviceCode) -> None:
        try:
            answer = await wait_for_approval(self.account.server, code)
            await self.account.logged_in(answer, self.read_api)
        except DownloadError as exc:
            self.error = str(exc)
            log.warning("TIDAL login ended without a login: %s", exc)
            return
        self.on_login()

    async def wait(self, timeout_s: float) -> dict[str, Any]:
        """``{"state": "pending"|"done"|"failed"|"none", …}`` within ``timeout_s``."""
        if self.task is None:
            return {"state": "none", "account": self.account.show()}
        if not self.task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.task), min(timeout_s, MAX_WAIT_S))
        if not self.task.done():
            return {"state": "pending"}
        if self.error is not None:
            return {"state": "failed", "error": self.error}
        return {"state": "done", "account": self.account.show()}

    async def wait_until(self, timeout_s: float) -> dict[str, Any]:
        """:meth:`wait` for up to ``timeout_s`` in all, however long that is."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            left = deadline - asyncio.get_running_loop().time()
            answer = await self.wait(max(0.1, left))
            if answer["state"] != "pending" or left <= 0:
                return answer

    async def logout(self) -> dict[str, Any]:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        return {"loggedOut": await self.account.logout()}

    def show(self) -> dict[str, Any] | None:
        return self.account.show()

    async def read_api(self, path: str, headers: dict[str, str]) -> Any:
        """GET ``{tidal_api_url}/{path}`` with a fresh token (for the login's details)."""
        async with aiohttp.ClientSession() as session:
            try:
                async with session.get(f"{self.api_url}/{path}", headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=30)) as resp:
                    raw = await read_capped(resp, 1 << 20)
                    if resp.status != 200:
                        raise UpstreamUnavailable(f"TIDAL answered {resp.status} to {path}")
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise UpstreamUnavailable(f"TIDAL did not answer {path}: {exc!r}") from exc
        body = json_of(raw, 1 << 20, f"TIDAL's {path}")
        if not isinstance(body, dict):
            raise UpstreamUnavailable(f"TIDAL's {path} has an unknown shape")
        return body


async def login_here(settings: Settings, timeout_s: float,
                     show: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """`tidalq login` without a daemon: the same flow, the login file written here."""
    desk = LoginDesk(factory.make_account(settings), settings.tidal_api_url)
    show(await desk.start())
    try:
        answer = await desk.wait_until(timeout_s)
    finally:
        if desk.task is not None and not desk.task.done():
            desk.task.cancel()
    if answer["state"] != "done":
        raise LoginFailed(answer.get("error") or "gave up waiting for the approval; run "
                          "tidalq login again")
    account: dict[str, Any] = answer["account"]
    return account


async def logout_here(settings: Settings) -> bool:
    return await factory.make_account(settings).logout()
