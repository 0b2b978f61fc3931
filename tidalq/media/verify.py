"""Verification before publishing: nothing unverified reaches the library.

Checks, in order: the container parses (mutagen), the codec matches the extension, the
duration is within tolerance of the API's, and a full decode: FLAC by the decoder programs
of :mod:`tidalq.media.decoders` where libFLAC is installed (else ``flac -t``), anything
else by ``ffmpeg -v error -f null``, when the programs are on PATH.

The decode runs in a program of its own, never in the daemon: a file crafted to crash a
decoder crashes that program only. Decoders are started and waited for on a small pool of
threads, as many as the machine has cores (a decode is CPU work: more at once would only
queue for the cores), so the event loop neither forks nor starts a thread per child.
:func:`_decode` runs a decoder over a finished file; a FLAC served whole is decoded as it
downloads instead, by :mod:`tidalq.media.decoders`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mutagen import MutagenError
from mutagen.flac import FLAC
from mutagen.mp4 import MP4

from tidalq.errors import IntegrityFailed
from tidalq.media import decoders
from tidalq.media.flac import StreamInfo

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
    if decoders.available():
        checks.append("libFLAC (as a FLAC downloads, and finished FLAC files)")
    elif _which("flac"):
        checks.append("flac -t")
    if _which("ffmpeg"):
        checks.append("ffmpeg decode")
    return checks


def _which(program: str) -> str | None:
    return _which_on(program, os.environ.get("PATH", os.defpath))


@functools.lru_cache(maxsize=16)
def _which_on(program: str, search_path: str) -> str | None:
    """``shutil.which``, asked once per PATH: it stats every folder of PATH."""
    return shutil.which(program, path=search_path)


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


def facts_of_streaminfo(info: StreamInfo) -> AudioFacts:
    """What a FLAC stream's STREAMINFO says of it (an all-zero MD5 is an unset one)."""
    duration = info.total_samples / info.sample_rate if info.sample_rate else 0.0
    return AudioFacts("flac", duration, info.sample_rate, info.bits_per_sample,
                      info.md5 if any(info.md5) else None)


def can_decode(path: Path) -> bool:
    """Whether a full decode of ``path`` is possible here (libFLAC, or flac or ffmpeg on
    PATH)."""
    return (path.suffix == ".flac" and decoders.available()) or _decoder_args(path) is not None


def duration_ok(actual_s: float, expected_s: float) -> bool:
    return expected_s <= 0 or abs(actual_s - expected_s) <= max(2.0, expected_s * 0.02)


def _decoder_args(path: Path) -> list[str] | None:
    if path.suffix == ".flac" and (flac := _which("flac")):
        return [flac, "-t", "-s", str(path)]
    if ffmpeg := _which("ffmpeg"):
        return [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"]
    return None


@functools.cache
def _decoders() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="tidalq-decode")


class _Decoder:
    """One decoder process, run to its end on a decode thread; ``kill`` stops it from the
    event loop (a cancelled job, a decode past its time), before or after it started."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self._proc: subprocess.Popen[bytes] | None = None
        self._killed = False
        self._lock = threading.Lock()

    def run(self) -> tuple[int, str]:
        """(exit status, what it printed on stderr); -1 when it was killed first."""
        with self._lock:
            if self._killed:
                return -1, "cancelled"
            self._proc = proc = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE)
        # no timeout here: Popen's timed wait polls with sleeps; kill() ends a long decode
        _, err = proc.communicate()
        return proc.returncode, err.decode(errors="replace").strip()

    def kill(self) -> None:
        with self._lock:
            self._killed = True
            if self._proc is not None:
                self._proc.kill()  # a no-op once the process was reaped


async def _decode(path: Path) -> None:
    if path.suffix == ".flac" and decoders.available():
        await _decode_in_a_decoder(path)
        return
    args = _decoder_args(path)
    if args is None:
        return
    decoder = _Decoder(args)
    running = asyncio.get_running_loop().run_in_executor(_decoders(), decoder.run)
    try:
        status, problems = await asyncio.wait_for(running, DECODE_TIMEOUT_S)
    except TimeoutError:
        decoder.kill()
        status, problems = -1, f"no end after {DECODE_TIMEOUT_S}s"
    except asyncio.CancelledError:
        decoder.kill()
        raise
    if path.suffix == ".flac" and args[1] == "-t":
        problems = _flac_problems(status, problems)
    _judge(path.name, status, problems)


async def _decode_in_a_decoder(path: Path) -> None:
    """A FLAC file decoded by one of the decoder programs that outlive a track (libFLAC,
    as ``flac -t``): no program is started for it."""
    said = await decoders.exchange({"file": str(path)})
    if said != "ok":
        raise decoders.error_of(said, path.name)


def _flac_problems(status: int, printed: str) -> str:
    # flac warns (exit 0) about an unset MD5, which DASH-remuxed files legitimately have
    return "" if status == 0 else "\n".join(
        line for line in printed.splitlines()
        if "MD5 signature" not in line and "WARNING" not in line.upper())


def _judge(name: str, status: int, problems: str) -> None:
    if status != 0 or problems:
        raise IntegrityFailed(f"{name} failed a full decode: "
                              f"{problems[:300] or f'exit status {status}'}")


async def verify(path: Path, expected_duration_s: float,
                 parsed: AudioFacts | None = None) -> AudioFacts:
    """Check ``path`` before it is published. ``parsed``: what the tagger read of this very
    file; with a full decode to follow (which parses the container again, whole), the
    file need not be parsed a second time."""
    facts = parsed if parsed is not None and can_decode(path) else \
        await asyncio.to_thread(probe, path)
    check_facts(path, facts, expected_duration_s)
    await _decode(path)
    return facts


def check_facts(path: Path, facts: AudioFacts, expected_duration_s: float) -> None:
    """The stream's codec matches the file's extension and it lasts what the API said."""
    codec_ok = (facts.codec == "flac") == (path.suffix == ".flac")
    if not codec_ok or (path.suffix == ".m4a" and not facts.codec.startswith(("mp4a", "alac"))):
        raise IntegrityFailed(f"{path.name}: codec {facts.codec} does not match its extension")
    if not duration_ok(facts.duration_s, expected_duration_s):
        raise IntegrityFailed(f"{path.name} lasts {facts.duration_s:.1f}s, "
                              f"the upstream says {expected_duration_s:.1f}s")
