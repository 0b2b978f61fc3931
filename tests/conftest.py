"""Shared fixtures: a real redis-server for the session, and the parametrised store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import DaemonProcess, FakeProcess, RedisServer
from tidalq.store.base import JobStore
from tidalq.testing.fakeapi import RunningFake, start_fake

BACKENDS = ["memory", "sqlite", "redis"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


async def make_store(backend: str, tmp_path: Path, redis_server: RedisServer | None,
                     prefix: str | None = None) -> JobStore:
    if backend == "memory":
        from tidalq.store.memory import MemoryStore

        return MemoryStore()
    if backend == "sqlite":
        from tidalq.store.sqlite import SqliteStore

        return await SqliteStore.open(str(tmp_path / "queue.db"))
    from tidalq.store.redis import RedisStore

    assert redis_server is not None
    return await RedisStore.open(redis_server.url, prefix=prefix or f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(backend: str, tmp_path: Path,
                request: pytest.FixtureRequest) -> AsyncIterator[JobStore]:
    server = request.getfixturevalue("redis_server") if backend == "redis" else None
    s = await make_store(backend, tmp_path, server)
    yield s
    await s.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client session for tests that drive the pipeline directly."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(scope="session")
def media_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated fake media, shared by every test of the session."""
    return tmp_path_factory.mktemp("fake-media")


@pytest.fixture
async def fake(media_cache: Path) -> AsyncIterator[RunningFake]:
    running = await start_fake(media_cache)
    yield running
    await running.close()


@pytest.fixture
async def fake2(media_cache: Path) -> AsyncIterator[RunningFake]:
    running = await start_fake(media_cache)
    yield running
    await running.close()


@pytest.fixture
def fake_proc(media_cache: Path) -> Iterator[FakeProcess]:
    proc = FakeProcess(media_cache)
    yield proc
    proc.stop()


@pytest.fixture
def make_daemon(tmp_path: Path, fake_proc: FakeProcess) -> Iterator[Any]:
    """make_daemon(name, **env) -> a started DaemonProcess against the fake upstream."""
    started: list[DaemonProcess] = []

    def make(name: str = "daemon", start: bool = True, **env: str) -> DaemonProcess:
        base = {**fake_proc.env(), "TIDAL_DOWNLOADS": str(tmp_path / "lib"),
                "TIDALQ_STORE": f"sqlite:///{tmp_path}/queue.db", "TIDALQ_LEASE": "2s",
                "TIDALQ_POLL_INTERVAL": "1", "TIDALQ_STATE_DIR": str(tmp_path / "state")}
        d = DaemonProcess(tmp_path, {**base, **env}, name)
        started.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in started:
        d.stop()
