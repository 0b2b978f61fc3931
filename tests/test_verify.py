"""Verification refuses broken FLAC files (a flipped byte, a wrong MD5, a stream cut at a
frame boundary with no MD5 to give it away, garbage), decoded by tidalq's decoder programs
(libFLAC); decoders are killed when their job is cancelled or their time is up, those
programs and, on a machine without libFLAC, ``flac -t``."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import await_until, decoder_ended, slow_decoder, started_pid
from tidalq.errors import IntegrityFailed
from tidalq.media import decoders, flac, verify
from tidalq.testing import media

STREAM = media.FlacStream.for_duration(media.CD, 3, 11)


def write(path: Path, info: flac.StreamInfo, frames: list[bytes]) -> Path:
    path.write_bytes(flac.MAGIC + flac.metadata_block(flac.STREAMINFO, info.pack(), True)
                     + b"".join(frames))
    return path


def good(path: Path) -> Path:
    return write(path, STREAM.streaminfo(), list(STREAM.frames()))


def flipped_byte(path: Path) -> Path:
    good(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    return path


def wrong_md5(path: Path) -> Path:
    info = dataclasses.replace(STREAM.streaminfo(), md5=bytes(range(16)))
    return write(path, info, list(STREAM.frames()))


def cut_at_a_frame_without_md5(path: Path) -> Path:
    info = dataclasses.replace(STREAM.streaminfo(), md5=bytes(16))
    return write(path, info, list(STREAM.frames())[:-3])


def garbage_after_the_header(path: Path) -> Path:
    return write(path, STREAM.streaminfo(), [os.urandom(50_000)])


BROKEN: list[Callable[[Path], Path]] = [flipped_byte, wrong_md5, cut_at_a_frame_without_md5,
                                        garbage_after_the_header]


def flac_t_passes(path: Path) -> bool:
    return subprocess.run(["flac", "-t", "-s", str(path)], capture_output=True).returncode == 0


async def test_the_good_file_passes(tmp_path: Path) -> None:
    path = good(tmp_path / "good.flac")
    assert flac_t_passes(path)
    assert (await verify.verify(path, STREAM.duration_s)).md5 == STREAM.md5()


@pytest.mark.parametrize("make", BROKEN, ids=lambda f: f.__name__)
async def test_verify_refuses_a_broken_file(tmp_path: Path, make: Callable[[Path], Path]
                                            ) -> None:
    path = make(tmp_path / "broken.flac")
    assert not flac_t_passes(path)
    with pytest.raises(IntegrityFailed, match=r"broken\.flac failed a full decode"):
        await verify.verify(path, 0)


async def test_a_decoder_past_its_time_is_killed_and_the_file_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify.decoders, "available", lambda: False)  # no libFLAC: flac -t
    pid_file = slow_decoder(tmp_path, "flac", monkeypatch)
    monkeypatch.setattr(verify, "DECODE_TIMEOUT_S", 1.0)
    with pytest.raises(IntegrityFailed, match="no end after"):
        await verify.verify(good(tmp_path / "good.flac"), STREAM.duration_s)
    await decoder_ended(await started_pid(pid_file))


async def test_a_cancelled_verification_kills_its_decoder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify.decoders, "available", lambda: False)  # no libFLAC: flac -t
    pid_file = slow_decoder(tmp_path, "flac", monkeypatch)
    task = asyncio.create_task(verify.verify(good(tmp_path / "good.flac"), STREAM.duration_s))
    pid = await started_pid(pid_file)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await decoder_ended(pid)


async def test_a_cancelled_verification_kills_its_decoder_program(tmp_path: Path) -> None:
    """Where libFLAC is installed a finished file is decoded by a decoder program that
    outlives a track; a cancelled check kills the one it took."""
    await verify.verify(good(tmp_path / "good.flac"), STREAM.duration_s)  # one is kept
    [kept] = decoders.of_this_loop()._idle
    os.kill(kept.proc.pid, signal.SIGSTOP)  # it will take the next file and not answer
    task = asyncio.create_task(verify.verify(good(tmp_path / "next.flac"), STREAM.duration_s))

    async def taken() -> bool:
        return not decoders.of_this_loop()._idle

    await await_until(taken, 10, "the decoder to be taken")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await decoder_ended(kept.proc.pid)
