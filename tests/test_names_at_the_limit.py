"""Names at the filesystem's limit: every name tidalq derives fits NAME_MAX (255 bytes) and
PATH_MAX, cut on a UTF-8 character boundary by one function, through the installed CLI and
on a real filesystem, and as a property over any title, extension and template."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import DaemonProcess
from tidalq.errors import FailureCode, FilesystemError, from_os_error
from tidalq.media import tags
from tidalq.media.paths import (
    MAX_COMPONENT_BYTES,
    MAX_PATH_BYTES,
    TRACK_SUFFIXES,
    edition_marker,
    sanitize,
    target_path,
)
from tidalq.models import Artist, TrackMeta
from tidalq.testing.catalog import LONG_NAME, LONG_NAMES_PLAYLIST

NAME_MAX = 255
TEMPLATES = ["{albumartist}/{album}/{disc_track} - {title}", "{title}", "{album}/{title}",
             "{albumartist}/{album} ({year})/{disc_track} - {title} [{isrc}]",
             "{title} - {album}", "{artist}/{album}/CD{disc}/{track} {title}"]


def names_under(library: Path) -> list[Path]:
    return [p for p in library.rglob("*") if ".tidalq" not in p.relative_to(library).parts]


def assert_fits(paths: list[Path]) -> None:
    for p in paths:
        assert len(p.name.encode()) <= NAME_MAX, p.name
        assert len(str(p).encode()) <= MAX_PATH_BYTES, p
        p.name.encode().decode("utf-8")  # cut on a character boundary


def test_an_album_of_long_names_downloads_at_every_quality_through_the_cli(
        make_daemon: Any, tmp_path: Path) -> None:
    """The black-box run's album: ~300-byte mixed-script titles at HIGH (.m4a), then the
    same album at LOSSLESS, whose one-file-per-track check looks for the .flac beside the
    .m4a (one byte longer), and a playlist of them with a name as long."""
    daemon: DaemonProcess = make_daemon(TIDALQ_LYRICS="on")  # the .lrc's name too
    library = tmp_path / "lib"
    aac = daemon.cli("add", "album", "420", "--quality", "HIGH").stdout.strip()
    out = daemon.cli("wait", aac, "--timeout", "60", check=False)
    job = daemon.json("show", aac)
    assert out.returncode == 0 and job["status"] == "completed", job
    assert all(t["path"].endswith(".m4a") for t in job["trackProgress"])
    lrc = Path(job["trackProgress"][0]["path"]).with_suffix(".lrc")
    assert lrc.exists() and (lrc.parent / "cover.jpg").exists()

    flac = daemon.cli("add", "album", "420", "--quality", "LOSSLESS").stdout.strip()
    daemon.cli("wait", flac, "--timeout", "60")
    upgraded = daemon.json("show", flac)
    assert upgraded["status"] == "completed", upgraded
    audio = sorted(p for p in names_under(library) if p.suffix in (".flac", ".m4a"))
    assert [p.suffix for p in audio] == [".flac"] * 3, "each .m4a replaced by its .flac"
    assert {tags.read_identity(p)[0] for p in audio} == {"4201", "4202", "4203"}
    for entry, before in zip(upgraded["trackProgress"], job["trackProgress"], strict=True):
        assert Path(entry["path"]).stem == Path(before["path"]).stem, "one stem per track"

    playlist = daemon.cli("add", "playlist", LONG_NAMES_PLAYLIST).stdout.strip()
    daemon.cli("wait", playlist, "--timeout", "60")
    done = daemon.json("show", playlist)
    m3u8 = library / done["playlistPath"]
    listed = [line for line in m3u8.read_text().splitlines() if not line.startswith("#")]
    assert len(listed) == 4 and all((m3u8.parent / entry).exists() for entry in listed)
    assert m3u8.name.startswith(LONG_NAME[:20]) and m3u8.suffix == ".m3u8"
    assert_fits(names_under(library))


def meta(title: str, album: str, version: str | None = None) -> TrackMeta:
    return TrackMeta(id=5, title=title, version=version, duration_s=4, track_number=3,
                     disc_number=2, artists=(Artist(1, album[:80]),), album_id=123456789,
                     album_title=album, album_artist=album[:100], disc_total=2,
                     isrc="USFAKE000005", release_date="2024-05-17")


utf8_text = st.text(st.characters(codec="utf-8"), max_size=400).map(
    lambda s: s.encode()[:400].decode("utf-8", "ignore"))


@settings(max_examples=150, deadline=None)
@given(title=utf8_text, album=utf8_text, template=st.sampled_from(TEMPLATES),
       extension=st.sampled_from([".flac", ".m4a"]), edition=st.booleans(),
       depth=st.integers(0, 3))
def test_every_derived_name_fits_any_title_extension_and_template(
        title: str, album: str, template: str, extension: str, edition: bool,
        depth: int) -> None:
    root = Path("/srv") / "/".join(["é" * 120] * depth * 4)  # up to ~2.9 kB deep
    path = target_path(root, template, meta(title, album, version="Remix"), extension,
                       edition)
    siblings = [path.with_suffix(s) for s in TRACK_SUFFIXES]
    assert_fits([path, *siblings, path.parent / "cover.jpg"])
    assert all(0 < len(p.encode()) <= NAME_MAX for p in path.relative_to(root).parts)
    other = ".m4a" if extension == ".flac" else ".flac"
    assert target_path(root, template, meta(title, album, "Remix"), other, edition) == \
        path.with_suffix(other), "a track's files share one stem at every quality"
    if edition and "{album}" in template:
        assert any(p.endswith(edition_marker(123456789)) or
                   p.removesuffix(extension).endswith(edition_marker(123456789))
                   for p in path.relative_to(root).parts), path


@settings(max_examples=40, deadline=None)
@given(title=utf8_text, extension=st.sampled_from([".flac", ".m4a"]))
def test_long_names_are_created_on_a_real_filesystem(tmp_path_factory: Any, title: str,
                                                     extension: str) -> None:
    root = tmp_path_factory.mktemp("fs")
    path = target_path(root, TEMPLATES[0], meta(title, title, "Remix"), extension, True)
    path.parent.mkdir(parents=True)
    for name in (path, *(path.with_suffix(s) for s in TRACK_SUFFIXES),
                 path.parent / "cover.jpg"):
        name.write_bytes(b"x")
    playlist = root / sanitize(title, ".m3u8")
    playlist.write_text("#EXTM3U\n")


def test_sanitize_cuts_on_a_character_boundary_and_keeps_the_tail() -> None:
    cut = sanitize("語" * 100, " [42].flac", room=len(" [42]") + 5)
    assert cut.endswith(" [42].flac") and len(cut.encode()) <= MAX_COMPONENT_BYTES
    assert set(cut.removesuffix(" [42].flac")) == {"語"}
    assert len(sanitize(string.ascii_letters * 10, ".m4a", room=5).encode()) == 254


def test_a_name_too_long_is_a_filesystem_error_not_an_internal_one() -> None:
    error = from_os_error(OSError(36, "File name too long"))
    assert isinstance(error, FilesystemError) and error.code is FailureCode.FILESYSTEM
    assert not error.retryable
    # a timeout or a reset reaching the same handler is the network's, and worth a retry
    for network in (TimeoutError(), ConnectionResetError(104, "Connection reset by peer")):
        error = from_os_error(network)
        assert error.code is FailureCode.UPSTREAM_UNAVAILABLE and error.retryable
