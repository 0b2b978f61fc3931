"""The seed's web app's names for tidalq's values (see shared/design/web-client.md).

Pure functions: a job, the queue counts and the metrics in the shapes the app reads, with
tidalq's own fields left beside them. The one place the two vocabularies meet:

- a job's ``retryCount``/``maxRetries`` count retries after the first attempt;
- ``trackProgress`` entries carry ``trackTitle`` and the app's statuses (``pending``,
  ``downloading``, ``completed``, ``failed``) beside tidalq's ``title`` and ``state``;
- a field that is unset is absent, never ``null`` (the app's types have ``completedAt``,
  ``nextRetryAt`` and the other optional values as ``T | undefined``);
- ``queue`` has ``total``; ``metrics`` uses the app's snake_case names.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tidalq.models import Job
from tidalq.terms import JobStatus

TRACK_STATUS = {"queued": "pending", "processing": "downloading", "completed": "completed",
                "failed": "failed", "cancelled": "failed", "skipped": "failed"}


def web_track(entry: dict[str, Any]) -> dict[str, Any]:
    out = dict(entry)
    out["trackTitle"] = entry.get("title")
    out["state"] = entry.get("status")
    out["status"] = TRACK_STATUS.get(str(entry.get("status")), "pending")
    if not entry.get("error"):
        out.pop("error", None)
    return out


def web_job(job: Job, with_tracks: bool = True) -> dict[str, Any]:
    """A job record as the app reads it (``with_tracks``: per-track entries too)."""
    out = job.to_json()
    out["lastUpdatedAt"] = job.updated_at
    out["retryCount"] = max(0, job.attempts - 1)
    out["maxRetries"] = max(0, job.max_attempts - 1)
    out["cancellationRequested"] = False  # a cancel takes effect at once
    if job.started_at and job.completed_at:
        out["downloadTimeMs"] = job.completed_at - job.started_at
    files = [job.result] if job.result else job.track_progress
    out["fileSize"] = sum(int(f.get("bytes") or 0) for f in files if f)
    if job.spec.type in ("album", "playlist", "mix"):
        out["trackProgress"] = [web_track(t) for t in job.track_progress] if with_tracks \
            else []
    return {k: v for k, v in out.items() if v is not None}


def queue_counts(counts: dict[str, int]) -> dict[str, int]:
    queue = {s.value: int(counts.get(s.value, 0)) for s in JobStatus}
    queue["total"] = sum(queue.values())
    return queue


def metrics(counts: dict[str, int], finished: list[Job]) -> dict[str, Any]:
    """Counts over the whole queue; rates and durations over ``finished`` (the most
    recent finished jobs), so that the cost never grows with the queue."""
    queue = queue_counts(counts)
    ended = [j for j in finished if j.status in (JobStatus.COMPLETED, JobStatus.FAILED)]
    done = [j for j in ended if j.status is JobStatus.COMPLETED]
    durations = [j.completed_at - j.started_at for j in done
                 if j.completed_at and j.started_at]
    return {
        "total_jobs": queue["total"], "queued": queue["queued"],
        "processing": queue["processing"], "paused": queue["paused"],
        "completed": queue["completed"], "failed": queue["failed"],
        "cancelled": queue["cancelled"],
        "avg_success_rate": round(100.0 * len(done) / len(ended), 1) if ended else 100.0,
        "avg_retry_count": round(sum(max(0, j.attempts - 1) for j in ended) / len(ended), 2)
        if ended else 0.0,
        "total_download_time_ms": sum(durations),
        "avg_job_duration_ms": round(sum(durations) / len(durations)) if durations else 0,
        "failure_by_code": dict(Counter(j.failure_code for j in finished
                                        if j.status is JobStatus.FAILED and j.failure_code)),
        "window": len(finished),
    }
