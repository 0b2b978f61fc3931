"""Search through the user's doors: `tidalq search` (a numbered table, --json, --add) and
`GET /api/search`, against the fake hifi-api's `/search/` and the fake TIDAL's `/v1/search`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from rich.text import Text

from tests.helpers import FakeProcess, at_a_terminal, free_port
from tests.test_account import log_in, wait_job
from tidalq.testing.catalog import PAGING_ARTIST, PLAYLIST


def test_search_finds_and_adds_through_the_cli(make_daemon: Any) -> None:
    d = make_daemon()
    table = d.cli("search", "first", "light").stdout.splitlines()
    assert table[0].split()[:4] == ["#", "TITLE", "ARTIST", "YEAR"]
    rows = [line.split() for line in table[1:]]
    assert [r[0] for r in rows] == ["1", "2"] and [r[-1] for r in rows] == ["100", "110"]
    assert "2024" in table[1] and "LOSSLESS" in table[1]

    tracks = d.json("search", "track", "opening")
    assert [(r["type"], r["id"], r["title"]) for r in tracks] == [
        ("track", 1001, "Opening"), ("track", 1101, "Opening")]
    assert tracks[0]["artist"] == "Test Artist" and tracks[0]["cover"]
    hires = d.json("search", "high", "resolution")[0]
    assert hires["quality"] == "HI_RES_LOSSLESS" and hires["tracks"] == 2
    artist = d.json("search", "artist", "paging")
    assert [(r["type"], r["id"]) for r in artist] == [("artist", PAGING_ARTIST)]
    playlist = d.json("search", "playlist", "road", "trip")
    assert [(r["type"], r["id"]) for r in playlist] == [("playlist", PLAYLIST)]
    assert "nothing found" in d.cli("search", "no such music").stdout
    assert len(d.json("search", "track", "part", "--limit", "5")) == 5

    job_id = d.cli("search", "first", "light", "--add", "2", "--quality",
                   "LOSSLESS").stdout.strip()
    done = wait_job(d, job_id)
    assert done["job"]["albumId"] == 110 and done["completedTracks"] == 3
    both = d.json("search", "artist", "paging", "--add", "1")
    assert [j["job"]["type"] for j in both] == ["artist"]


def test_search_on_an_80_column_terminal_cuts_long_names_to_fit(make_daemon: Any) -> None:
    d = make_daemon()
    shown = at_a_terminal(d, 80, "search", "Lång")  # album 420: ~300-byte title and artist
    assert shown[0].split()[:3] == ["#", "TITLE", "ARTIST"], shown
    row = shown[1]
    assert row.startswith("1  Lång") and row.endswith("420"), shown
    assert row.count("…") == 2, "the title and the artist cut, the year, quality and id kept"
    assert "2024" in row and "LOSSLESS" in row
    assert Text(row).cell_len <= 80, shown


def test_bad_searches_are_refused_clearly(make_daemon: Any) -> None:
    d = make_daemon()
    for args, said in ((["first", "--add", "9"], "there are 2 results"),
                       (["first", "--add", "one"], "result numbers"),
                       (["first", "--limit", "0"], "--limit"),
                       (["x" * 300], "at most 200 characters")):
        out = d.cli("search", *args, check=False)
        assert out.returncode == 2 and said in out.stderr, (args, out.stderr)


def test_search_over_http(make_daemon: Any) -> None:
    port = free_port()
    d = make_daemon(TIDALQ_HTTP=f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}/api/search"

    def get(query: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"{base}?{query}", timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    status, body = get("q=first+light&type=album&limit=1")
    assert status == 200 and body["success"] and [r["id"] for r in body["results"]] == [100]
    assert get("q=first&type=video")[0] == 400
    assert get("q=&type=album")[0] == 400
    assert get("q=first&limit=1000")[0] == 400
    assert d.proc is not None and d.proc.poll() is None


def test_search_through_the_tidal_account(make_daemon: Any, fake_proc: FakeProcess) -> None:
    d = make_daemon(**fake_proc.tidal_env())
    log_in(d, fake_proc)
    before = len(fake_proc.requests())
    found = d.json("search", "album", "double", "vision")
    assert [(r["id"], r["tracks"], r["year"]) for r in found] == [(200, 4, "2024")]
    asked = [r for r in fake_proc.requests()[before:] if r["path"] == "/tidal/v1/search"]
    assert len(asked) == 1 and asked[0]["query"]["types"] == "ALBUMS"
