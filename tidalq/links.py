"""What a user pastes: a TIDAL id with its type word, or a tidal.com / listen.tidal.com
link (with or without ``https://``). One parser for the CLI, the HTTP API and the page.
Pure, and light enough for the CLI's start-up."""

from __future__ import annotations

import re

from tidalq.errors import InvalidInput

KINDS = ("track", "album", "playlist", "mix", "artist")
LINK = re.compile(r"(?:https?://)?(?:www\.|listen\.)?tidal\.com/(?:browse/)?"
                  r"(?:album/\d+/)?(track|album|video|playlist|mix|artist)/([0-9A-Za-z-]+)",
                  re.IGNORECASE)


def parse(item: str, kind: str | None = None) -> tuple[str, int | str]:
    """(type, id) of one id or link; InvalidInput saying what is wrong otherwise."""
    match = LINK.match(item.strip())
    if match:
        linked = match.group(1).lower()
        if linked == "video":
            raise InvalidInput(f"{item}: videos are not supported", "link")
        if kind is not None and kind != linked:
            raise InvalidInput(f"{item} is a {linked} link, not a {kind}: drop the word "
                               f"{kind!r} or use `tidalq add {linked} …`", "link")
        return linked, _ref(linked, match.group(2), item)
    if kind is None:
        raise InvalidInput(f"{item}: say what it is (tidalq add track|album|playlist|mix|"
                           f"artist {item}), or paste a TIDAL link", "link")
    return kind, _ref(kind, item.strip(), item)


def _ref(kind: str, text: str, item: str) -> int | str:
    """The id as the job wants it: a number, a playlist's UUID or a mix's id."""
    if kind in ("playlist", "mix"):
        return text.lower() if kind == "playlist" else text
    if text.isascii() and text.isdigit() and 0 < int(text) < 2**53:
        return int(text)
    raise InvalidInput(f"{item!r} is neither a TIDAL {kind} id nor a TIDAL link", "link")
