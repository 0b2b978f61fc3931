"""A FLAC file verified as it downloads: a decoder program (:mod:`tidalq.media.decoders`)
fetches the CDN's bytes, puts tidalq's tags ahead of the frames
(:class:`~tidalq.media.flachead.FlacHead`), writes the staging file and decodes the same
bytes at once. So the file is written once, the decode runs while the network is busy
instead of after it, what the decoder passed is, byte for byte, what is published, and the
bytes never pass through the daemon. A stream the decoder rejects stops the download there.

The program's verdict is turned back into the daemon's errors by
:func:`tidalq.media.decoders.error_of`: ``CdnExpired`` (the caller asks for a fresh URL),
``UpstreamUnavailable``, ``ManifestError`` (an address the rules refuse),
``IntegrityFailed``, and a full disk as the filesystem error it is.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

from tidalq.media import decoders
from tidalq.media.cdn_body import CdnSettings
from tidalq.media.decoder_program import pack_tags
from tidalq.media.flac import StreamInfo
from tidalq.media.flachead import Block
from tidalq.media.verify import AudioFacts, facts_of_streaminfo

ProgressFn = Callable[[int, int | None], None]


async def fetch_checked(url: str, staging: Path, tags: list[Block], cdn: CdnSettings,
                        progress: ProgressFn) -> tuple[AudioFacts, int]:
    """Download ``url`` to ``staging`` with ``tags`` ahead of its frames, decoded as it
    arrives: (its facts, the file's size) once the file passed and is on disk."""
    request = {"url": url, "path": str(staging), "cdn": _as_dict(cdn)}
    verdict = await decoders.exchange(request, pack_tags(tags), progress)
    if verdict.startswith("ok "):
        _, size, taken, info = verdict.split(" ", 3)
        progress(int(taken), int(taken))
        return facts_of_streaminfo(StreamInfo.unpack(bytes.fromhex(info))), int(size)
    raise decoders.error_of(verdict, staging.name)


@functools.lru_cache(maxsize=8)
def _as_dict(cdn: CdnSettings) -> dict[str, object]:
    return dataclasses.asdict(cdn)
