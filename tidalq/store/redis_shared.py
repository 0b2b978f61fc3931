"""What every machine on one Redis shares beside the queue: who is alive (each daemon's
announcement, a key with an expiry) and the library's publish locks (``SET NX PX`` with a
fencing token from a counter; renewed and released by the holding token only, in Lua).
A part of :class:`tidalq.store.redis.RedisStore`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript


class SharedOnRedis:
    """The daemons registry and the shared locks of a Redis store."""

    _r: aioredis.Redis
    _rng: random.Random
    _scripts: dict[str, AsyncScript]

    def _key(self, suffix: str) -> str:
        raise NotImplementedError

    async def _guard(self, call: Awaitable[Any]) -> Any:
        raise NotImplementedError

    shares_locks = True

    async def announce(self, daemon: dict[str, Any], ttl_s: float) -> None:
        key = self._key(f"daemon:{daemon['id']}")
        pipe = self._r.pipeline(transaction=True)
        pipe.set(key, json.dumps(daemon), px=max(1, int(ttl_s * 1000)))
        pipe.sadd(self._key("daemons"), str(daemon["id"]))
        await self._guard(pipe.execute())

    async def daemons(self) -> list[dict[str, Any]]:
        ids = sorted(await self._guard(self._r.smembers(self._key("daemons"))))
        if not ids:
            return []
        found = await self._guard(self._r.mget([self._key(f"daemon:{i}") for i in ids]))
        gone = [i for i, raw in zip(ids, found, strict=True) if raw is None]
        if gone:  # expired announcements: forget them
            await self._guard(self._r.srem(self._key("daemons"), *gone))
        return [json.loads(raw) for raw in found if raw is not None]

    async def try_lock(self, name: str, ttl_s: float) -> str | None:
        fence = await self._guard(self._r.incr(self._key("lock-fence")))
        token = f"{fence}:{self._rng.getrandbits(48):012x}"
        taken = await self._guard(self._r.set(self._key(f"lock:{name}"), token, nx=True,
                                              px=max(1, int(ttl_s * 1000))))
        return token if taken else None

    async def renew_lock(self, name: str, token: str, ttl_s: float) -> bool:
        held = await self._guard(self._scripts["lock_renew"](
            keys=[self._key(f"lock:{name}")], args=[token, max(1, int(ttl_s * 1000))]))
        return bool(held)

    async def unlock(self, name: str, token: str) -> None:
        await self._guard(self._scripts["lock_release"](keys=[self._key(f"lock:{name}")],
                                                        args=[token]))
