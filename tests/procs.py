"""Worker processes the store tests start and kill: ``python -m tests.procs MODE ...``.

- ``claim-all BACKEND LOCATION PREFIX OUT``: claim and complete jobs until the queue stays
  empty for a second; append each claimed id to OUT.
- ``hold BACKEND LOCATION PREFIX LEASE_S``: claim one job, print ``CLAIMED id token`` and
  keep the lease alive until killed.
"""

from __future__ import annotations

import asyncio
import sys
import time

from tidalq.store.base import JobStore


async def open_store(backend: str, location: str, prefix: str) -> JobStore:
    if backend == "sqlite":
        from tidalq.store.sqlite import SqliteStore

        return await SqliteStore.open(location)
    from tidalq.store.redis import RedisStore

    return await RedisStore.open(location, prefix=prefix)


async def claim_all(store: JobStore, out_path: str) -> None:
    idle_since = time.monotonic()
    with open(out_path, "a", buffering=1) as out:
        while time.monotonic() - idle_since < 1.0:
            claim = await store.claim("proc", 30)
            if claim is None:
                await asyncio.sleep(0.01)
                continue
            idle_since = time.monotonic()
            out.write(claim.job.id + "\n")
            await store.complete(claim.job.id, claim.token)


async def hold(store: JobStore, lease_s: float) -> None:
    claim = None
    while claim is None:
        claim = await store.claim("holder", lease_s)
    print("CLAIMED", claim.job.id, claim.token, flush=True)
    while True:
        await store.renew(claim.job.id, claim.token, lease_s)
        await asyncio.sleep(lease_s / 3)


async def main(argv: list[str]) -> None:
    mode, backend, location, prefix = argv[:4]
    store = await open_store(backend, location, prefix)
    if mode == "claim-all":
        await claim_all(store, argv[4])
    else:
        await hold(store, float(argv[4]))
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
