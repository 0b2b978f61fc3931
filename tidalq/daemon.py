"""The daemon's lifecycle, top-down: settings → control socket (refused if another daemon
answers there) → this daemon's lock on the library (:mod:`tidalq.instance`) → store →
reap the leases of dead daemons and remove their staging folders → HTTP session and worker
pool → serve the socket (or systemd's) → READY=1. A daemon that does not get to run
touches nothing in the library.

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
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from tidalq import __version__
from tidalq.config import Settings, redact_url
from tidalq.errors import StoreUnavailable, from_os_error
from tidalq.follows import FollowChecker
from tidalq.http_api import HttpApi
from tidalq.instance import Instance, dead_instances, instance_of, live_instances, worker_name
from tidalq.library.locks import folder_locks
from tidalq.login import LoginDesk
from tidalq.media import decoders
from tidalq.media.fetch import Fetcher
from tidalq.media.verify import available_checks
from tidalq.notify import Notifier
from tidalq.pipeline import Pipeline, Slots
from tidalq.rpc import Context
from tidalq.server import ControlServer, bind_socket, inherited_socket
from tidalq.store import open_store
from tidalq.store.base import JobStore
from tidalq.terms import JobStatus
from tidalq.upstream import factory
from tidalq.upstream.musicbrainz import MusicBrainz
from tidalq.upstream.netguard import AddressPolicy
from tidalq.worker import WorkerPool

log = logging.getLogger(__name__)

EXIT_DRAINED = 0
EXIT_FORCED = 1
MAINTENANCE_EVERY_S = 5.0
ANNOUNCE_TTL_S = 3 * MAINTENANCE_EVERY_S  # a daemon missing three rounds is gone


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


class Daemon:
    """One running daemon; :func:`run` drives it."""

    def __init__(self, settings: Settings, store: JobStore | None = None) -> None:
        """``store`` replaces the one ``settings.store`` names (tests pass fakes here)."""
        self.settings = settings
        self.instance: Instance | None = None
        self.worker_id = ""
        self.stop_requested = asyncio.Event()
        self.forced = False
        self.failed = False  # a background task died: exit non-zero
        self.store: JobStore | None = store
        self.session: aiohttp.ClientSession | None = None
        self.account = factory.make_account(settings)
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
        listening = self.own_socket()
        self.instance = self.lock_library()
        self.worker_id = worker_name(self.instance.id)
        self.store = self.store or await open_store(s.store)
        self.store.max_stalls = s.max_stalls
        await self.recover(self.store, self.instance)
        pipeline = await self.start_downloads(self.store, self.instance)
        desk = LoginDesk(self.account, s.tidal_api_url, on_login=self.pool_or_raise.wake)
        ctx = Context(s, self.store, self.pool_or_raise, self.request_stop, login=desk,
                      checks=available_checks())
        log.info("verification available: %s", ", ".join(ctx.checks))
        self.server = ControlServer(ctx)
        await self.server.start(listening)
        await self.start_http(ctx)
        if pipeline is None:
            log.warning("%s", self.pool_or_raise.problem() or "workers are off: control only")
        sd_notify("READY=1\nSTATUS=" + await self.status_line())
        self._tasks += [self._supervised(self.pool_or_raise.run, "claims"),
                        self._supervised(self.pool_or_raise.keep_leases, "heartbeat"),
                        self._supervised(self.maintenance, "maintenance"),
                        *self.start_unattended(pipeline)]
        log.info("ready on %s", s.socket)

    def start_unattended(self, pipeline: Pipeline | None) -> list[asyncio.Task[None]]:
        """Follow checks (they need an upstream) and notifications of job ends."""
        tasks = []
        notifier = Notifier(self.settings, self.session)
        if notifier.wanted:
            self.pool_or_raise.on_end = notifier.job_ended
            tasks.append(self._supervised(notifier.run, "notifications"))
        if pipeline is not None and self.store is not None:
            checker = FollowChecker(self.store, pipeline.upstream, self.settings)
            tasks.append(self._supervised(checker.run, "follows"))
        return tasks

    def own_socket(self) -> socket.socket:
        """The listening control socket, first of all: a second daemon is refused here,
        before it has touched anything."""
        listening = inherited_socket()
        if listening is None:
            listening = bind_socket(self.settings.socket, self.settings.socket_group)
            self.bound_socket = True
        return listening

    def lock_library(self) -> Instance:
        try:
            return Instance.acquire(self.settings.download_dir)
        except OSError as exc:
            raise from_os_error(exc) from exc

    def _supervised(self, body: Callable[[], Coroutine[Any, Any, None]], name: str
                    ) -> asyncio.Task[None]:
        """A background task that must not die quietly: if it raises while the daemon runs,
        the daemon stops with status 1 and systemd restarts it."""
        task = asyncio.create_task(body(), name=name)

        def ended(done: asyncio.Task[None]) -> None:
            if done.cancelled() or done.exception() is None or self.stop_requested.is_set():
                return  # the claim loop ends by itself when claims stop
            exc = done.exception()
            log.critical("background task %s died: %r; stopping so the daemon is restarted",
                         name, exc, exc_info=exc)
            self.failed = True
            self.request_stop()

        task.add_done_callback(ended)
        return task

    @property
    def pool_or_raise(self) -> WorkerPool:
        assert self.pool is not None
        return self.pool

    async def recover(self, store: JobStore, instance: Instance) -> None:
        """Remove what daemons of this library that died left in staging, and reap their
        leases at once (a restart after a crash resumes without waiting). The leases of
        daemons that may be alive are never touched: they expire or are renewed."""
        dead = await asyncio.to_thread(dead_instances, self.settings.download_dir, instance.id)
        holders = {j.worker for j in await store.list_jobs(JobStatus.PROCESSING, 10_000)
                   if j.worker and instance_of(j.worker) in dead}
        if not holders:  # nothing to take back: no write, so a busy store cannot hold us
            return
        reaped = await store.reap(holders)
        if reaped:
            log.warning("requeued %d job(s) whose daemon died: %s", len(reaped),
                        ", ".join(reaped[:10]))

    async def start_downloads(self, store: JobStore, instance: Instance) -> Pipeline | None:
        s = self.settings
        slots = Slots(s.max_concurrent)
        self.pool = WorkerPool(store, None, s, self.worker_id, slots)
        if not s.workers or factory.missing(s):
            self.pool.claiming = False
            return None
        policy = AddressPolicy([*factory.hosts(s), s.musicbrainz_url])
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=s.max_concurrent * 4 + 8,
                                           resolver=policy.resolver()),
            trace_configs=[policy.trace_config()],
            headers={"User-Agent": f"tidalq/{__version__}"})
        upstream = factory.make_upstream(self.session, s, self.account)
        fetcher = Fetcher(self.session, on_bytes=self.pool.meter.add,
                          address_kinds=policy.allowed)
        musicbrainz = MusicBrainz(self.session, s.musicbrainz_url, s.musicbrainz_contact)
        self.pool.pipeline = Pipeline(s, upstream, fetcher, slots, instance.staging_dir,
                                      musicbrainz, folder_locks(store, s.download_dir))
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

    def whoami(self) -> dict[str, Any]:
        """What `status` shows of this daemon on every daemon of the store."""
        pool = self.pool_or_raise
        return {"id": self.worker_id, "host": socket.gethostname(), "pid": os.getpid(),
                "version": __version__, "slotsInUse": pool.active_downloads,
                "maxConcurrent": self.settings.max_concurrent,
                "workers": "on" if pool.pipeline is not None else "off",
                "lastBeat": int(time.time() * 1000)}

    async def _maintain(self) -> None:
        assert self.store is not None
        try:
            await self.store.announce(self.whoami(), ANNOUNCE_TTL_S)
            if await self.store.reap(spare=await self._held_live()):
                self.pool_or_raise.wake()
            await self.store.purge_finished(self.settings.retention)
            sd_notify("STATUS=" + await self.status_line())
        except StoreUnavailable as exc:
            log.warning("maintenance skipped: %s", exc)

    async def _held_live(self) -> set[str]:
        """Jobs whose expired lease proves nothing: this daemon's running ones (a jump of
        its wall clock must never make it redo its own work), and with a store of this
        machine (SQLite) those of daemons whose instance lock proves them alive. A Redis
        store judges leases by its own clock (``TIME``), so a lease that expired there
        did expire."""
        assert self.store is not None
        held = set(self.pool_or_raise.active)
        if self.store.store_clock:
            return held
        alive = await asyncio.to_thread(live_instances, self.settings.download_dir)
        if self.instance is not None:  # ours: only what runs here now is held live
            alive.discard(self.instance.id)
        running = await self.store.list_jobs(JobStatus.PROCESSING, 10_000)
        return held | {j.id for j in running if j.worker and instance_of(j.worker) in alive}

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
        decoders.of_this_loop().close()
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.close()
        if self.instance is not None:
            # after a forced exit our leases remain: leave the lock file, so the next
            # daemon of this library sees a dead daemon and reaps them at once
            drained = not self.forced and (self.pool is None or not self.pool.active)
            self.instance.release(clean=drained)
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
    return EXIT_FORCED if daemon.forced or daemon.failed else EXIT_DRAINED
