"""The decoder programs a FLAC stream goes through as it downloads
(:mod:`tidalq.media.decoders`): real processes, fed streams made by the real ``flac`` and
then broken in the ways a CDN or a crafted file can break them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.test_checked_download import metadata_and_frames
from tidalq.errors import IntegrityFailed
from tidalq.media.decoders import Decoders, StreamDecode
from tidalq.media.flachead import FlacHead

CHUNK = 64 * 1024


def a_flac(tmp_path: Path, seconds: float = 2.0) -> bytes:
    """A real FLAC file of noise (so its frames are big): its length and MD5 in STREAMINFO,
    as a CDN's files have them (an encoder writing to a pipe cannot go back for them)."""
    pcm = os.urandom(int(44100 * seconds) * 4)
    out = tmp_path / "noise.flac"
    subprocess.run(["flac", "-s", "--force-raw-format", "--endian=little", "--sign=signed",
                    "--channels=2", "--bps=16", "--sample-rate=44100", "-", "-o", str(out)],
                   input=pcm, check=True)
    return out.read_bytes()


def with_streaminfo(data: bytes, extra_samples: int = 0, md5: bytes | None = None) -> bytes:
    """``data`` with its STREAMINFO's sample count raised and its MD5 replaced."""
    out = bytearray(data)
    packed = int.from_bytes(out[18:26], "big")  # rate, channels, depth, 36-bit sample count
    samples = packed & ((1 << 36) - 1)
    out[18:26] = ((packed & ~((1 << 36) - 1)) | (samples + extra_samples)).to_bytes(8, "big")
    if md5 is not None:
        out[26:42] = md5
    return bytes(out)


async def decode(decoders: Decoders, data: bytes) -> int:
    """Feed ``data`` through a decoder taken from ``decoders``; returns its pid."""
    stream = StreamDecode("t.flac", decoders)
    await stream.start()
    assert stream._process is not None
    pid = stream._process.proc.pid
    try:
        for at in range(0, len(data), CHUNK):
            await stream.feed(data[at:at + CHUNK])
        await stream.finish()
    finally:
        stream.kill()
    return pid


async def test_a_decoder_takes_stream_after_stream_and_a_broken_one_costs_it(
        tmp_path: Path) -> None:
    decoders = Decoders()
    good = a_flac(tmp_path)
    try:
        first = await decode(decoders, good)
        assert await decode(decoders, good) == first  # the same program, the next stream

        broken = bytearray(good)
        broken[len(broken) // 2] ^= 0xFF
        with pytest.raises(IntegrityFailed, match=r"t.flac failed a full decode: .*(CRC|sync)"):
            await decode(decoders, bytes(broken))
        assert await decode(decoders, good) != first  # that program was dropped
    finally:
        decoders.close()


@pytest.mark.parametrize(("change", "why"), [
    (lambda d: d, None),
    (lambda d: with_streaminfo(d, md5=bytes(16)), None),  # an unset MD5 is no fault
    (lambda d: with_streaminfo(d, md5=b"\x01" * 16), "MD5 signature mismatch"),
    # frames missing at the end, MD5 unset: only the sample count shows it
    (lambda d: with_streaminfo(d, extra_samples=4096, md5=bytes(16)),
     "samples decoded of the"),
    (lambda d: d[:len(d) // 2], "MD5 signature mismatch|samples decoded"),  # cut short
    (lambda d: b"ID3 and then nothing like FLAC" * 100, "."),
    (lambda d: b"", "an empty stream"),
])
async def test_what_the_decoder_finds(change: Callable[[bytes], bytes], why: str | None,
                                      tmp_path: Path) -> None:
    decoders = Decoders()
    data = change(a_flac(tmp_path))
    try:
        if why is None:
            await decode(decoders, data)
        else:
            with pytest.raises(IntegrityFailed, match=why):
                await decode(decoders, data)
    finally:
        decoders.close()


@pytest.mark.parametrize("chunk", [7, 4096, 1 << 20])
def test_the_header_is_replaced_however_the_stream_is_cut(chunk: int, tmp_path: Path) -> None:
    """The CDN's bytes come in chunks of any size; the file is the same bytes each time:
    our tags ahead of the CDN's frames, unchanged."""
    data = a_flac(tmp_path)
    head = FlacHead([(4, b"\x00" * 8 + b"\x00\x00\x00\x00")])  # an empty Vorbis comment
    out = b"".join(bytes(piece) for at in range(0, len(data), chunk)
                   for piece in head.feed(data[at:at + chunk]))
    assert head.finish().total_samples == 88200 and head.consumed == len(data)
    blocks, frames = metadata_and_frames(out)
    assert blocks == ["STREAMINFO", "VORBIS_COMMENT", "PADDING"]  # the encoder's tags gone
    assert frames == metadata_and_frames(data)[1]
    path = tmp_path / "out.flac"
    path.write_bytes(out)
    subprocess.run(["flac", "-t", "-s", str(path)], check=True)
