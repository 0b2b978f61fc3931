"""Verification before publishing: nothing unverified reaches the library.

Checks, in order: the container parses (mutagen), the codec matches the extension, the
duration is within tolerance of the API's, and — when the programs are on PATH — a full
decode (``flac -t`` for FLAC, ``ffmpeg -v error -f null`` otherwise).
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

from mutagen import MutagenError
from mutagen.flac import FLAC
from mutagen.mp4 import MP4

from tidalq.errors import IntegrityFailed

DECODE_TIMEOUT_S = 600


@dataclass(frozen=True)
class AudioFacts:
    codec: str
    duration_s: float
    sample_rate: int
    bit_depth: int | None
    md5: bytes | None


def available_checks() -> list[str]:
    """What this machine can verify beyond parsing (said at daemon start-up)."""
    checks = ["container", "codec", "duration"]
    if shutil.which("flac"):
        checks.append("flac -t")
    if shutil.which("ffmpeg"):
        checks.append("ffmpeg decode")
    return checks


def probe(path: Path) -> AudioFacts:
    try:
        return facts_of(FLAC(path) if path.suffix == ".flac" else MP4(path))
    except (MutagenError, OSError, ValueError) as exc:
        raise IntegrityFailed(f"{path.name} does not parse as audio: {exc}") from exc


def facts_of(audio: FLAC | MP4) -> AudioFacts:
    """What a parsed file says of its stream."""
    if isinstance(audio, FLAC):
        info = audio.info
        md5 = info.md5_signature.to_bytes(16, "big") if info.md5_signature else None
        return AudioFacts("flac", float(info.length), int(info.sample_rate),
                          int(info.bits_per_sample), md5)
    mp4 = audio.info
    return AudioFacts(str(mp4.codec), float(mp4.length), int(mp4.sample_rate),
                      int(getattr(mp4, "bits_per_sample", 0)) or None, None)


def can_decode(path: Path) -> bool:
    """Whether a full decode of ``path`` is possible here (flac or ffmpeg on PATH)."""
    return bool(path.suffix == ".flac" and shutil.which("flac")) or bool(shutil.which("ffmpeg"))


def duration_ok(actual_s: float, expected_s: float) -> bool:
    return expected_s <= 0 or abs(actual_s - expected_s) <= max(2.0, expected_s * 0.02)


async def _decode(path: Path) -> None:
    if path.suffix == ".flac" and shutil.which("flac"):
        args = ["flac", "-t", "-s", str(path)]
    elif shutil.which("ffmpeg"):
        args = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"]
    else:
        return
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), DECODE_TIMEOUT_S)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    problems = err.decode(errors="replace").strip()
    if path.suffix == ".flac":
        # flac warns (exit 0) about an unset MD5, which DASH-remuxed files legitimately have
        problems = "\n".join(line for line in problems.splitlines()
                             if "MD5 signature" not in line and "WARNING" not in line.upper())
        if proc.returncode == 0:
            problems = ""
    if proc.returncode != 0 or problems:
        raise IntegrityFailed(f"{path.name} failed a full decode: {problems[:300]}")


async def verify(path: Path, expected_duration_s: float,
                 parsed: AudioFacts | None = None) -> AudioFacts:
    """Check ``path`` before it is published. ``parsed``: what the tagger read of this very
    file; with a full decode to follow (which parses the container again, whole), the
    file need not be parsed a second time."""
    facts = parsed if parsed is not None and can_decode(path) else \
        await asyncio.to_thread(probe, path)
    codec_ok = (facts.codec == "flac") == (path.suffix == ".flac")
    if not codec_ok or (path.suffix == ".m4a" and not facts.codec.startswith(("mp4a", "alac"))):
        raise IntegrityFailed(f"{path.name}: codec {facts.codec} does not match its extension")
    if not duration_ok(facts.duration_s, expected_duration_s):
        raise IntegrityFailed(f"{path.name} lasts {facts.duration_s:.1f}s, "
                              f"the upstream says {expected_duration_s:.1f}s")
    await _decode(path)
    return facts
