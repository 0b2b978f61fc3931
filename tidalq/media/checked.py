"""A FLAC file verified as it downloads: the CDN's bytes go through
:class:`~tidalq.media.flachead.FlacHead` (tidalq's tags ahead of the frames), and what comes
out is written to the staging file and fed to a decoder at once
(:class:`~tidalq.media.decoders.StreamDecode`). So the file is written once, the decode runs
while the network is busy instead of after it, and what the decoder passed is, byte for
byte, what is published. A stream the decoder rejects stops the download there.

It is a :class:`~tidalq.media.fetch.Sink`: the fetcher resumes a cut body from
:attr:`CheckedFlac.offset` and starts over with :meth:`CheckedFlac.restart`.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import BinaryIO

from tidalq.media.decoders import StreamDecode
from tidalq.media.flachead import Block, FlacHead
from tidalq.media.verify import AudioFacts, facts_of_streaminfo


class CheckedFlac:
    """Use as ``async with CheckedFlac(staging, blocks) as sink``; after the fetch,
    :meth:`finish` puts the file on disk and returns its facts once the decoder passed it."""

    def __init__(self, path: Path, tags: list[Block]) -> None:
        self.path = path
        self._head = FlacHead(tags)
        self._out: BinaryIO | None = None
        self._decoder = StreamDecode(path.name)

    async def __aenter__(self) -> CheckedFlac:
        await self._begin()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._decoder.kill()
        self._close()

    async def _begin(self) -> None:
        self._out = self.path.open("wb")
        await self._decoder.start()

    def _close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    @property
    def offset(self) -> int:
        return self._head.consumed

    async def write(self, chunk: bytes) -> None:
        pieces = self._head.feed(chunk)
        if pieces:
            assert self._out is not None
            for piece in pieces:
                self._out.write(piece)
            await self._decoder.feed(*pieces)

    async def restart(self, tags: list[Block] | None = None) -> None:
        """From the stream's first byte again (new tags when a fresh manifest changed
        them): the file is emptied, the decoder started anew."""
        self._decoder.kill()
        self._close()
        self._head.restart(tags)
        self._decoder = StreamDecode(self.path.name)
        await self._begin()

    async def finish(self) -> tuple[AudioFacts, int]:
        """The stream ended: (its facts, the file's size) once the file is on disk and
        the decoder passed every byte; IntegrityFailed otherwise."""
        info = self._head.finish()
        assert self._out is not None
        out, self._out = self._out, None
        await asyncio.to_thread(_sync_and_close, out)
        await self._decoder.finish()
        return facts_of_streaminfo(info), self.path.stat().st_size


def _sync_and_close(out: BinaryIO) -> None:
    try:
        out.flush()
        os.fsync(out.fileno())
    finally:
        out.close()
