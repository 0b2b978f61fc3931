"""A FLAC stream's metadata replaced as the stream arrives: tidalq's tags and cover go ahead
of the frames, so a track's file is written once, whole, and the bytes a decoder checks
while they download are the bytes published (:mod:`tidalq.media.checked`).

Of the stream's own blocks, those that describe its audio are kept (STREAMINFO, SEEKTABLE,
CUESHEET, APPLICATION; a seek table's offsets count from the first frame, which moves with
the header but keeps them true); its tags, pictures and padding are replaced by ours and a
padding block, so a later tag (a MusicBrainz id) fits without rewriting the file.
"""

from __future__ import annotations

from tidalq.errors import IntegrityFailed
from tidalq.media import flac

PADDING, VORBIS_COMMENT, PICTURE = 1, 4, 6
MAX_HEAD_BYTES = 16 << 20  # a stream's metadata (a big embedded picture) may take this much
PADDING_BYTES = 4096

Block = tuple[int, bytes]
Piece = bytes | memoryview


def _blocks_of(head: bytes | bytearray) -> tuple[list[Block], int] | None:
    """The metadata blocks at the start of ``head`` and where the frames start, or None
    while the last block has not arrived whole."""
    if head[:4] != flac.MAGIC[:len(head[:4])]:
        raise IntegrityFailed("the CDN's stream is not FLAC (no fLaC marker)")
    blocks: list[Block] = []
    pos = 4
    while pos + 4 <= len(head):
        last, kind = head[pos] & 0x80, head[pos] & 0x7F
        size = int.from_bytes(head[pos + 1:pos + 4], "big")
        if pos + 4 + size > len(head):
            return None
        blocks.append((kind, bytes(head[pos + 4:pos + 4 + size])))
        pos += 4 + size
        if last:
            if blocks[0][0] != flac.STREAMINFO:
                raise IntegrityFailed("the CDN's FLAC stream does not start with STREAMINFO")
            return blocks, pos
    return None


class FlacHead:
    """Feed it the stream's bytes in order; it gives back the file's bytes in order."""

    def __init__(self, ours: list[Block]) -> None:
        self._ours = ours
        self._pending = bytearray()
        self.consumed = 0  # bytes of the stream taken so far (where a resumed fetch goes on)
        self.info: flac.StreamInfo | None = None

    def restart(self, ours: list[Block] | None = None) -> None:
        """From the stream's first byte again (a fetch that could not resume)."""
        self._ours = ours if ours is not None else self._ours
        self._pending = bytearray()
        self.consumed = 0
        self.info = None

    def feed(self, chunk: bytes) -> list[Piece]:
        """The file's next bytes, in pieces (the header and the frames after it are not
        joined: a chunk is a quarter of a short track, copying it would cost)."""
        self.consumed += len(chunk)
        if self.info is not None:
            return [chunk]
        if self._pending:
            self._pending += chunk
        head: bytes | bytearray = self._pending or chunk
        found = _blocks_of(head)
        if found is None:
            if not self._pending:
                self._pending = bytearray(chunk)
            if len(self._pending) > MAX_HEAD_BYTES:
                raise IntegrityFailed("the CDN's FLAC metadata is implausibly large")
            return []
        blocks, frames_at = found
        try:
            self.info = flac.StreamInfo.unpack(blocks[0][1])
        except ValueError as exc:
            raise IntegrityFailed(f"the CDN's FLAC stream: {exc}") from exc
        self._pending = bytearray()
        return [self._head(blocks), memoryview(head)[frames_at:]]

    def _head(self, theirs: list[Block]) -> bytes:
        kept = [b for b in theirs if b[0] not in (PADDING, VORBIS_COMMENT, PICTURE)]
        blocks = [*kept, *self._ours, (PADDING, bytes(PADDING_BYTES))]
        return flac.MAGIC + b"".join(flac.metadata_block(kind, body, n == len(blocks) - 1)
                                     for n, (kind, body) in enumerate(blocks))

    def finish(self) -> flac.StreamInfo:
        """The stream's STREAMINFO once it ended; IntegrityFailed if it ended in its header."""
        if self.info is None:
            raise IntegrityFailed("the CDN's stream ended inside its FLAC header")
        return self.info
