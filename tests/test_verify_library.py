"""A re-run over a full library trusts what tidalq verified (no decode), decodes what
changed; `tidalq verify` decodes everything anyway, reports the broken and re-queues them
with --repair — all through the installed CLI."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from tests.helpers import FakeProcess
from tests.test_account import wait_job


def corrupt(path: Path) -> None:
    """Bytes flipped in the middle of the audio (size kept, mtime moves)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0x5A for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


def test_a_rerun_trusts_what_it_verified_and_decodes_what_changed(
        make_daemon: Any, fake_proc: FakeProcess, tmp_path: Path) -> None:
    d = make_daemon(start=False)
    d.start(True, "--verbose")  # the daemon says which library files it decodes
    wait_job(d, d.cli("add", "album", "100").stdout.strip())
    album = tmp_path / "lib" / "Test Artist" / "First Light"
    corrupt(album / "02 - Second Song (Live).flac")
    before, logged = len(fake_proc.requests()), len(d.log())
    again = wait_job(d, d.cli("add", "album", "100").stdout.strip())
    fetched = [r["path"] for r in fake_proc.requests()[before:] if r["path"].startswith("/cdn/")]
    assert fetched == ["/cdn/1002/track.flac"], "only the changed file is fetched again"
    # the changed file decoded (and found broken); its replacement as it downloaded
    # (test_checked_download); the others trusted, not decoded
    decoded = [line for line in d.log()[logged:].splitlines() if "decoding it" in line]
    assert len(decoded) == 1 and "02 - Second Song (Live).flac" in decoded[0], decoded
    assert [t["status"] for t in again["trackProgress"]] == ["completed"] * 3
    assert sys.executable  # the daemon and this test share the interpreter


def test_verify_reports_and_repairs_broken_files(make_daemon: Any, tmp_path: Path) -> None:
    d = make_daemon()
    wait_job(d, d.cli("add", "album", "200").stdout.strip())
    album = tmp_path / "lib" / "Test Artist" / "Double Vision"
    clean = d.cli("verify")
    assert clean.returncode == 0 and "checked 4 files: 0 broken" in clean.stdout
    broken = album / "2-01 - Side 2 Song 1.flac"
    corrupt(broken)
    # a re-run would not see it (size and mtime kept: the user's own doing); verify does
    stamp = broken.stat()
    os.utime(broken, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    found = d.cli("verify", check=False)
    assert found.returncode == 1 and f"BROKEN {broken}" in found.stderr
    assert "checked 4 files: 1 broken" in found.stdout
    only = d.cli("verify", str(album / "1-01 - Side 1 Song 1.flac"))
    assert "checked 1 files: 0 broken" in only.stdout
    repaired = d.cli("verify", "--repair")
    job_id = repaired.stdout.strip().splitlines()[-1]
    assert "1 broken, 1 re-queued" in repaired.stdout and job_id.startswith("job-")
    wait_job(d, job_id)
    assert d.cli("verify").returncode == 0
    assert d.json("verify")["broken"] == []
