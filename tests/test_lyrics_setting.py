"""`lyrics = off` (TIDALQ_LYRICS): no lyrics request per track, no .lrc, no lyrics tag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mutagen.flac import FLAC

from tests.helpers import FakeProcess
from tests.test_account import wait_job


def test_lyrics_off_saves_a_request_per_track(make_daemon: Any, fake_proc: FakeProcess,
                                              tmp_path: Path) -> None:
    d = make_daemon(TIDALQ_LYRICS="off")
    before = len(fake_proc.requests())
    wait_job(d, d.cli("add", "album", "100").stdout.strip())
    paths = [r["path"] for r in fake_proc.requests()[before:]]
    assert "/lyrics/" not in paths and paths.count("/track/") == 3
    album = tmp_path / "lib" / "Test Artist" / "First Light"
    assert not list(album.glob("*.lrc"))
    assert "LYRICS" not in (FLAC(album / "01 - Opening.flac").tags or {})
