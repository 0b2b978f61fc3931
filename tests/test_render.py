"""What the CLI prints for humans: job lists lined up in columns that fit the terminal."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.text import Text

from tidalq import render
from tidalq.models import Job, JobSpec
from tidalq.terms import JobStatus


def printed(monkeypatch: pytest.MonkeyPatch, width: int, show: object, *args: object) -> list[str]:
    console = Console(file=io.StringIO(), width=width, highlight=False, soft_wrap=True,
                      markup=False, emoji=False)
    monkeypatch.setitem(render._consoles, False, console)
    show(*args)  # type: ignore[operator]
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined]


def listed(title: str, status: JobStatus = JobStatus.QUEUED) -> dict[str, object]:
    job = Job(id=f"job-1-{abs(hash(title)) % 10**9:09d}",
              spec=JobSpec("album", 100, album_title=title, artist_name="Artist"))
    job.status = status
    return job.to_json()


def test_columns_line_up_under_their_headers_whatever_the_script(
        monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = [listed("Short"), listed("坂本龍一 Playing the Piano", JobStatus.COMPLETED),
            listed("Ünïcödé Àlbum", JobStatus.FAILED)]
    lines = printed(monkeypatch, 200, render.jobs_table, jobs)
    assert len(lines) == 4
    header = lines[0]
    # the STATUS column starts at the same screen column on every line
    starts = {Text(line).cell_len - Text(line[line.index(word):]).cell_len
              for line, word in zip(lines, ["STATUS", "queued", "completed", "failed"],
                                    strict=True)}
    assert len(starts) == 1, lines
    assert header.split() == ["ID", "WHAT", "QUALITY", "STATUS", "PROGRESS", "CREATED", "NOTE"]
    assert all(line == line.rstrip() for line in lines), "no trailing blanks"


def test_long_titles_are_cut_to_fit_a_narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    long = "A Very Long Album Title That Goes On And On " * 3
    lines = printed(monkeypatch, 100, render.jobs_table, [listed(long), listed("Short")])
    assert "…" in lines[1] and "Short" in lines[2]
    assert all(Text(line).cell_len <= 100 for line in lines), lines
    wide = printed(monkeypatch, 400, render.jobs_table, [listed(long)])
    assert long.strip() in wide[1]


def test_an_album_shows_its_tracks_in_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    tracks = [{"trackNumber": n, "discNumber": 1, "title": f"Track {n}", "status": "completed",
               "progress": 1.0, "path": f"/music/{n:02d}.flac"} for n in (1, 2, 10)]
    lines = printed(monkeypatch, 120, lambda: render.console().print(render._entries_table(tracks)))
    assert lines[0].split()[:3] == ["#", "TITLE", "STATUS"]
    assert [line.index("/music") for line in lines[1:]] == [lines[0].index("FILE")] * 3
    assert lines[3].startswith("1-10")


def test_a_narrow_terminal_leaves_out_the_less_telling_columns_before_the_titles(
        monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = [{**listed("A Title Long Enough To Be Cut Somewhere", JobStatus.COMPLETED),
             "id": "job-1796461815505-pmbfv5apk"}]  # as long as a real id
    narrow = printed(monkeypatch, 80, render.jobs_table, jobs)
    assert narrow[0].split() == ["ID", "WHAT", "STATUS", "PROGRESS", "NOTE"]
    assert "Artist – A Title Long E" in narrow[1]
    assert all(Text(line).cell_len <= 80 for line in narrow), narrow
    roomy = printed(monkeypatch, 96, render.jobs_table, jobs)  # CREATED goes, QUALITY stays
    assert roomy[0].split() == ["ID", "WHAT", "QUALITY", "STATUS", "PROGRESS", "NOTE"]
    follows = [{"id": "f-1a2b3c4d", "kind": "artist", "title": "An Artist With A Long Name",
                "ref": "42", "lastCheckAt": 1_700_000_000_000, "nextCheckAt": 1_700_000_600_000,
                "lastOutcome": "2 new albums submitted"}]
    assert printed(monkeypatch, 200, render.follows_table, follows)[0].split()[2:4] == \
        ["LAST", "CHECK"]
    narrow = printed(monkeypatch, 72, render.follows_table, follows)
    assert "LAST" not in narrow[0], narrow
    assert "artist An Artist With A" in narrow[1], narrow
