"""Saying when things finish: hooks, a webhook and human notifications.

The worker pool hands every job it finished to :class:`Notifier` (a queue, never awaited
by a worker), so each job end is announced once, by the daemon that ended it:

- ``on_complete`` / ``on_fail``: a command (an argv list, no shell) run with the job JSON
  on stdin and ``TIDALQ_JOB_ID``, ``TIDALQ_STATUS`` in its environment, within
  ``hook_timeout``; its failure is logged, never fatal.
- ``webhook_url``: a POST of the job JSON, retried with backoff.
- ``notify_urls``: one short message per finished album, playlist, mix or artist job
  through the ``apprise`` library (``pip install 'tidalq[notify]'``): ntfy, Gotify,
  Matrix, Discord, mail, …
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

import aiohttp

from tidalq.config import Settings
from tidalq.models import Job
from tidalq.terms import JobStatus

log = logging.getLogger(__name__)

WEBHOOK_TRIES = 4
QUEUE_LIMIT = 10_000


def summary(job: Job) -> str:
    """"Artist – Album: 12 tracks, FLAC 24/96" and the like."""
    spec = job.spec
    name = spec.album_title or spec.artist_name or f"{spec.type} {spec.tidal_id}"
    if spec.artist_name and spec.album_title:
        name = f"{spec.artist_name} – {spec.album_title}"
    if job.status is not JobStatus.COMPLETED:
        return f"{name}: {job.status.value} ({job.error or job.failure_code})"
    done = [t for t in job.track_progress if t.get("status") == "completed"]
    if spec.type == "artist":
        return f"{name}: {len(job.track_progress)} albums"
    return f"{name}: {len(done)} tracks, {_format(job)}"


def _format(job: Job) -> str:
    quality = job.spec.quality.value
    return {"HI_RES_LOSSLESS": "FLAC 24-bit", "LOSSLESS": "FLAC 16/44.1",
            "HIGH": "AAC 320", "LOW": "AAC 96"}.get(quality, quality)


class Notifier:
    """Announces job ends in the background; see the module docstring."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession | None) -> None:
        self.settings = settings
        self.session = session
        self._queue: asyncio.Queue[Job] = asyncio.Queue(QUEUE_LIMIT)

    @property
    def wanted(self) -> bool:
        s = self.settings
        return bool(s.on_complete or s.on_fail or s.webhook_url or s.notify_urls)

    def job_ended(self, job: Job) -> None:
        if self.wanted and job.status.finished:
            try:
                self._queue.put_nowait(job)
            except asyncio.QueueFull:
                log.warning("notifications are behind: job %s not announced", job.id)

    async def run(self) -> None:
        while True:
            job = await self._queue.get()
            outcomes = await asyncio.gather(self._hook(job), self._webhook(job),
                                            self._apprise(job), return_exceptions=True)
            for way, outcome in zip(("hook", "webhook", "notification"), outcomes,
                                    strict=True):
                if isinstance(outcome, Exception):
                    log.error("%s for job %s failed: %r", way, job.id, outcome)

    async def _hook(self, job: Job) -> None:
        argv = self.settings.on_complete if job.status is JobStatus.COMPLETED \
            else self.settings.on_fail
        if not argv:
            return
        env = {**os.environ, "TIDALQ_JOB_ID": job.id, "TIDALQ_STATUS": job.status.value}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env=env)
        except OSError as exc:
            log.error("hook %s could not start: %s", argv[0], exc)
            return
        try:
            _, err = await asyncio.wait_for(
                proc.communicate(json.dumps(job.to_json()).encode()),
                self.settings.hook_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.error("hook %s for job %s timed out after %.0f s", argv[0], job.id,
                      self.settings.hook_timeout)
            return
        if proc.returncode:
            log.error("hook %s for job %s exited %s: %s", argv[0], job.id, proc.returncode,
                      err.decode(errors="replace").strip()[:300])

    async def _webhook(self, job: Job) -> None:
        url = self.settings.webhook_url
        if not url or self.session is None:
            return
        for attempt in range(WEBHOOK_TRIES):
            try:
                async with self.session.post(url, json=job.to_json(),
                                             timeout=aiohttp.ClientTimeout(total=30)) as resp:
                    if resp.status < 500:
                        if resp.status >= 400:
                            log.error("webhook refused job %s: HTTP %s", job.id, resp.status)
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("webhook for job %s failed: %s", job.id, exc)
            await asyncio.sleep(2 ** attempt)
        log.error("webhook for job %s gave up after %d tries", job.id, WEBHOOK_TRIES)

    async def _apprise(self, job: Job) -> None:
        urls = self.settings.notify_urls
        if not urls or job.spec.type == "track":
            return  # one message per album, playlist, mix or artist: tracks are many
        try:
            import apprise  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            log.error("notify_urls needs apprise: pip install 'tidalq[notify]'")
            return
        sender: Any = apprise.Apprise()
        for url in urls:
            sender.add(url)
        title = "tidalq: done" if job.status is JobStatus.COMPLETED else "tidalq: failed"
        sent = await asyncio.to_thread(sender.notify, body=summary(job), title=title)
        if not sent:
            log.error("notification for job %s could not be sent", job.id)
