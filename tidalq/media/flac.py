"""FLAC structures, pure: CRCs, STREAMINFO, metadata blocks and frame headers.

Enough of the format (https://xiph.org/flac/format.html) to remux FLAC out of MP4 without
external programs, count samples from frame headers, and (in the fake upstream) write
valid verbatim-coded FLAC.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"fLaC"
STREAMINFO = 0


def _table(poly: int, width: int) -> list[int]:
    top, mask = 1 << (width - 1), (1 << width) - 1
    table = []
    for byte in range(256):
        crc = byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) if crc & top else (crc << 1)
        table.append(crc & mask)
    return table


_CRC8 = _table(0x07, 8)
_CRC16 = _table(0x8005, 16)


def crc8(data: bytes, crc: int = 0) -> int:
    for b in data:
        crc = _CRC8[crc ^ b]
    return crc


def crc16(data: bytes, crc: int = 0) -> int:
    table = _CRC16
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ b]
    return crc


@dataclass(frozen=True)
class StreamInfo:
    min_block: int
    max_block: int
    min_frame: int
    max_frame: int
    sample_rate: int
    channels: int
    bits_per_sample: int
    total_samples: int
    md5: bytes

    def pack(self) -> bytes:
        bits = (self.sample_rate << 44) | ((self.channels - 1) << 41) \
            | ((self.bits_per_sample - 1) << 36) | self.total_samples
        return (struct.pack(">HH", self.min_block, self.max_block)
                + self.min_frame.to_bytes(3, "big") + self.max_frame.to_bytes(3, "big")
                + bits.to_bytes(8, "big") + self.md5)

    @classmethod
    def unpack(cls, data: bytes) -> StreamInfo:
        if len(data) < 34:
            raise ValueError("STREAMINFO is shorter than 34 bytes")
        min_block, max_block = struct.unpack(">HH", data[:4])
        bits = int.from_bytes(data[10:18], "big")
        return cls(min_block, max_block, int.from_bytes(data[4:7], "big"),
                   int.from_bytes(data[7:10], "big"), bits >> 44, ((bits >> 41) & 7) + 1,
                   ((bits >> 36) & 31) + 1, bits & ((1 << 36) - 1), bytes(data[18:34]))


def metadata_block(kind: int, body: bytes, last: bool) -> bytes:
    return bytes([(0x80 if last else 0) | kind]) + len(body).to_bytes(3, "big") + body


def split_metadata(data: bytes) -> list[tuple[int, bytes]]:
    """Metadata blocks (type, body) from their concatenation, as in a ``dfLa`` box."""
    blocks, pos = [], 0
    while pos + 4 <= len(data):
        head = data[pos]
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        body = data[pos + 4:pos + 4 + size]
        if len(body) != size:
            raise ValueError("truncated FLAC metadata block")
        blocks.append((head & 0x7F, body))
        pos += 4 + size
        if head & 0x80:
            break
    return blocks


_BLOCK_SIZES = {1: 192, 2: 576, 3: 1152, 4: 2304, 5: 4608,
                **{c: 256 << (c - 8) for c in range(8, 16)}}
SAMPLE_RATE_CODES = {88200: 1, 176400: 2, 192000: 3, 8000: 4, 16000: 5, 22050: 6, 24000: 7,
                     32000: 8, 44100: 9, 48000: 10, 96000: 11}
SAMPLE_SIZE_CODES = {8: 1, 12: 2, 16: 4, 20: 5, 24: 6}


def frame_block_size(frame: bytes) -> int:
    """Samples per channel in one frame, read from its header."""
    if len(frame) < 5 or frame[0] != 0xFF or frame[1] & 0xFE != 0xF8:
        raise ValueError("not a FLAC frame (bad sync code)")
    code = frame[2] >> 4
    if code in _BLOCK_SIZES:
        return _BLOCK_SIZES[code]
    if code not in (6, 7):
        raise ValueError(f"reserved FLAC block size code {code}")
    lead = frame[4]
    extra = 0
    while lead & 0x80:
        extra += 1
        lead <<= 1
    pos = 5 + max(0, extra - 1)
    if code == 6:
        return frame[pos] + 1
    return int.from_bytes(frame[pos:pos + 2], "big") + 1


def utf8_number(n: int) -> bytes:
    """FLAC's UTF-8-like coding of frame numbers."""
    if n < 0x80:
        return bytes([n])
    limits = ((2, 1 << 11), (3, 1 << 16), (4, 1 << 21), (5, 1 << 26), (6, 1 << 31), (7, 1 << 36))
    nbytes = next(size for size, limit in limits if n < limit)
    tail = []
    for _ in range(nbytes - 1):
        tail.append(0x80 | (n & 0x3F))
        n >>= 6
    first = ((0xFF << (8 - nbytes)) & 0xFF) | n
    return bytes([first, *reversed(tail)])
