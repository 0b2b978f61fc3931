"""`lyrics` (TIDALQ_LYRICS): off by default, no lyrics request per track, no .lrc, no lyrics
tag; on (the environment or the config file) fetches them: the tag and a .lrc beside a
synced one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mutagen.flac import FLAC

from tests.helpers import FakeProcess
from tests.test_account import wait_job

ALBUM = Path("Test Artist") / "First Light"


def _album_paths(d: Any, fake_proc: FakeProcess) -> list[str]:
    """Runs album 100 through the CLI; the upstream paths it asked for."""
    before = len(fake_proc.requests())
    wait_job(d, d.cli("add", "album", "100").stdout.strip())
    return [r["path"] for r in fake_proc.requests()[before:]]


def test_lyrics_are_off_by_default_and_cost_no_request(make_daemon: Any,
                                                       fake_proc: FakeProcess,
                                                       tmp_path: Path) -> None:
    paths = _album_paths(make_daemon(), fake_proc)
    assert "/lyrics/" not in paths and paths.count("/track/") == 3
    album = tmp_path / "lib" / ALBUM
    assert not list(album.glob("*.lrc"))
    assert "LYRICS" not in (FLAC(album / "01 - Opening.flac").tags or {})


def test_lyrics_on_in_the_environment_tags_and_writes_the_lrc(
        make_daemon: Any, fake_proc: FakeProcess, tmp_path: Path) -> None:
    paths = _album_paths(make_daemon(TIDALQ_LYRICS="on"), fake_proc)
    assert paths.count("/lyrics/") == 3 and paths.count("/track/") == 3
    album = tmp_path / "lib" / ALBUM
    assert (album / "01 - Opening.lrc").read_text().startswith("[")
    assert "First line" in FLAC(album / "01 - Opening.flac")["LYRICS"][0]


def test_lyrics_on_in_the_config_file(make_daemon: Any, fake_proc: FakeProcess,
                                      tmp_path: Path) -> None:
    config = tmp_path / "no-config" / "tidalq" / "config.toml"  # the daemon's XDG folder
    config.parent.mkdir(parents=True)
    config.write_text('lyrics = "on"\n')
    paths = _album_paths(make_daemon(), fake_proc)
    assert paths.count("/lyrics/") == 3
    assert (tmp_path / "lib" / ALBUM / "01 - Opening.lrc").exists()
