"""The ``tidalq`` command: parse → client call → render.

Imports nothing of the daemon side (aiohttp, redis, mutagen, sqlite) so that commands
answer fast; ``tidalq daemon`` imports the daemon lazily. Exit codes: 0 success, 1 what
the command reports failed, 2 usage error, 3 daemon unreachable, 124 ``wait`` timed out.

Shell completion: ``eval "$(_TIDALQ_COMPLETE=bash_source tidalq)"`` (zsh: ``zsh_source``,
fish: ``fish_source``).
"""

from __future__ import annotations

import copy
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from tidalq import __version__, links, render
from tidalq.client import DaemonClient
from tidalq.config import Settings, default_socket, load_settings
from tidalq.errors import (
    ConfigError,
    DaemonUnreachable,
    InvalidInput,
    RpcError,
    TidalqError,
)
from tidalq.protocol import ErrorCode
from tidalq.terms import SEARCH_KINDS, JobStatus, Priority, Quality

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

QUALITIES = click.Choice([q.value for q in Quality], case_sensitive=False)
PRIORITIES = click.Choice([p.value for p in Priority], case_sensitive=False)
STATUSES = click.Choice([s.value for s in JobStatus], case_sensitive=False)

F = TypeVar("F", bound=Callable[..., Any])


class App:
    """Per-invocation state: where the config and the socket are."""

    def __init__(self, config: Path | None, socket: Path | None) -> None:
        self.config = config
        self.socket = socket
        self._settings: Settings | None = None

    def settings(self, flags: dict[str, Any] | None = None) -> Settings:
        if flags is not None:
            return load_settings({**flags, "socket": self.socket and str(self.socket)},
                                 self.config)
        if self._settings is None:
            self._settings = load_settings({"socket": self.socket and str(self.socket)},
                                           self.config)
        return self._settings

    def client(self, timeout_s: float | None = 30.0) -> DaemonClient:
        path = self.settings().socket
        return DaemonClient(path, timeout_s, own_socket_only=path == default_socket(os.environ))


def complete_job_ids(ctx: click.Context, param: click.Parameter,
                     incomplete: str) -> list[str]:
    """Shell completion: the ids of the newest jobs (nothing when no daemon answers)."""
    try:
        app = ctx.find_object(App) or App(None, None)
        jobs = app.client(timeout_s=2).call("queue.list", {"limit": 200})["jobs"]
    except (TidalqError, OSError, KeyError):
        return []
    return [j["id"] for j in jobs if j["id"].startswith(incomplete)]


def fail(message: str, code: int) -> NoReturn:
    render.error(message)
    sys.exit(code)


def handles_errors(fn: F) -> F:
    """Turn tidalq errors into one stderr line and the contract's exit code."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DaemonUnreachable as exc:
            fail(f"{exc}. Start it with `tidalq daemon` or `systemctl --user start tidalq`.",
                 EXIT_UNREACHABLE)
        except ConfigError as exc:
            fail(f"configuration: {exc}", EXIT_USAGE)
        except RpcError as exc:
            usage = exc.code in (ErrorCode.INVALID_PARAMS, ErrorCode.INVALID_REQUEST)
            fail(str(exc), EXIT_USAGE if usage else EXIT_FAILED)
        except TidalqError as exc:
            fail(str(exc), EXIT_FAILED)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper  # type: ignore[return-value]


pass_app = click.make_pass_decorator(App)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tidalq")
@click.option("--socket", type=click.Path(path_type=Path), envvar="TIDALQ_SOCKET",
              help="Control socket of the daemon.")
@click.option("--config", type=click.Path(path_type=Path), envvar="TIDALQ_CONFIG",
              help="Config file (TOML).")
@click.pass_context
def main(ctx: click.Context, socket: Path | None, config: Path | None) -> None:
    """tidalq: a background download queue for TIDAL music.

    Submit tracks and albums with `tidalq add`; a daemon (`tidalq daemon`, usually run by
    systemd) downloads them into your library, tagged and verified.
    """
    ctx.obj = App(config, socket)


# -- the daemon ----------------------------------------------------------------------------

@main.command()
@click.option("--store", help="Job store URL: sqlite:///PATH, redis://HOST:PORT/DB or memory:.")
@click.option("--download-dir", type=click.Path(path_type=Path), help="Library root.")
@click.option("--max-concurrent", type=click.IntRange(1, 1000),
              help="Simultaneous track downloads.")
@click.option("--http", "http_listen", metavar="HOST:PORT", help="Also serve the HTTP API.")
@click.option("--no-workers", is_flag=True, help="Control-only node: accept jobs, download none.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@pass_app
@handles_errors
def daemon(app: App, store: str | None, download_dir: Path | None, max_concurrent: int | None,
           http_listen: str | None, no_workers: bool, verbose: bool) -> None:
    """Run the daemon in the foreground (systemd runs exactly this)."""
    import asyncio
    import logging

    settings = app.settings({"store": store, "download_dir": download_dir and str(download_dir),
                             "max_concurrent": max_concurrent, "http_listen": http_listen,
                             "workers": False if no_workers else None})
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from tidalq.daemon import run
    from tidalq.server import SocketInUse

    try:
        code = asyncio.run(run(settings))
    except SocketInUse as exc:
        fail(str(exc), EXIT_FAILED)
    sys.exit(code)


# -- submitting ----------------------------------------------------------------------------

def parse_targets(items: tuple[str, ...]) -> list[tuple[str, int | str]]:
    """``[TYPE] ID_OR_URL...`` → [(type, id)]; click.UsageError when unclear."""
    kind: str | None = None
    rest = list(items)
    if rest and rest[0].lower() in links.KINDS:
        kind = rest.pop(0).lower()
    if not rest:
        raise click.UsageError("name at least one id or TIDAL link")
    return [_target(item, kind) for item in rest]


_MBID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _mbid(value: str | None) -> str | None:
    """A MusicBrainz release id (a UUID), or its musicbrainz.org/release/ link."""
    if value is None:
        return None
    found = _MBID.search(value.strip().lower())
    if found is None:
        raise click.BadParameter("a MusicBrainz release id is a UUID "
                                 "(or a musicbrainz.org/release/… link)")
    return found.group(0)


def _target(item: str, kind: str | None) -> tuple[str, int | str]:
    try:
        return links.parse(item, kind)
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from None


@main.command()
@click.argument("items", nargs=-1, required=True,
                metavar="[track|album|playlist|mix|artist] ID_OR_URL...")
@click.option("--quality", type=QUALITIES, help="Quality to download (default: config).")
@click.option("--min-quality", type=QUALITIES, help="Fail instead of accepting less than this.")
@click.option("--priority", type=PRIORITIES, default="normal", show_default=True)
@click.option("--max-attempts", type=click.IntRange(1, 100), help="Attempts per job.")
@click.option("--force", is_flag=True,
              help="Replace what the library has, even a better or identical file.")
@click.option("--include", metavar="KINDS",
              help="Artists: albums,eps,singles,compilations,appears-on or all "
                   "(default albums,eps,singles).")
@click.option("--mb-release", metavar="MBID", callback=lambda ctx, param, value: _mbid(value),
              help="The MusicBrainz release these tracks are on: its ids go into the tags.")
@json_option
@pass_app
@handles_errors
def add(app: App, items: tuple[str, ...], quality: str | None, min_quality: str | None,
        priority: str, max_attempts: int | None, force: bool, include: str | None,
        mb_release: str | None, as_json: bool) -> None:
    """Submit tracks, albums, playlists, mixes or artists; prints one job id per line."""
    jobs = []
    for kind, tidal_id in parse_targets(items):
        job: dict[str, Any] = {"type": kind, f"{kind}Id": tidal_id}
        if include and kind == "artist":
            job["include"] = include
        if force:
            job["forceOverwrite"] = True
        if quality:
            job["quality"] = quality.upper()
        if min_quality:
            job["minQuality"] = min_quality.upper()
        if mb_release:
            if kind not in ("track", "album"):
                raise click.UsageError("--mb-release names the release of a track or an "
                                       f"album, not of a {kind}")
            job["musicBrainzReleaseId"] = mb_release
        jobs.append(job)
    params: dict[str, Any] = {"jobs": jobs, "priority": priority.lower()}
    if max_attempts:
        params["maxAttempts"] = max_attempts
    answer = app.client().call("queue.submit", params)
    if as_json:
        render.as_json(answer["jobs"])
    else:
        render.lines(answer["jobIds"])


# -- finding -------------------------------------------------------------------------------

def _choices(value: str | None) -> list[int]:
    """``--add 1,3`` -> [1, 3]."""
    if not value:
        return []
    try:
        chosen = [int(n) for n in value.replace(" ", "").split(",") if n]
    except ValueError:
        raise click.UsageError(f"--add takes result numbers, like 1,3 (not {value!r})"
                               ) from None
    if not chosen or min(chosen) < 1:
        raise click.UsageError("--add takes result numbers from 1")
    return chosen


@main.command()
@click.argument("words", nargs=-1, required=True, metavar="[track|album|artist|playlist] QUERY...")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--add", "to_add", metavar="N[,M...]", help="Submit these results (by number).")
@click.option("--quality", type=QUALITIES, help="With --add: the quality to download.")
@json_option
@pass_app
@handles_errors
def search(app: App, words: tuple[str, ...], limit: int, to_add: str | None,
           quality: str | None, as_json: bool) -> None:
    """Search TIDAL (albums unless a kind comes first) and print a numbered table;
    `--add 1,3` submits those results."""
    kind, query = ("album", words)
    if len(words) > 1 and words[0].lower() in SEARCH_KINDS:
        kind, query = words[0].lower(), words[1:]
    answer = app.client(timeout_s=60).call("catalog.search", {
        "query": " ".join(query), "kind": kind, "limit": limit})
    results = answer["results"]
    chosen = _choices(to_add)
    if any(n > len(results) for n in chosen):
        raise click.UsageError(f"--add: there are {len(results)} results")
    if as_json and not chosen:
        render.as_json(results)
        return
    if not chosen:
        render.search_table(results)
        return
    jobs = [{"type": r["type"], f"{r['type']}Id": r["id"],
             **({"quality": quality.upper()} if quality else {})}
            for r in (results[n - 1] for n in chosen)]
    submitted = app.client().call("queue.submit", {"jobs": jobs})
    if as_json:
        render.as_json(submitted["jobs"])
    else:
        render.lines(submitted["jobIds"])


# -- looking -------------------------------------------------------------------------------

@main.command()
@json_option
@pass_app
@handles_errors
def status(app: App, as_json: bool) -> None:
    """Queue counts, worker state and active jobs with progress.

    A job a line; on a narrow terminal its bytes and speed, then its bar, give way to its
    title."""
    stats = app.client().call("queue.stats")
    if as_json:
        render.as_json(stats)
    else:
        render.status(stats)


@main.command("list")
@click.option("--status", "status_", type=STATUSES, help="Only jobs with this status.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@json_option
@pass_app
@handles_errors
def list_(app: App, status_: str | None, limit: int, as_json: bool) -> None:
    """Jobs, newest first.

    Titles are cut to fit the terminal; on a narrow one, CREATED and then QUALITY go
    first (tidalq show has both)."""
    params: dict[str, Any] = {"limit": limit}
    if status_:
        params["status"] = status_.lower()
    jobs = app.client().call("queue.list", params)["jobs"]
    if as_json:
        render.as_json(jobs)
    else:
        render.jobs_table(jobs)


_ls = copy.copy(list_)
_ls.hidden = True  # `tidalq ls` works; --help lists `list` once
main.add_command(_ls, "ls")


@main.command()
@click.argument("job", shell_complete=complete_job_ids)
@json_option
@pass_app
@handles_errors
def show(app: App, job: str, as_json: bool) -> None:
    """One job, with per-track state for albums."""
    try:
        found = app.client().call("queue.get", {"id": job})["job"]
    except RpcError as exc:
        if exc.code in (ErrorCode.JOB_NOT_FOUND, ErrorCode.AMBIGUOUS_JOB_ID):
            fail(str(exc), EXIT_FAILED)
        raise
    if as_json:
        render.as_json(found)
    else:
        render.job_detail(found)


# -- acting on jobs ------------------------------------------------------------------------

def _per_job(app: App, method: str, ids: list[str], verb: str, extra: dict[str, Any] | None = None
             ) -> None:
    answer = app.client().call(method, {"ids": ids, **(extra or {})})
    if render.results(answer, verb):
        sys.exit(EXIT_FAILED)


@main.command()
@click.argument("jobs", nargs=-1, required=True, shell_complete=complete_job_ids)
@pass_app
@handles_errors
def cancel(app: App, jobs: tuple[str, ...]) -> None:
    """Cancel queued, paused or running jobs."""
    _per_job(app, "queue.cancel", list(jobs), "cancelled")


@main.command()
@click.argument("jobs", nargs=-1, shell_complete=complete_job_ids)
@click.option("--failed", is_flag=True, help="Retry every failed job.")
@pass_app
@handles_errors
def retry(app: App, jobs: tuple[str, ...], failed: bool) -> None:
    """Put failed or cancelled jobs back in the queue."""
    if bool(jobs) == failed:
        raise click.UsageError("name jobs to retry, or use --failed (not both)")
    if failed:
        answer = app.client().call("queue.retry", {"failed": True})
        results = answer.get("results", [])
        if not results:
            render.message("no failed jobs")
            return
        # a job that cannot be retried (an equal one is queued again) is a note, not a
        # failure, when others were retried
        retried = render.results(answer, "retrying", notes=True)
        if not retried:
            sys.exit(EXIT_FAILED)
        return
    _per_job(app, "queue.retry", list(jobs), "retrying")


@main.command()
@click.argument("jobs", nargs=-1, shell_complete=complete_job_ids)
@pass_app
@handles_errors
def pause(app: App, jobs: tuple[str, ...]) -> None:
    """Pause jobs (a running album stops between tracks); with none, pause the whole
    queue (running jobs go on)."""
    if jobs:
        _per_job(app, "queue.pause", list(jobs), "paused")
    else:
        app.client().call("queue.pause")
        render.message("queue paused: no new downloads start until `tidalq resume`")


@main.command()
@click.argument("jobs", nargs=-1, shell_complete=complete_job_ids)
@pass_app
@handles_errors
def resume(app: App, jobs: tuple[str, ...]) -> None:
    """Resume paused jobs; with none, resume the whole queue."""
    if jobs:
        _per_job(app, "queue.resume", list(jobs), "resumed")
    else:
        app.client().call("queue.resume")
        render.message("queue resumed")


@main.command()
@click.argument("job", shell_complete=complete_job_ids)
@click.argument("level", metavar="high|normal|low", type=PRIORITIES)
@pass_app
@handles_errors
def priority(app: App, job: str, level: str) -> None:
    """Move a waiting (queued or paused) job to the front (high), the middle or the back."""
    moved = app.client().call("queue.priority", {"id": job, "priority": level.lower()})["job"]
    render.message(f"{moved['id']} priority {moved['priority']}")


@main.command()
@click.argument("jobs", nargs=-1, required=True, shell_complete=complete_job_ids)
@pass_app
@handles_errors
def remove(app: App, jobs: tuple[str, ...]) -> None:
    """Delete finished jobs from the queue (files stay in the library)."""
    _per_job(app, "queue.remove", list(jobs), "removed")


@main.command()
@click.argument("jobs", nargs=-1, shell_complete=complete_job_ids)
@click.option("--timeout", type=click.FloatRange(0, 86400, min_open=True),
              help="Give up after this many seconds (exit 124).")
@json_option
@pass_app
@handles_errors
def wait(app: App, jobs: tuple[str, ...], timeout: float | None, as_json: bool) -> None:
    """Block until the jobs (or the whole queue) are finished.

    With no JOB: every queued or running job, and every job added since the last bare
    `wait` (so `tidalq add … && tidalq wait` reports what was just added, however fast
    it ended). Exits 0 when every job completed, 1 when one failed, was cancelled or was
    removed, 124 on timeout, 130 on Ctrl-C.
    """
    params: dict[str, Any] = {"ids": list(jobs)}
    if timeout:
        params["timeout"] = timeout
    try:
        answer = app.client(timeout_s=None).call("queue.wait", params, timeout_s=None)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    found = answer["jobs"]
    if as_json:
        render.as_json(answer)
    else:
        render.wait_summary(found, answer["timedOut"])
    for job_id in answer.get("missing", []):
        render.error(f"{job_id} was removed while waiting")
    if answer["timedOut"]:
        sys.exit(EXIT_TIMEOUT)
    if answer.get("missing") or any(j["status"] != "completed" for j in found):
        sys.exit(EXIT_FAILED)


@main.command()
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
              help="Seconds between refreshes when nothing happens.")
@pass_app
@handles_errors
def watch(app: App, interval: float) -> None:
    """Live progress until interrupted (Ctrl-C). Off a terminal (a pipe, a file), one
    plain line per job event instead."""
    try:
        if not sys.stdout.isatty():
            for event in app.client(timeout_s=None).events():
                render.event_line(event)
            return
        _watch_live(app, interval)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


def _watch_live(app: App, interval: float) -> None:
    import threading

    from rich.live import Live

    client = app.client()
    changed = threading.Event()

    def follow_events() -> None:
        try:
            for _ in app.client(timeout_s=None).events():
                changed.set()
        except DaemonUnreachable:
            changed.set()

    threading.Thread(target=follow_events, daemon=True).start()
    with Live(render.status_view(client.call("queue.stats")), console=render.console(),
              refresh_per_second=4) as live:
        while True:
            changed.wait(interval)
            changed.clear()
            live.update(render.status_view(client.call("queue.stats")))
            time.sleep(0.25)  # at most four redraws a second, however busy the queue


@main.command()
@click.argument("kind", type=click.Choice(["artist", "playlist", "mix", "favorites"]))
@click.argument("item", metavar="[ID_OR_URL]", required=False)
@click.option("--include", metavar="KINDS",
              help="Artists: which releases (as for add). Favorites: some of "
                   "tracks,albums,playlists,artists (default: all).")
@click.option("--quality", type=QUALITIES, help="Quality of what it submits.")
@click.option("--backfill/--no-backfill", default=None,
              help="Download what is there now too, not only what is new from now on "
                   "(default: no; for favorites: yes).")
@json_option
@pass_app
@handles_errors
def follow(app: App, kind: str, item: str | None, include: str | None, quality: str | None,
           backfill: bool | None, as_json: bool) -> None:
    """Follow an artist, playlist or mix, or your TIDAL favourites (`follow favorites`,
    after `tidalq login`): the daemon checks every follow_interval and downloads what is
    new. Favourite tracks and albums are downloaded; favourite playlists and artists are
    followed in turn."""
    params: dict[str, Any] = {"kind": kind}
    if kind == "favorites":
        if item:
            raise click.UsageError("follow favorites takes no id: it follows your account's")
        if include:
            params["include"] = include
    else:
        if not item:
            raise click.UsageError(f"follow {kind} needs an ID_OR_URL")
        params["id"] = _target(item, kind)[1]
        if include and kind == "artist":
            params["include"] = include
    if backfill is not None:
        params["backfill"] = backfill
    if quality:
        params["quality"] = quality.upper()
    answer = app.client().call("follows.add", params)
    if as_json:
        render.as_json(answer["follow"])
    else:
        render.message(answer["follow"]["id"] if answer["created"] else
                       f"{answer['follow']['id']} (already followed)")


@main.command()
@click.argument("follow_id", metavar="ID")
@pass_app
@handles_errors
def unfollow(app: App, follow_id: str) -> None:
    """Stop following (a follow id or prefix, or the followed id); nothing is deleted."""
    removed = app.client().call("follows.remove", {"id": follow_id})["removed"]
    render.message(f"unfollowed {removed}")


@main.command()
@json_option
@pass_app
@handles_errors
def follows(app: App, as_json: bool) -> None:
    """What is followed: the last check, its outcome and the next one."""
    found = app.client().call("follows.list")["follows"]
    if as_json:
        render.as_json(found)
    else:
        render.follows_table(found)


# -- the library ---------------------------------------------------------------------------

@main.command("verify")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path, exists=True))
@click.option("--repair", is_flag=True,
              help="Download the broken files again (through the daemon).")
@json_option
@pass_app
@handles_errors
def verify_library(app: App, paths: tuple[Path, ...], repair: bool, as_json: bool) -> None:
    """Decode every audio file of the library (or PATHs) in full and report the broken
    ones; exits 1 when any is broken (and not re-queued with --repair)."""
    import asyncio

    from tidalq.library import scrub  # the decoders only when they are needed

    roots = list(paths) or [app.settings().download_dir]
    files = list(scrub.audio_files(roots))
    if not as_json:
        render.message(f"decoding {len(files)} files…")

    def each(finding: scrub.Finding) -> None:
        if finding.error is not None and not as_json:
            render.error(f"BROKEN {finding.path}: {finding.error}")

    broken = asyncio.run(scrub.scrub(files, each))
    requeued = _requeue(app, broken) if repair and broken else []
    if as_json:
        render.as_json({"checked": len(files), "requeued": requeued,
                        "broken": [{"path": str(b.path), "error": b.error,
                                    "trackId": b.track_id} for b in broken]})
    else:
        render.message(f"checked {len(files)} files: {len(broken)} broken"
                       + (f", {len(requeued)} re-queued" if repair else ""))
        render.lines(requeued)
    if broken and len(requeued) < len(broken):
        sys.exit(EXIT_FAILED)


def _requeue(app: App, broken: list[Any]) -> list[str]:
    """Track jobs that replace the broken files (those tidalq tagged: their ids are known)."""
    jobs = [{"type": "track", "trackId": int(b.track_id), "forceOverwrite": True,
             **({"quality": b.quality} if b.quality in [q.value for q in Quality] else {})}
            for b in broken if b.track_id and b.track_id.isdigit()]
    if not jobs:
        return []
    ids: list[str] = app.client().call("queue.submit", {"jobs": jobs})["jobIds"]
    return ids


# -- the TIDAL account ------------------------------------------------------------------------

@main.command()
@click.option("--timeout", type=click.FloatRange(1, 3600), default=600, show_default=True,
              help="Give up waiting for the approval after this many seconds.")
@json_option
@pass_app
@handles_errors
def login(app: App, timeout: float, as_json: bool) -> None:
    """Log in to your own TIDAL account: prints a link and a code; open the link on any
    device (a phone will do), approve, and the daemon keeps the login in its state folder.
    Works without a running daemon too (it then writes the login file itself)."""
    try:
        client = app.client(timeout_s=90)
        start = client.call("account.login")
    except DaemonUnreachable:
        account = _login_alone(app, timeout)
    else:
        _show_code(start)
        account = _wait_for_login(client, timeout)
    if as_json:
        render.as_json(account)
    else:
        render.message("logged in. " + render.account_line(account))


def _show_code(start: dict[str, Any]) -> None:
    minutes = max(1, round(float(start.get("expiresInS") or 300) / 60))
    render.message(f"Open {start['link']} and approve the code {start['code']} "
                   f"(within {minutes} minutes). Waiting...")


def _wait_for_login(client: DaemonClient, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            fail("gave up waiting for the approval; run tidalq login again", EXIT_TIMEOUT)
        answer = client.call("account.wait", {"timeout": min(30.0, max(1.0, left))})
        if answer["state"] == "done":
            account: dict[str, Any] = answer["account"]
            return account
        if answer["state"] == "failed":
            fail(f"login failed: {answer.get('error')}", EXIT_FAILED)
        if answer["state"] == "none":
            fail("the daemon lost the login (it restarted?): run tidalq login again",
                 EXIT_FAILED)


def _login_alone(app: App, timeout: float) -> dict[str, Any]:
    """No daemon: run the device login here and write the login file ourselves."""
    import asyncio

    from tidalq.login import login_here  # aiohttp only when it is needed

    settings = app.settings()
    render.message(f"(no daemon running: logging in here; the login is kept in "
                   f"{settings.login_file})")
    return asyncio.run(login_here(settings, timeout, _show_code))


@main.command()
@pass_app
@handles_errors
def logout(app: App) -> None:
    """Revoke the TIDAL login and delete it (the daemon's, or here without a daemon)."""
    try:
        answer = app.client().call("account.logout")
    except DaemonUnreachable:
        import asyncio

        from tidalq.login import logout_here

        answer = {"loggedOut": asyncio.run(logout_here(app.settings()))}
    render.message("logged out" if answer["loggedOut"] else "was not logged in")


@main.command()
@pass_app
@handles_errors
def stop(app: App) -> None:
    """Ask the daemon to drain and exit."""
    app.client().call("daemon.shutdown")
    render.message("daemon stopping")
