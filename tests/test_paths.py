"""Path templates and sanitising."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidalq.errors import InvalidInput
from tidalq.media.paths import relative_path, sanitize, target_path
from tidalq.models import Artist, TrackMeta


def meta(title: str = "Song", disc: int = 1, discs: int = 1, version: str | None = None,
         album: str = "Album", artist: str = "Artist") -> TrackMeta:
    return TrackMeta(id=1, title=title, version=version, duration_s=4, track_number=7,
                     disc_number=disc, artists=(Artist(1, artist),), album_id=2,
                     album_title=album, album_artist=artist, disc_total=discs)


@pytest.mark.parametrize(("raw", "clean"), [
    ("AC/DC", "AC_DC"), ("a:b*c?d", "a_b_c_d"), ("trailing. . ", "trailing"),
    ("..", "_"), ("", "_"), ("CON", "_CON"), ("nul.txt", "_nul.txt"), ("tab\there", "tab_here"),
    ("e\u0301", "\u00e9"),
])
def test_sanitize(raw: str, clean: str) -> None:
    assert sanitize(raw) == clean


def test_default_template_single_and_multi_disc() -> None:
    template = "{albumartist}/{album}/{disc_track} - {title}"
    assert relative_path(template, meta(version="Remix"), ".flac") == \
        Path("Artist/Album/07 - Song (Remix).flac")
    assert relative_path(template, meta(disc=1, discs=2), ".flac") == \
        Path("Artist/Album/1-07 - Song.flac")


def test_long_names_are_cut_keeping_the_extension() -> None:
    path = relative_path("{title}", meta(title="é" * 400), ".flac")
    assert len(path.name.encode()) <= 255 and path.name.endswith(".flac")


def test_unknown_template_field_is_named() -> None:
    with pytest.raises(InvalidInput, match="bogus"):
        relative_path("{bogus}/{title}", meta(), ".flac")


@given(st.text(min_size=0, max_size=300), st.text(min_size=0, max_size=300))
def test_any_title_stays_inside_the_library(title: str, album: str) -> None:
    root = Path("/library")
    path = target_path(root, "{albumartist}/{album}/{disc_track} - {title}",
                       meta(title=title, album=album, artist=title[:50]), ".flac")
    assert path.is_relative_to(root) and len(path.relative_to(root).parts) == 3
    assert all(0 < len(p.encode()) <= 255 for p in path.parts[1:])
