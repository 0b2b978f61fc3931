"""FLAC-in-MP4 (DASH) to native FLAC, in pure Python and streaming.

The init segment's ``fLaC`` sample entry carries a ``dfLa`` box holding the FLAC metadata
blocks; every MP4 sample of the media segments is one FLAC frame. We write ``fLaC`` + the
metadata blocks + the frames, then patch STREAMINFO: packagers write it before they know
the length (0 samples), and a timeline may over-claim the last segment, so the sample
count is taken from the frame headers themselves.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from tidalq.errors import IntegrityFailed
from tidalq.media import flac


def iter_boxes(data: bytes | memoryview, start: int = 0,
               end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each box between start and end."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                raise IntegrityFailed("truncated MP4 box header")
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise IntegrityFailed(f"MP4 box {kind!r} overruns its container")
        yield kind, pos + header, pos + size
        pos += size


def find_box(data: bytes | memoryview, path: list[bytes], start: int = 0,
             end: int | None = None) -> tuple[int, int] | None:
    for kind, lo, hi in iter_boxes(data, start, end):
        if kind == path[0]:
            return (lo, hi) if len(path) == 1 else find_box(data, path[1:], lo, hi)
    return None


def dfla_metadata(init: bytes) -> list[tuple[int, bytes]]:
    """The FLAC metadata blocks from an init segment's ``dfLa`` box."""
    stsd = find_box(init, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"])
    if stsd is None:
        raise IntegrityFailed("init segment has no sample description")
    entries_start = stsd[0] + 8  # version/flags + entry count
    entry = find_box(init, [b"fLaC"], entries_start, stsd[1])
    if entry is None:
        raise IntegrityFailed("init segment does not describe FLAC audio")
    dfla = find_box(init, [b"dfLa"], entry[0] + 28, entry[1])  # after AudioSampleEntry
    if dfla is None:
        raise IntegrityFailed("FLAC sample entry has no dfLa box")
    try:
        blocks = flac.split_metadata(init[dfla[0] + 4:dfla[1]])
    except ValueError as exc:
        raise IntegrityFailed(str(exc)) from exc
    if not blocks or blocks[0][0] != flac.STREAMINFO:
        raise IntegrityFailed("dfLa does not start with STREAMINFO")
    return blocks


def _trun_sizes(data: bytes, lo: int, hi: int, default_size: int
                ) -> tuple[list[int], int | None]:
    """Sample sizes of one ``trun`` box. Every count is bounded by the bytes that could
    hold it: a box claiming four billion samples is refused before any list is built."""
    if hi - lo < 8:
        raise IntegrityFailed("truncated trun box")
    flags = struct.unpack_from(">I", data, lo)[0] & 0xFFFFFF
    count = struct.unpack_from(">I", data, lo + 4)[0]
    pos = lo + 8
    offset = None
    if flags & 0x1:
        offset = struct.unpack_from(">i", data, pos)[0]
        pos += 4
    if flags & 0x4:
        pos += 4
    per_sample = [f for f in (0x100, 0x200, 0x400, 0x800) if flags & f]
    if pos + count * 4 * len(per_sample) > hi:
        raise IntegrityFailed(f"trun claims {count} samples, more than its box holds")
    if 0x200 not in per_sample and count * max(default_size, 1) > len(data):
        raise IntegrityFailed(f"trun claims {count} samples, more than the segment holds")
    sizes = []
    for _ in range(count):
        size = default_size
        for field in per_sample:
            if field == 0x200:
                size = struct.unpack_from(">I", data, pos)[0]
            pos += 4
        sizes.append(size)
    return sizes, offset


def segment_frames(data: bytes) -> Iterator[bytes]:
    """FLAC frames of a media segment, in order (one or more moof+mdat pairs)."""
    pending: list[tuple[int, list[int], int | None]] = []
    for kind, lo, hi in iter_boxes(data):
        if kind == b"moof":
            pending.append((lo - 8, *_moof_samples(data, lo, hi)))
        elif kind == b"mdat":
            for moof_start, sizes, offset in pending:
                pos = moof_start + offset if offset is not None else lo
                for size in sizes:
                    if pos + size > hi:
                        raise IntegrityFailed("MP4 sample runs past its mdat")
                    yield data[pos:pos + size]
                    pos += size
            pending = []


def _moof_samples(data: bytes, lo: int, hi: int) -> tuple[list[int], int | None]:
    traf = find_box(data, [b"traf"], lo, hi)
    if traf is None:
        raise IntegrityFailed("moof without traf")
    default_size = 0
    tfhd = find_box(data, [b"tfhd"], *traf)
    if tfhd is not None:
        flags = struct.unpack_from(">I", data, tfhd[0])[0] & 0xFFFFFF
        pos = tfhd[0] + 8 + (8 if flags & 0x1 else 0) + (4 if flags & 0x2 else 0) \
            + (4 if flags & 0x8 else 0)
        if flags & 0x10:
            default_size = struct.unpack_from(">I", data, pos)[0]
    trun = find_box(data, [b"trun"], *traf)
    if trun is None:
        raise IntegrityFailed("traf without trun")
    return _trun_sizes(data, trun[0], trun[1], default_size)


class FlacRemuxer:
    """Writes native FLAC to ``out`` from an init segment and media segments in order."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._info: flac.StreamInfo | None = None
        self._info_offset = 0
        self.samples = 0
        self.frames = 0
        self._min_frame = 1 << 24
        self._max_frame = 0

    def feed_init(self, init: bytes) -> None:
        blocks = dfla_metadata(init)
        self._info = flac.StreamInfo.unpack(blocks[0][1])
        self._out.write(flac.MAGIC)
        for index, (kind, body) in enumerate(blocks):
            if kind == flac.STREAMINFO:
                self._info_offset = self._out.tell() + 4
            self._out.write(flac.metadata_block(kind, body, index == len(blocks) - 1))

    def feed_segment(self, segment: bytes) -> None:
        if self._info is None:
            raise IntegrityFailed("media segment before the init segment")
        for frame in segment_frames(segment):
            try:
                self.samples += flac.frame_block_size(frame)
            except ValueError as exc:
                raise IntegrityFailed(f"bad FLAC frame in segment: {exc}") from exc
            self.frames += 1
            self._min_frame = min(self._min_frame, len(frame))
            self._max_frame = max(self._max_frame, len(frame))
            self._out.write(frame)

    def finish(self) -> flac.StreamInfo:
        """Patch STREAMINFO with the counted samples and frame sizes."""
        if self._info is None or self.frames == 0:
            raise IntegrityFailed("no FLAC frames were found in the stream")
        info = flac.StreamInfo(self._info.min_block, self._info.max_block, self._min_frame,
                               self._max_frame, self._info.sample_rate, self._info.channels,
                               self._info.bits_per_sample, self.samples, self._info.md5)
        end = self._out.tell()
        self._out.seek(self._info_offset)
        self._out.write(info.pack())
        self._out.seek(end)
        return info
