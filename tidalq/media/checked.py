"""A FLAC file verified as it downloads: a decoder program (:mod:`tidalq.media.decoders`)
fetches the CDN's bytes, puts tidalq's tags ahead of the frames
(:class:`~tidalq.media.flachead.FlacHead`), writes the staging file and decodes the same
bytes at once. So the file is written once, the decode runs while the network is busy
instead of after it, what the decoder passed is, byte for byte, what is published, and the
bytes never pass through the daemon. A stream the decoder rejects stops the download there.

The program's verdict is turned back into the daemon's errors here: ``CdnExpired`` (the
caller asks for a fresh URL), ``UpstreamUnavailable``, ``ManifestError`` (an address the
rules refuse), ``IntegrityFailed``, and a full disk as the filesystem error it is.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

from tidalq import errors
from tidalq.media import decoders
from tidalq.media.cdn_body import CdnSettings
from tidalq.media.flac import StreamInfo
from tidalq.media.flachead import Block
from tidalq.media.verify import AudioFacts, facts_of_streaminfo

ProgressFn = Callable[[int, int | None], None]
# the errors a decoder program may name in its verdict (anything else is a broken decoder)
_NAMED: dict[str, type[errors.DownloadError]] = {
    cls.__name__: cls for cls in (errors.CdnExpired, errors.UpstreamUnavailable,
                                  errors.ManifestError, errors.IntegrityFailed)}


async def fetch_checked(url: str, staging: Path, tags: list[Block], cdn: CdnSettings,
                        progress: ProgressFn) -> tuple[AudioFacts, int]:
    """Download ``url`` to ``staging`` with ``tags`` ahead of its frames, decoded as it
    arrives: (its facts, the file's size) once the file passed and is on disk."""
    request = {"url": url, "path": str(staging), "cdn": _as_dict(cdn)}
    verdict = await decoders.exchange(request, _tag_bytes(tags), progress)
    if verdict.startswith("ok "):
        _, size, taken, info = verdict.split(" ", 3)
        progress(int(taken), int(taken))
        return facts_of_streaminfo(StreamInfo.unpack(bytes.fromhex(info))), int(size)
    raise _error_of(verdict.removeprefix("fail "), staging.name)


@functools.lru_cache(maxsize=8)
def _as_dict(cdn: CdnSettings) -> dict[str, object]:
    return dataclasses.asdict(cdn)


def _tag_bytes(tags: list[Block]) -> bytes:
    """Tag blocks as a decoder program reads them: a kind byte, a 4-byte length, the body."""
    return b"".join(bytes([kind]) + len(body).to_bytes(4, "big") + body for kind, body in tags)


def _error_of(said: str, name: str) -> errors.DownloadError:
    kind, _, rest = said.partition(" ")
    if kind == "decode":
        return errors.IntegrityFailed(f"{name} failed a full decode: {rest[:300]}")
    number, _, message = rest.partition(" ")
    if kind == "OSError":
        return errors.from_os_error(OSError(int(number) if number.isdigit() else 0, message))
    if kind in _NAMED:
        return _NAMED[kind](message)
    return errors.IntegrityFailed(f"{name} failed a full decode: {rest[:300]}")
