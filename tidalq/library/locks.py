"""The publish lock of a library folder: one track decided and renamed at a time.

:class:`LocalLocks` is one daemon's (asyncio locks). When the job store is shared by
several machines (Redis), :class:`SharedLocks` adds the store's lock on top, named by the
folder's path inside the library (the same on every machine, whatever its mount point):
taken with a fencing token and an expiry, renewed while held, and checked again right
before the rename — a holder that lost it (its Redis link cut for longer than the expiry)
does not publish. ``flock`` is not used: it is unreliable on NFS and SMB mounts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from tidalq.errors import FilesystemError, StoreUnavailable

log = logging.getLogger(__name__)

MAX_IDLE_LOCKS = 4096
SHARED_TTL_S = 30.0  # a holder that vanished frees the folder after this long
WAIT_FOR_LOCK_S = 120.0  # longer than any publish: past it, the track is tried again
POLL_S = 0.02


class LockLost(FilesystemError):
    """The shared publish lock expired or was taken: this holder must not publish."""


class Fence(Protocol):
    async def check(self) -> None:
        """Raise :class:`LockLost` unless the lock is still this holder's."""


class FolderLocks(Protocol):
    def hold(self, folder: Path) -> contextlib.AbstractAsyncContextManager[Fence]:
        """Hold the publish lock of ``folder`` (a path inside the library)."""


class LockStore(Protocol):
    """What a shared lock needs of the job store (:class:`tidalq.store.base.JobStore`)."""

    shares_locks: bool

    async def try_lock(self, name: str, ttl_s: float) -> str | None: ...

    async def renew_lock(self, name: str, token: str, ttl_s: float) -> bool: ...

    async def unlock(self, name: str, token: str) -> None: ...


class _Always:
    async def check(self) -> None:
        return None


class LocalLocks:
    """One asyncio lock per folder: enough when one daemon writes this library."""

    def __init__(self) -> None:
        self._locks: dict[Path, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def hold(self, folder: Path) -> AsyncIterator[Fence]:
        if len(self._locks) > MAX_IDLE_LOCKS:
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        async with self._locks.setdefault(folder, asyncio.Lock()):
            yield _Always()


class _Held:
    """A shared lock this daemon holds: renewed in the background, checked on demand."""

    def __init__(self, store: LockStore, name: str, token: str, ttl_s: float) -> None:
        self.store, self.name, self.token, self.ttl_s = store, name, token, ttl_s
        self.valid_until = time.monotonic() + ttl_s
        self.lost = False

    async def check(self) -> None:
        if self.lost or time.monotonic() >= self.valid_until:
            raise LockLost(f"the publish lock of {self.name} was lost; not publishing")
        try:
            sent = time.monotonic()
            if not await self.store.renew_lock(self.name, self.token, self.ttl_s):
                self.lost = True
                raise LockLost(f"the publish lock of {self.name} was taken; not publishing")
            self.valid_until = sent + self.ttl_s
        except StoreUnavailable as exc:
            raise LockLost(f"the publish lock of {self.name} cannot be confirmed: {exc}"
                           ) from exc

    async def keep(self) -> None:
        """Renew at a third of the expiry until cancelled."""
        while not self.lost:
            await asyncio.sleep(self.ttl_s / 3)
            with contextlib.suppress(LockLost):
                await self.check()


class SharedLocks:
    """The local lock, then the store's; see the module docstring."""

    def __init__(self, store: LockStore, library: Path, ttl_s: float = SHARED_TTL_S,
                 wait_s: float = WAIT_FOR_LOCK_S) -> None:
        self.store = store
        self.library = library
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.local = LocalLocks()

    def name(self, folder: Path) -> str:
        try:
            inside = folder.relative_to(self.library).as_posix()
        except ValueError:
            inside = folder.as_posix()
        return "publish:" + hashlib.sha256(inside.encode()).hexdigest()[:32]

    @contextlib.asynccontextmanager
    async def hold(self, folder: Path) -> AsyncIterator[Fence]:
        async with self.local.hold(folder):
            held = await self._take(self.name(folder))
            keeper = asyncio.create_task(held.keep(), name=f"keep {held.name}")
            try:
                yield held
            finally:
                keeper.cancel()
                with contextlib.suppress(StoreUnavailable):
                    await self.store.unlock(held.name, held.token)

    async def _take(self, name: str) -> _Held:
        deadline = time.monotonic() + self.wait_s
        delay = POLL_S
        while True:
            try:
                token = await self.store.try_lock(name, self.ttl_s)
            except StoreUnavailable as exc:
                raise LockLost(f"the publish lock cannot be taken: {exc}") from exc
            if token is not None:
                return _Held(self.store, name, token, self.ttl_s)
            if time.monotonic() >= deadline:
                raise LockLost(f"the publish lock of a folder stayed taken for "
                               f"{self.wait_s:.0f} s")
            await asyncio.sleep(delay)
            delay = min(0.25, delay * 2)


def folder_locks(store: LockStore, library: Path) -> FolderLocks:
    """The publish locks for a daemon on ``store``: shared when the store is."""
    return SharedLocks(store, library) if store.shares_locks else LocalLocks()
