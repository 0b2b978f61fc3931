"""Real media for the fake upstream, made deterministically from code.

- FLAC: verbatim-coded frames of a tone, with a correct STREAMINFO (sample count, frame
  sizes, MD5), which ``flac -t`` accepts. The frames after the first share one body, so a
  40 MB file costs a few milliseconds: only headers and CRCs differ (the CRC-16 of a shared
  body from any start state is affine in that state, so it is precomputed once).
- DASH: the same frames packed as fragmented MP4 (``ftyp``/``moov`` with a ``fLaC`` sample
  entry and its ``dfLa`` box; ``moof``/``mdat`` media segments), as TIDAL's packager does,
  including its habits: STREAMINFO with 0 samples and no MD5 in ``dfLa``.
- AAC in MP4 and the cover JPEG are small committed fixtures made with ffmpeg.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tidalq.media import flac

BLOCK = 4096


@dataclass(frozen=True)
class AudioFormat:
    sample_rate: int = 44100
    bits: int = 16
    channels: int = 2

    @property
    def bytes_per_frame_body(self) -> int:
        return self.channels * (1 + BLOCK * self.bits // 8)


CD = AudioFormat(44100, 16)
HI_RES = AudioFormat(96000, 24)


def _tone(fmt: AudioFormat, cycles: int, salt: int) -> list[list[int]]:
    """One block per channel: a tone with whole cycles per block (no clicks between frames);
    ``salt`` (non-zero only in the first frame) makes each track's audio distinct."""
    peak = (1 << (fmt.bits - 1)) - 1
    left = [int(0.3 * peak * math.sin(2 * math.pi * cycles * i / BLOCK)) for i in range(BLOCK)]
    right = [-s for s in left]
    left[0] = salt % peak
    return [left, right]


def _body(fmt: AudioFormat, chans: list[list[int]]) -> bytes:
    width = fmt.bits // 8
    out = bytearray()
    for samples in chans:
        out.append(0x02)  # subframe header: VERBATIM, no wasted bits
        for s in samples:
            out += s.to_bytes(width, "big", signed=True)
    return bytes(out)


def _pcm(fmt: AudioFormat, chans: list[list[int]]) -> bytes:
    width = fmt.bits // 8
    return b"".join(s.to_bytes(width, "little", signed=True)
                    for frame in zip(*chans, strict=True) for s in frame)


@functools.lru_cache(maxsize=16)
def _shared(fmt: AudioFormat, cycles: int) -> tuple[bytes, bytes, int, tuple[int, ...]]:
    """(body, pcm, crc16 of body from 0, crc16 contribution of each start-state bit)."""
    chans = _tone(fmt, cycles, 0)
    body = _body(fmt, chans)
    base = flac.crc16(body)
    basis = tuple(flac.crc16(body, 1 << i) ^ base for i in range(16))
    return body, _pcm(fmt, chans), base, basis


class FlacStream:
    """A deterministic FLAC stream of ``n_frames`` frames of 4096 samples."""

    def __init__(self, fmt: AudioFormat, n_frames: int, seed: int) -> None:
        self.fmt = fmt
        self.n_frames = max(1, n_frames)
        self.cycles = 16 + seed % 16
        self.seed = seed

    @functools.cached_property
    def _first(self) -> list[list[int]]:
        """Made on first use: describing a stream (its length) must stay cheap."""
        return _tone(self.fmt, self.cycles, self.seed + 1)

    @property
    def _first_body(self) -> bytes:
        return _body(self.fmt, self._first)

    @property
    def _first_pcm(self) -> bytes:
        return _pcm(self.fmt, self._first)

    @classmethod
    def for_duration(cls, fmt: AudioFormat, seconds: float, seed: int) -> FlacStream:
        return cls(fmt, math.ceil(seconds * fmt.sample_rate / BLOCK), seed)

    @classmethod
    def for_size(cls, fmt: AudioFormat, size_bytes: int, seed: int) -> FlacStream:
        return cls(fmt, size_bytes // (fmt.bytes_per_frame_body + 12), seed)

    @property
    def total_samples(self) -> int:
        return self.n_frames * BLOCK

    @property
    def duration_s(self) -> float:
        return self.total_samples / self.fmt.sample_rate

    def _header(self, number: int) -> bytes:
        head = bytes([0xFF, 0xF8, (12 << 4) | flac.SAMPLE_RATE_CODES[self.fmt.sample_rate],
                      (1 << 4) | (flac.SAMPLE_SIZE_CODES[self.fmt.bits] << 1)])
        head += flac.utf8_number(number)
        return head + bytes([flac.crc8(head)])

    def frames(self) -> Iterator[bytes]:
        body, _, base, basis = _shared(self.fmt, self.cycles)
        for number in range(self.n_frames):
            head = self._header(number)
            if number == 0:
                crc = flac.crc16(head + self._first_body)
                yield head + self._first_body + crc.to_bytes(2, "big")
                continue
            state, crc = flac.crc16(head), base
            for bit in range(16):
                if state >> bit & 1:
                    crc ^= basis[bit]
            yield head + body + crc.to_bytes(2, "big")

    def md5(self) -> bytes:
        _, pcm, _, _ = _shared(self.fmt, self.cycles)
        digest = hashlib.md5(self._first_pcm)
        for _ in range(self.n_frames - 1):
            digest.update(pcm)
        return digest.digest()

    def streaminfo(self, honest: bool = True) -> flac.StreamInfo:
        """``honest=False`` is what DASH packagers write: no length, no MD5."""
        body_len = self.fmt.bytes_per_frame_body + 2
        return flac.StreamInfo(BLOCK, BLOCK, body_len + 6, body_len + 12, self.fmt.sample_rate,
                               self.fmt.channels, self.fmt.bits,
                               self.total_samples if honest else 0,
                               self.md5() if honest else bytes(16))

    def write_flac(self, path: Path) -> int:
        with path.open("wb") as out:
            out.write(flac.MAGIC + flac.metadata_block(flac.STREAMINFO,
                                                        self.streaminfo().pack(), True))
            for frame in self.frames():
                out.write(frame)
            return out.tell()


# -- fragmented MP4 -----------------------------------------------------------------------

def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def init_segment(stream: FlacStream) -> bytes:
    fmt = stream.fmt
    dfla = full_box(b"dfLa", 0, 0, flac.metadata_block(
        flac.STREAMINFO, stream.streaminfo(honest=False).pack(), True))
    rate_field = fmt.sample_rate << 16 if fmt.sample_rate < 65536 else 0
    entry = box(b"fLaC", bytes(6), struct.pack(">H", 1), bytes(8),
                struct.pack(">HHHHI", fmt.channels, fmt.bits, 0, 0, rate_field), dfla)
    stbl = box(b"stbl", full_box(b"stsd", 0, 0, struct.pack(">I", 1), entry),
               full_box(b"stts", 0, 0, bytes(4)), full_box(b"stsc", 0, 0, bytes(4)),
               full_box(b"stsz", 0, 0, bytes(8)), full_box(b"stco", 0, 0, bytes(4)))
    minf = box(b"minf", full_box(b"smhd", 0, 0, bytes(4)),
               box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1),
                                     full_box(b"url ", 0, 1))), stbl)
    mdia = box(b"mdia",
               full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, fmt.sample_rate, 0,
                                                   0x55C4, 0)),
               full_box(b"hdlr", 0, 0, bytes(4), b"soun", bytes(12), b"SoundHandler\x00"),
               minf)
    tkhd = full_box(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, 1, 0, 0), bytes(8),
                    struct.pack(">HHHH", 0, 0, 0x0100, 0), _MATRIX, bytes(8))
    mvhd = full_box(b"mvhd", 0, 0, struct.pack(">IIIIIH", 0, 0, 1000, 0, 0x10000, 0x0100),
                    bytes(10), _MATRIX, bytes(24), struct.pack(">I", 2))
    mvex = box(b"mvex", full_box(b"trex", 0, 0, struct.pack(">IIIII", 1, 1, 0, 0, 0)))
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6mp41dash")
    return ftyp + box(b"moov", mvhd, box(b"trak", tkhd, mdia), mvex)


def media_segment(number: int, base_time: int, frames: list[bytes]) -> bytes:
    sizes = b"".join(struct.pack(">I", len(f)) for f in frames)

    def moof(offset: int) -> bytes:
        tfhd = full_box(b"tfhd", 0, 0x020008, struct.pack(">II", 1, BLOCK))
        tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", base_time))
        trun = full_box(b"trun", 0, 0x000201, struct.pack(">Ii", len(frames), offset), sizes)
        return box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", number)),
                   box(b"traf", tfhd, tfdt, trun))

    head = moof(0)
    head = moof(len(head) + 8)
    return head + box(b"mdat", *frames)


@dataclass(frozen=True)
class DashLayout:
    """How a stream is cut into segments, and the MPD describing it."""

    frames_per_segment: int
    segments: int


def write_dash(stream: FlacStream, directory: Path, frames_per_segment: int = 48) -> DashLayout:
    """Write ``init.mp4`` and ``seg-N.mp4`` (N from 1) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "init.mp4").write_bytes(init_segment(stream))
    batch: list[bytes] = []
    number = 0
    for frame in stream.frames():
        batch.append(frame)
        if len(batch) == frames_per_segment:
            number += 1
            base = (number - 1) * frames_per_segment * BLOCK
            (directory / f"seg-{number}.mp4").write_bytes(media_segment(number, base, batch))
            batch = []
    if batch:
        number += 1
        base = (number - 1) * frames_per_segment * BLOCK
        (directory / f"seg-{number}.mp4").write_bytes(media_segment(number, base, batch))
    return DashLayout(frames_per_segment, number)


def mpd(stream: FlacStream, layout: DashLayout, base_url: str, query: str) -> str:
    """An MPD like TIDAL's: a SegmentTimeline whose last entry over-claims its duration."""
    seg_d = layout.frames_per_segment * BLOCK
    last_d = stream.total_samples - seg_d * (layout.segments - 1) + BLOCK // 2
    timeline = f'<S d="{seg_d}" r="{layout.segments - 2}"/>' if layout.segments > 1 else ""
    timeline += f'<S d="{last_d}"/>'
    secs = stream.duration_s
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"'
        ' profiles="urn:mpeg:dash:profile:isoff-main:2011"'
        f' type="static" mediaPresentationDuration="PT{secs:.3f}S" minBufferTime="PT3.993S">'
        f'<Period id="0"><BaseURL>{base_url}</BaseURL>'
        '<AdaptationSet id="0" contentType="audio" mimeType="audio/mp4" segmentAlignment="true">'
        f'<Representation id="FLAC,{stream.fmt.sample_rate},{stream.fmt.bits}" codecs="flac"'
        f' bandwidth="{int(stream.fmt.sample_rate * stream.fmt.bits * 2)}"'
        f' audioSamplingRate="{stream.fmt.sample_rate}">'
        f'<SegmentTemplate timescale="{stream.fmt.sample_rate}"'
        f' initialization="init.mp4?{query}" media="seg-$Number$.mp4?{query}" startNumber="1">'
        f'<SegmentTimeline>{timeline}</SegmentTimeline></SegmentTemplate>'
        '</Representation></AdaptationSet></Period></MPD>'
    )


def fixture(name: str) -> bytes:
    """A committed fixture: ``track.m4a`` (4 s AAC) or ``cover.jpg`` (1280x1280)."""
    return resources.files("tidalq.testing").joinpath("data", name).read_bytes()


AAC_DURATION_S = 4.0
