"""A FLAC served whole is verified as it downloads: a decoder program fetches it, writes it
once with its tags ahead of its frames and decodes the same bytes as they arrive (the
decode overlaps the network, and a broken stream stops its download before the last
byte); the decoders outlive a track. Observed through the installed daemon and CLI, the decoders'
processes in /proc, and the fake CDN's record of what it sent."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from mutagen.flac import FLAC

from tests.helpers import FakeProcess, running, wait_until
from tests.test_account import wait_job

FLAC_BLOCK_NAMES = {0: "STREAMINFO", 1: "PADDING", 3: "SEEKTABLE", 4: "VORBIS_COMMENT",
                    6: "PICTURE"}


def decoders_of(pid: int) -> list[int]:
    """The decoder programs (``-m tidalq.media.decoder_program``) whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and args[1:3] == [b"-m", b"tidalq.media.decoder_program"] \
                and running(int(entry.name)):
            found.append(int(entry.name))
    return found


def bytes_written(pid: int) -> int:
    """What process ``pid`` has written so far: a decoder writes the stream's bytes to the
    staging file as it takes them from the CDN (a socket's reads are not counted)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/<pid>/io")


def metadata_and_frames(data: bytes) -> tuple[list[str], bytes]:
    """The names of a FLAC file's metadata blocks in order, and its frames."""
    assert data[:4] == b"fLaC"
    names, pos = [], 4
    while True:
        head, size = data[pos], int.from_bytes(data[pos + 1:pos + 4], "big")
        names.append(FLAC_BLOCK_NAMES.get(head & 0x7F, str(head & 0x7F)))
        pos += 4 + size
        if head & 0x80:
            return names, data[pos:]


def test_a_track_is_decoded_while_it_downloads_and_written_once_with_its_tags_first(
        make_daemon: Any, fake_proc: FakeProcess, tmp_path: Path) -> None:
    fake_proc.faults(throttle_bps=500_000)  # about 1.4 s for the track's 0.7 MB
    d = make_daemon(TIDALQ_LYRICS="on")  # the lyrics tag goes ahead of the frames too
    assert d.proc is not None
    job = d.cli("add", "track", "1001").stdout.strip()
    wait_until(lambda: bool(decoders_of(d.proc.pid)), 15, "the decoder to start")
    [decoder] = decoders_of(d.proc.pid)
    at_start = bytes_written(decoder)
    wait_until(lambda: bytes_written(decoder) > at_start + 300_000, 15,
               "the decoder to write the stream")
    assert not [b for b in fake_proc.cdn_bodies() if b["path"] == "/cdn/1001/track.flac"], \
        "the decoder wrote 300 kB only after the CDN's last byte"
    wait_job(d, job)
    sent = [b for b in fake_proc.cdn_bodies() if b["path"] == "/cdn/1001/track.flac"]
    assert len(sent) == 1 and sent[0]["sent"] == sent[0]["size"]  # one download, whole

    track = tmp_path / "lib" / "Test Artist" / "First Light" / "01 - Opening.flac"
    blocks, frames = metadata_and_frames(track.read_bytes())
    assert blocks == ["STREAMINFO", "VORBIS_COMMENT", "PICTURE", "PADDING"]
    with urllib.request.urlopen(f"{fake_proc.url}/cdn/1001/track.flac?token=sig1") as resp:
        assert metadata_and_frames(resp.read())[1] == frames  # the CDN's frames, unchanged
    tags = FLAC(track)
    assert tags["TITLE"] == ["Opening"] and tags["TIDAL_TRACK_ID"] == ["1001"]
    assert tags["LYRICS"] and tags.pictures[0].data[:2] == b"\xff\xd8"  # a JPEG cover
    subprocess.run(["flac", "-t", "-s", str(track)], check=True)


def test_a_broken_stream_stops_before_its_last_byte_and_nothing_reaches_the_library(
        make_daemon: Any, fake_proc: FakeProcess, tmp_path: Path) -> None:
    fake_proc.faults(throttle_bps=500_000, cdn_corrupt=1)  # bytes flipped mid-body once
    d = make_daemon()
    job = d.cli("add", "track", "1003").stdout.strip()
    failed = wait_job(d, job, "failed")
    assert failed["failureCode"] == "INTEGRITY" and "failed a full decode" in failed["error"]
    assert "03 - Closing.flac" in failed["error"]  # the track's name, not a staging file's
    wait_until(lambda: bool(fake_proc.cdn_bodies()), 10, "the CDN to notice the hang-up")
    [body] = fake_proc.cdn_bodies()
    assert body["sent"] < body["size"] * 0.9, body  # abandoned soon after the flip
    track = tmp_path / "lib" / "Test Artist" / "First Light" / "03 - Closing.flac"
    assert not track.exists()
    assert not [p for p in (tmp_path / "lib").rglob("*") if p.is_file() and ".part" in p.name]

    d.cli("retry", job)  # the CDN sends it whole this time
    wait_job(d, job)
    assert fake_proc.cdn_bodies()[-1]["sent"] == body["size"]
    subprocess.run(["flac", "-t", "-s", str(track)], check=True)


def test_cancelling_a_download_stops_its_decoder(make_daemon: Any, fake_proc: FakeProcess,
                                                 tmp_path: Path) -> None:
    fake_proc.faults(throttle_bps=100_000)  # seven seconds for the track
    d = make_daemon()
    assert d.proc is not None
    job = d.cli("add", "track", "1001").stdout.strip()
    wait_until(lambda: bool(decoders_of(d.proc.pid)), 15, "the decoder to start")
    [decoder] = decoders_of(d.proc.pid)
    d.cli("cancel", job)
    wait_job(d, job, "cancelled")
    wait_until(lambda: not running(decoder), 10, "the decoder to be stopped")
    assert not list((tmp_path / "lib").rglob("*.flac"))


def test_an_albums_tracks_share_decoders_and_a_killed_one_fails_only_its_track(
        make_daemon: Any, fake_proc: FakeProcess, tmp_path: Path) -> None:
    d = make_daemon(TIDALQ_MAX_CONCURRENT="2")
    assert d.proc is not None
    wait_job(d, d.cli("add", "album", "200").stdout.strip())
    files = sorted((tmp_path / "lib").rglob("*.flac"))
    assert len(files) == 4
    for path in files:
        subprocess.run(["flac", "-t", "-s", str(path)], check=True)
    # a decoder is kept for the next stream once its own passed: four tracks, two slots,
    # no more than two decoders (one each would leave four waiting here)
    kept = decoders_of(d.proc.pid)
    assert 1 <= len(kept) <= 2, kept

    fake_proc.faults(throttle_bps=100_000)
    job = d.cli("add", "track", "1001").stdout.strip()
    busy: list[int] = []

    def one_reading() -> bool:
        busy[:] = [p for p in [_reading(d.proc.pid)] if p is not None]
        return bool(busy)

    wait_until(one_reading, 15, "a decoder reading the stream")
    os.kill(busy[0], signal.SIGKILL)
    failed = wait_job(d, job, "failed")
    assert failed["failureCode"] == "INTEGRITY", failed
    assert "the decoder ended (killed by signal 9)" in failed["error"], failed["error"]
    fake_proc.faults()
    d.cli("retry", job)  # a new decoder for it
    wait_job(d, job)
    track = tmp_path / "lib" / "Test Artist" / "First Light" / "01 - Opening.flac"
    subprocess.run(["flac", "-t", "-s", str(track)], check=True)


def _reading(daemon: int) -> int | None:
    """A decoder of ``daemon`` that is in the middle of a stream (it wrote more since)."""
    try:
        before = {p: bytes_written(p) for p in decoders_of(daemon)}
        time.sleep(0.2)
        return next((p for p, was in before.items() if bytes_written(p) > was), None)
    except FileNotFoundError:  # one ended meanwhile
        return None
