"""The daemon's lifecycle, top-down: settings → store → reap expired leases and sweep stale
staging files → HTTP session and worker pool → control socket (or systemd's) → READY=1.

The first SIGTERM/SIGINT drains: claims stop, running tracks get ``drain_timeout`` to
finish, the rest go back to ``queued`` without spending an attempt; exit status 0. A
second signal exits at once (status 1); the leases it leaves expire and are reaped.
systemd is told READY/STATUS/STOPPING/WATCHDOG through ``NOTIFY_SOCKET`` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from pathlib import Path

import aiohttp

from tidalq import __version__
from tidalq.config import Settings, redact_url
from tidalq.errors import JobNotFound, StoreUnavailable
from tidalq.http_api import HttpApi
from tidalq.media.fetch import Fetcher
from tidalq.media.verify import available_checks
from tidalq.models import JobStatus
from tidalq.pipeline import Pipeline, Slots
from tidalq.rpc import Context
from tidalq.server import ControlServer, bind_socket, inherited_socket
from tidalq.store import open_store
from tidalq.store.base import JobStore
from tidalq.upstream.api import UpstreamClient
from tidalq.worker import WorkerPool

log = logging.getLogger(__name__)

EXIT_DRAINED = 0
EXIT_FORCED = 1
MAINTENANCE_EVERY_S = 5.0


def sd_notify(message: str) -> bool:
    """Send one notification to systemd (no-op outside systemd)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)
        return False


async def sweep_staging(store: JobStore, staging: Path) -> int:
    """Remove staging files of jobs that are gone or finished; keep those of live jobs
    (a queued job resumes its partial download with Range)."""
    if not staging.is_dir():
        return 0
    removed = 0
    for path in staging.iterdir():
        job_id = path.name.rsplit("-", 1)[0] if path.name.startswith("job-") else None
        keep = False
        if job_id is not None:
            with contextlib.suppress(JobNotFound):
                keep = (await store.get(job_id)).status.live
        if not keep:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return "noboot"


def worker_id(pid: int) -> str:
    """Who holds a lease: host, kernel boot and pid, so a restarted daemon can tell which
    leases belonged to a dead daemon of this very machine."""
    return f"{socket.gethostname()}:{_boot_id()}:{pid}"


def dead_local_workers(workers: set[str]) -> set[str]:
    """The worker ids of daemons on this machine (same boot) whose process is gone."""
    prefix = worker_id(0).rsplit(":", 1)[0] + ":"
    dead = set()
    for worker in workers:
        pid = worker.removeprefix(prefix)
        if not worker.startswith(prefix) or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            dead.add(worker)
        except PermissionError:
            pass  # alive, someone else's
    return dead


class Daemon:
    """One running daemon; :func:`run` drives it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker_id = worker_id(os.getpid())
        self.stop_requested = asyncio.Event()
        self.forced = False
        self.store: JobStore | None = None
        self.session: aiohttp.ClientSession | None = None
        self.pool: WorkerPool | None = None
        self.server: ControlServer | None = None
        self.http: HttpApi | None = None
        self.bound_socket = False
        self._force = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- startup ------------------------------------------------------------------------------
    async def startup(self) -> None:
        s = self.settings
        log.info("tidalq %s starting: store %s, library %s", __version__, redact_url(s.store),
                 s.download_dir)
        self.store = await open_store(s.store)
        await self.recover(self.store)
        pipeline = await self.start_downloads(self.store)
        ctx = Context(s, self.store, self.pool_or_raise, self.request_stop,
                      checks=available_checks())
        log.info("verification available: %s", ", ".join(ctx.checks))
        self.server = ControlServer(ctx)
        listening = inherited_socket()
        if listening is None:
            listening = bind_socket(s.socket, s.socket_group)
            self.bound_socket = True
        await self.server.start(listening)
        await self.start_http(ctx)
        if pipeline is None:
            log.warning("%s", self.pool_or_raise.problem() or "workers are off: control only")
        sd_notify("READY=1\nSTATUS=" + await self.status_line())
        self._tasks += [asyncio.create_task(self.pool_or_raise.run(), name="claims"),
                        asyncio.create_task(self.pool_or_raise.heartbeat(), name="heartbeat"),
                        asyncio.create_task(self.maintenance(), name="maintenance")]
        log.info("ready on %s", s.socket)

    @property
    def pool_or_raise(self) -> WorkerPool:
        assert self.pool is not None
        return self.pool

    async def recover(self, store: JobStore) -> None:
        """Reap expired leases, and those of daemons of this machine that died (a restart
        after a crash resumes at once). Never blindly requeue: other daemons may own the rest."""
        holders = {j.worker for j in await store.list_jobs(JobStatus.PROCESSING, 10_000)
                   if j.worker}
        reaped = await store.reap(dead_local_workers(holders))
        if reaped:
            log.warning("requeued %d job(s) whose worker died: %s", len(reaped),
                        ", ".join(reaped[:10]))
        swept = await sweep_staging(store, self.settings.staging_dir)
        if swept:
            log.info("removed %d stale staging file(s)", swept)

    async def start_downloads(self, store: JobStore) -> Pipeline | None:
        s = self.settings
        slots = Slots(s.max_concurrent)
        self.pool = WorkerPool(store, None, s, self.worker_id, slots)
        if not (s.workers and s.api_urls):
            self.pool.claiming = False
            return None
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=s.max_concurrent * 4 + 8),
            headers={"User-Agent": f"tidalq/{__version__}"})
        upstream = UpstreamClient(self.session, s.api_urls, s.cover_url)
        fetcher = Fetcher(self.session, on_bytes=self.pool.meter.add)
        self.pool.pipeline = Pipeline(s, upstream, fetcher, slots)
        return self.pool.pipeline

    async def start_http(self, ctx: Context) -> None:
        if self.settings.http_listen:
            api = HttpApi(ctx)
            await api.start(self.settings.http_listen)
            self.http = api

    # -- serving ------------------------------------------------------------------------------
    def request_stop(self) -> None:
        if self.stop_requested.is_set():
            self.forced = True
            log.warning("second stop request: exiting at once")
            for task in self._tasks:
                task.cancel()
            self._force.set()
            return
        log.info("stop requested: draining")
        self.stop_requested.set()

    async def maintenance(self) -> None:
        """Reap other daemons' expired leases, purge old jobs, tell systemd how we are."""
        watchdog_s = int(os.environ.get("WATCHDOG_USEC", "0") or 0) / 2e6
        last = 0.0
        while True:
            if watchdog_s:
                sd_notify("WATCHDOG=1")
            if time.monotonic() - last >= MAINTENANCE_EVERY_S:
                last = time.monotonic()
                await self._maintain()
            await asyncio.sleep(min(watchdog_s or MAINTENANCE_EVERY_S, MAINTENANCE_EVERY_S))

    async def _maintain(self) -> None:
        assert self.store is not None
        try:
            if await self.store.reap():
                self.pool_or_raise.wake()
            await self.store.purge_finished(self.settings.retention)
            sd_notify("STATUS=" + await self.status_line())
        except StoreUnavailable as exc:
            log.warning("maintenance skipped: %s", exc)

    async def status_line(self) -> str:
        assert self.store is not None
        try:
            c = await self.store.stats()
        except StoreUnavailable:
            return "job store unavailable"
        problem = self.pool_or_raise.problem()
        line = (f"{c['queued']} queued, {c['processing']} processing, {c['completed']} "
                f"completed, {c['failed']} failed")
        return f"{line}; {problem}" if problem else line

    # -- shutdown -----------------------------------------------------------------------------
    async def shutdown(self) -> None:
        sd_notify("STOPPING=1")
        if self.pool is not None and not self.forced:
            drain = asyncio.create_task(self.pool.drain(self.settings.drain_timeout))
            force = asyncio.create_task(self._force.wait())
            await asyncio.wait({drain, force}, return_when=asyncio.FIRST_COMPLETED)
            force.cancel()
            if not drain.done():
                drain.cancel()
        if self.pool is not None and self.forced:
            self.pool.stop_claiming()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.release_all(), 1.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_io()

    async def _close_io(self) -> None:
        if self.server is not None:
            await self.server.close()
        if self.http is not None:
            await self.http.close()
        if self.session is not None:
            await self.session.close()
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.close()
        if self.bound_socket:
            with contextlib.suppress(OSError):
                self.settings.socket.unlink()


async def run(settings: Settings, install_signals: bool = True) -> int:
    """Run a daemon until stopped; returns the exit status."""
    daemon = Daemon(settings)
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.request_stop)
    try:
        await daemon.startup()
        await daemon.stop_requested.wait()
    finally:
        await daemon.shutdown()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    return EXIT_FORCED if daemon.forced else EXIT_DRAINED
