"""`tidalq verify`: decode every audio file of the library (or of the paths given) in full,
whatever tidalq trusts, and say which are broken; each file that passes is marked verified
again (:mod:`tidalq.library.trust`). What a broken file holds (its TIDAL track id and
quality, from its tags) is returned so that `--repair` can download it again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tidalq.errors import IntegrityFailed
from tidalq.library import trust
from tidalq.media import tags, verify

AUDIO_SUFFIXES = (".flac", ".m4a")


@dataclass(frozen=True)
class Finding:
    path: Path
    error: str | None  # None: it decoded in full
    track_id: str | None = None
    quality: str | None = None


def audio_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The audio files at or under ``paths``, never inside tidalq's own ``.tidalq``."""
    for root in paths:
        if root.is_file():
            if root.suffix in AUDIO_SUFFIXES:
                yield root
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != ".tidalq")
            for name in sorted(files):
                if name.endswith(AUDIO_SUFFIXES) and not name.startswith("."):
                    yield Path(folder) / name


async def check(path: Path) -> Finding:
    try:
        await verify.verify(path, 0.0)
    except IntegrityFailed as exc:
        track_id, quality = await asyncio.to_thread(tags.read_identity, path)
        return Finding(path, str(exc), track_id, quality)
    await asyncio.to_thread(trust.mark_verified, path)
    return Finding(path, None)


async def scrub(files: Iterable[Path], on_each: Callable[[Finding], None],
                concurrency: int = 2) -> list[Finding]:
    """Check every file, ``concurrency`` at a time; the broken ones."""
    gate = asyncio.Semaphore(concurrency)
    broken: list[Finding] = []

    async def one(path: Path) -> None:
        async with gate:
            finding = await check(path)
        on_each(finding)
        if finding.error is not None:
            broken.append(finding)

    await asyncio.gather(*(one(p) for p in files))
    return broken
