"""Everything the CLI prints: tables, progress, JSON. The only module that prints.

Human output goes to stdout through rich; errors go to stderr as one actionable line.
``--json`` output is plain JSON on stdout, one document per command.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, Group
    from rich.table import Table
    from rich.text import Text

_consoles: dict[bool, Console] = {}


def console(stderr: bool = False) -> Console:
    """The rich console of stdout (or stderr), made on first use. rich takes longer to
    import than the rest of ``tidalq add`` or of any ``--json`` command: they print
    without it.

    Piped output is not cut to 80 columns: job ids must survive ``tidalq ls | grep``. No
    markup and no :emoji: codes: titles and errors come from upstreams and clients,
    printed literally."""
    if stderr not in _consoles:
        from rich.console import Console

        width = None if stderr or sys.stdout.isatty() else 250
        _consoles[stderr] = Console(stderr=stderr, highlight=False, soft_wrap=True,
                                    markup=False, emoji=False, width=width)
    return _consoles[stderr]


STATUS_STYLE = {"queued": "cyan", "processing": "yellow", "paused": "magenta",
                "completed": "green", "failed": "red", "cancelled": "dim"}


def as_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def error(message: str) -> None:
    from rich.text import Text

    console(stderr=True).print(Text(f"tidalq: {message}", style="red"))


def lines(values: list[str]) -> None:
    for value in values:
        sys.stdout.write(value + "\n")


def _status(status: str) -> Text:
    from rich.text import Text

    return Text(status, style=STATUS_STYLE.get(status, ""))


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return time.strftime("%m-%d %H:%M:%S", time.localtime(ms / 1000))


def _title(spec: dict[str, Any]) -> str:
    """"Artist – Album" or "Artist – Track" once the daemon knows them, else "album 100"."""
    kind = spec["type"]
    name = {"track": spec.get("trackTitle"), "artist": spec.get("artistName")}.get(
        kind, spec.get("albumTitle"))
    if not name:
        return f"{kind} {spec.get(kind + 'Id')}"
    if kind in ("artist", "playlist", "mix"):
        return f"{name} ({kind})" if kind != "artist" else f"{name} (discography)"
    artist = spec.get("artistName")
    return f"{artist} – {name}" if artist else name


def _percent(progress: float) -> str:
    return f"{progress * 100:5.1f}%"


MIN_TITLE_CELLS = 24  # what a narrow terminal leaves the titles before columns go
LAST_COLUMN_CELLS = 12  # kept for the last column (a short one fits; a longer one runs on)


def _columns(headers: tuple[str, ...], rows: list[list[str | Text]], cut: tuple[int, ...],
             droppable: tuple[int, ...] = ()) -> Text:
    """Rows as aligned columns two spaces apart, under bold headers. The last column runs
    on past :data:`LAST_COLUMN_CELLS` (a long error or path wraps); the ``cut`` columns
    (titles, names) share what the rest leaves of the terminal, each cut with … where it
    needs more. Where the terminal is too narrow to leave each of them
    :data:`MIN_TITLE_CELLS` (or all it needs), the ``droppable`` columns are left out, in
    that order, first: a list that says what each job is beats one that says when.

    rich's Table does this too, but measures every cell several times: 20-odd ms for 50
    jobs, more than the rest of ``tidalq list`` after start-up."""
    from rich.text import Text

    grid = [[Text(h, style="bold") for h in headers],
            *[[c if isinstance(c, Text) else Text(c) for c in row] for row in rows]]
    widths = [max(row[i].cell_len for row in grid) for i in range(len(headers))]
    shown = _fit(widths, headers, cut, droppable)
    return Text("\n").join(_line(row, widths, shown) for row in grid)


def _fit(widths: list[int], headers: tuple[str, ...], cut: tuple[int, ...],
         droppable: tuple[int, ...]) -> list[int]:
    """The columns :func:`_columns` shows; the ``cut`` ones' ``widths`` set to fit."""
    last = min(widths[-1], LAST_COLUMN_CELLS)
    shown = list(range(len(headers)))

    def room_for_titles() -> int:
        others = sum(widths[i] + 2 for i in shown[:-1] if i not in cut)
        return console().width - others - 2 * len(cut) - last

    wanted = sum(min(widths[i], MIN_TITLE_CELLS) for i in cut)
    for column in droppable:
        if room_for_titles() >= wanted:
            break
        shown.remove(column)
    for i, share in zip(cut, _share(room_for_titles(), [widths[i] for i in cut]), strict=True):
        widths[i] = max(len(headers[i]), share)
    return shown


def _line(row: list[Text], widths: list[int], shown: list[int]) -> Text:
    from rich.text import Text

    line = Text()
    for i in shown[:-1]:
        cell = row[i]
        if cell.cell_len > widths[i]:
            cell = cell.copy()
            cell.truncate(widths[i], overflow="ellipsis")
        line.append_text(cell)
        line.append(" " * (widths[i] - cell.cell_len + 2))
    line.append_text(row[-1])
    line.rstrip()
    return line


def _share(room: int, wants: list[int]) -> list[int]:
    """``room`` cells shared by columns wanting ``wants``: none gets more than it wants,
    and what one leaves goes to the others, evenly."""
    given = [0] * len(wants)
    by_want = sorted(range(len(wants)), key=wants.__getitem__)
    for k, i in enumerate(by_want):
        given[i] = min(wants[i], max(0, room) // (len(by_want) - k))
        room -= given[i]
    return given


def jobs_table(jobs: list[dict[str, Any]]) -> None:
    if not jobs:
        console().print("no jobs")
        return
    rows: list[list[str | Text]] = []
    for job in jobs:
        note = job.get("error") or ""
        if job["job"]["type"] in ("album", "playlist", "mix") and job.get("trackCount"):
            note = f"{job['completedTracks']}/{job['trackCount']} tracks " + note
        rows.append([job["id"], _title(job["job"]), job["job"]["quality"],
                     _status(job["status"]), _percent(job["progress"]),
                     _when(job["createdAt"]), note.strip()])
    headers = ("ID", "WHAT", "QUALITY", "STATUS", "PROGRESS", "CREATED", "NOTE")
    console().print(_columns(headers, rows, cut=(1,), droppable=(5, 2)))  # CREATED, QUALITY


def job_detail(job: dict[str, Any]) -> None:
    from rich.text import Text

    console().print(Text.assemble((job["id"], "bold"), "  ", _status(job["status"]),
                                  f"  {_percent(job['progress'])}"))
    kind = job["job"]["type"]
    rows = [("what", f"{_title(job['job'])} [{kind} {job['job'].get(kind + 'Id')}]"),
            ("quality", job["job"]["quality"]),
            ("priority", job["priority"]), ("attempts", f"{job['attempts']}/{job['maxAttempts']}"),
            ("created", _when(job["createdAt"])), ("started", _when(job["startedAt"])),
            ("finished", _when(job["completedAt"])), ("next retry", _when(job["nextRetryAt"]))]
    if job.get("error"):
        rows.append(("error", f"{job['error']} ({job.get('failureCode')})"))
    if job["job"].get("musicBrainzMatch"):
        rows.append(("musicbrainz", job["job"]["musicBrainzMatch"]))
    result = job.get("result")
    if result:
        rows.append(("file", str(result.get("path"))))
        rows.append(("received", f"{result.get('quality')} {result.get('codec')} "
                                 f"{result.get('bitDepth') or '?'}-bit "
                                 f"{result.get('sampleRate')} Hz"
                                 + (" (already in library)" if result.get("skipped") else "")))
    for key, value in rows:
        console().print(f"  {key:<12}{value}")
    if job.get("playlistPath"):
        console().print(f"  {'playlist':<12}{job['playlistPath']}")
    tracks = job.get("trackProgress") or job.get("releases") or []
    if tracks:
        console().print(_entries_table(tracks))


def _entries_table(entries: list[dict[str, Any]]) -> Text:
    """An album's tracks, a playlist's items or an artist's album jobs."""
    rows: list[list[str | Text]] = []
    for t in entries:
        if "position" in t:
            number = str(t["position"])
        elif "trackNumber" in t:
            number = f"{t.get('discNumber')}-{int(t.get('trackNumber') or 0):02d}"
        else:
            number = str(t.get("kind", ""))
        rows.append([number, str(t.get("title", "")), _status(str(t.get("status", ""))),
                     _percent(float(t.get("progress") or 0)),
                     str(t.get("error") or t.get("path") or t.get("jobId") or "")])
    return _columns(("#", "TITLE", "STATUS", "PROGRESS", "FILE / ERROR / JOB"), rows, cut=(1,))


def status_view(stats: dict[str, Any]) -> Group:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    q, w = stats["queue"], stats["worker"]
    counts = Table.grid(padding=(0, 2))
    cells = [Text(f"{name} {q.get(name, 0)}", style=style) for name, style in STATUS_STYLE.items()]
    for _ in cells:
        counts.add_column()
    counts.add_row(*cells)
    state = "running" if w.get("running") else "stopped"
    if w.get("queuePaused"):
        state = "paused (tidalq resume)"
    speed = f" at {_rate(w['downloadBps'])}" if w.get("downloadBps") else ""
    worker = Text(f"workers {state}: {w.get('activeDownloads', 0)}/{w.get('maxConcurrent')} "
                  f"downloads{speed}")
    parts: list[Any] = [counts, worker]
    if w.get("problem"):
        parts.append(Text(f"! {w['problem']}", style="bold red"))
    for name, seconds in (w.get("resting") or {}).items():
        parts.append(Text(f"! {name} rested for {seconds:.0f} s more (rate limited or "
                          "failing): its requests wait", style="yellow"))
    if stats.get("account"):
        parts.append(Text(account_line(stats["account"])))
    if len(stats.get("daemons") or []) > 1:
        parts.append(Text("daemons: " + "; ".join(_daemon_text(d) for d in stats["daemons"])))
    for job in stats.get("active", []):
        parts.append(_active_line(job))
    return Group(*parts)


def _daemon_text(d: dict[str, Any]) -> str:
    """One daemon of the store: where, which, how busy, how recently heard of."""
    age = max(0.0, time.time() - int(d.get("lastBeat") or 0) / 1000)
    return (f"{d.get('id')} on {d.get('host')} (v{d.get('version')}, "
            f"{d.get('slotsInUse')}/{d.get('maxConcurrent')} slots, {age:.0f} s ago)")


def account_line(account: dict[str, Any]) -> str:
    """The TIDAL login, as `status` and `login` show it (never a token)."""
    best = account.get("bestQuality") or "unknown"
    line = (f"TIDAL account: user {account.get('userId')} ({account.get('countryCode')}), "
            f"best quality {best}")
    if account.get("problem"):
        line += f" - {account['problem']}"
    return line


ID_CELLS, BAR_CELLS = 27, 12


def _active_line(job: dict[str, Any]) -> Table:
    """One running job on one line: titles are cut to fit, never wrapped. On a terminal
    too narrow to leave the title :data:`MIN_TITLE_CELLS` (or all it needs), the bytes,
    speed and daemon go first, then the bar (percentage, tracks and ETA stay): what runs
    beats how fast."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    eta = job.get("etaS")
    eta_text = f" ETA {int(eta // 60)}:{int(eta % 60):02d}" if eta is not None else ""
    tracks = f" {job['completedTracks']}/{job['trackCount']}" if job.get("trackCount") else ""
    where = f" on {job['daemon']}" if job.get("daemon") else ""
    size = ""
    if job.get("bytesDone"):
        total = f" of {_size(job['bytesTotal'])}" if job.get("bytesTotal") else ""
        speed = f" at {_rate(job['speedBps'])}" if job.get("speedBps") else ""
        size = f" {_size(job['bytesDone'])}{total}{speed}"
    title = _title(job)
    percent = f"{_percent(job['progress'])}{tracks}"
    figures, bar = _what_fits(f"{percent}{size}{eta_text}{where}", f"{percent}{eta_text}",
                              min(Text(title).cell_len, MIN_TITLE_CELLS))
    line = Table.grid(padding=(0, 1), expand=True)
    line.add_column(width=ID_CELLS, no_wrap=True)
    if bar:
        line.add_column(width=BAR_CELLS, no_wrap=True)
    line.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    line.add_column(no_wrap=True)
    cells: list[Any] = [job["id"], title, figures]
    if bar:
        cells.insert(1, ProgressBar(total=1.0, completed=job["progress"], width=BAR_CELLS))
    line.add_row(*cells)
    return line


def _what_fits(figures: str, fewer: str, title_cells: int) -> tuple[str, bool]:
    """A running job's figures and whether its bar is drawn, so that its title keeps
    ``title_cells``: all figures and the bar, or ``fewer`` figures, or no bar either."""
    for shown, bar in ((figures, True), (fewer, True), (fewer, False)):
        room = console().width - ID_CELLS - (BAR_CELLS + 1 if bar else 0) - len(shown) - 2
        if room >= title_cells:
            return shown, bar
    return fewer, False


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _rate(bytes_per_s: float) -> str:
    return _size(bytes_per_s) + "/s"


def status(stats: dict[str, Any]) -> None:
    console().print(status_view(stats))


def results(answer: dict[str, Any], verb: str, notes: bool = False) -> int:
    """Per-job outcome lines; returns how many failed (``notes``: how many succeeded, and
    the others are printed as notes)."""
    failures = succeeded = 0
    for r in answer.get("results", []):
        if r.get("ok"):
            succeeded += 1
            console().print(f"{r.get('message') or verb} {r['id']}")
        elif notes:
            console(stderr=True).print(f"note: {r['id']}: {r.get('error')}")
        else:
            failures += 1
            error(f"{r['id']}: {r.get('error')}")
    return succeeded if notes else failures


def wait_summary(jobs: list[dict[str, Any]], timed_out: bool) -> None:
    from rich.text import Text

    for job in jobs:
        console().print(Text.assemble(job["id"], " ", _status(job["status"]),
                                      f" {job.get('error') or ''}"))
    if timed_out:
        error("timed out waiting for jobs to finish")


def follows_table(follows: list[dict[str, Any]]) -> None:
    if not follows:
        console().print("nothing followed")
        return
    rows: list[list[str | Text]] = [
        [f["id"], f"{f['kind']} {f.get('title') or f['ref']}", _when(f.get("lastCheckAt")),
         _when(f.get("nextCheckAt")), f.get("lastOutcome") or "not checked yet"]
        for f in follows]
    console().print(_columns(("ID", "WHAT", "LAST CHECK", "NEXT CHECK", "OUTCOME"), rows,
                             cut=(1,), droppable=(2,)))


def search_table(results: list[dict[str, Any]]) -> None:
    """Search results, numbered for `--add`."""
    if not results:
        console().print("nothing found")
        return
    rows: list[list[str | Text]] = [
        [str(n), str(r.get("title") or ""), str(r.get("artist") or ""), r.get("year") or "",
         "" if r.get("tracks") is None else str(r["tracks"]), r.get("quality") or "",
         "E" if r.get("explicit") else "", str(r.get("id"))]
        for n, r in enumerate(results, 1)]
    console().print(_columns(("#", "TITLE", "ARTIST", "YEAR", "TRACKS", "QUALITY", "E", "ID"),
                             rows, cut=(1, 2)))


def event_line(event: dict[str, Any]) -> None:
    """One job event as a plain line (``tidalq watch`` into a pipe or a file)."""
    when = time.strftime("%H:%M:%S", time.localtime((event.get("at") or 0) / 1000))
    sys.stdout.write(f"{when} {event.get('jobId')} {event.get('type')} {event.get('status')} "
                     f"{_percent(float(event.get('progress') or 0)).strip()}\n")
    sys.stdout.flush()


def message(text: str) -> None:
    console().print(text)
