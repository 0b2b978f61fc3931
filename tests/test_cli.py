"""The CLI as a user runs it, against a real daemon process and the fake upstream."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.text import Text

from tests.helpers import DaemonProcess, FakeProcess, at_a_terminal, repo_root, subprocess_env

JOB_KEYS = {"id", "job", "status", "priority", "progress", "createdAt", "startedAt",
            "completedAt", "updatedAt", "nextRetryAt", "attempts", "maxAttempts", "error",
            "failureCode"}


def library_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.flac") if ".tidalq" not in p.parts)


def test_add_wait_status_show(make_daemon: Any, tmp_path: Path) -> None:
    d: DaemonProcess = make_daemon()
    album_id = d.cli("add", "album", "100").stdout.strip()
    assert album_id.startswith("job-")
    urls = d.cli("add", "https://tidal.com/browse/track/1003",
                 "https://listen.tidal.com/album/200", "--priority", "high").stdout.split()
    assert len(urls) == 2
    added = json.loads(d.cli("add", "track", "2001", "--quality", "high", "--json").stdout)
    assert added[0]["job"] == {"type": "track", "trackId": 2001, "quality": "HIGH"}
    assert d.cli("wait", "--timeout", "90").returncode == 0
    stats = d.json("status")
    assert stats["success"] is True and stats["queue"]["completed"] == 4
    assert set(stats["worker"]) >= {"running", "activeDownloads", "maxConcurrent"}
    job = d.json("show", album_id[:-3])
    assert set(job) >= JOB_KEYS and job["status"] == "completed"
    assert [t["status"] for t in job["trackProgress"]] == ["completed"] * 3
    listed = d.json("list")
    assert [j["id"] for j in listed][-1] == album_id and len(listed) == 4
    files = library_files(tmp_path / "lib")
    # one file per track: track 2001 asked as AAC finds (or is replaced by) its FLAC
    assert len(files) == 3 + 4
    assert list((tmp_path / "lib").rglob("*.m4a")) == []
    for path in files:
        subprocess.run(["flac", "-t", "-s", str(path)], check=True, capture_output=True)
    assert "completed" in d.cli("show", album_id).stdout
    assert "completed 4" in d.cli("status").stdout
    assert album_id in d.cli("ls", "--status", "completed").stdout


def test_exit_codes(make_daemon: Any, tmp_path: Path) -> None:
    d: DaemonProcess = make_daemon(start=False)
    down = d.cli("status", check=False)
    assert down.returncode == 3 and "not running" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
    d.start()
    assert d.cli("add", "123", check=False).returncode == 2
    assert d.cli("add", "playlist", "1", check=False).returncode == 2
    assert d.cli("add", "track", "1", "--quality", "ULTRA", check=False).returncode == 2
    missing = d.cli("show", "job-nope", check=False)
    assert missing.returncode == 1 and "no job" in missing.stderr
    assert d.cli("cancel", "job-nope", check=False).returncode == 1
    d.cli("pause")
    job_id = d.cli("add", "track", "1001").stdout.strip()
    assert d.cli("wait", job_id, "--timeout", "0.5", check=False).returncode == 124
    d.cli("cancel", job_id)
    assert d.cli("wait", job_id, check=False).returncode == 1
    d.cli("resume")
    d.cli("retry", job_id)
    assert d.cli("wait", job_id, "--timeout", "60").returncode == 0
    assert d.cli("retry", check=False).returncode == 2
    d.cli("remove", job_id)
    assert d.cli("show", job_id, check=False).returncode == 1


def test_list_on_an_80_column_terminal_says_what_each_job_is(make_daemon: Any) -> None:
    d: DaemonProcess = make_daemon()
    d.cli("add", "album", "100", "200")
    assert d.cli("wait", "--timeout", "90").returncode == 0
    narrow = at_a_terminal(d, 80, "list")
    assert narrow[0].split() == ["ID", "WHAT", "STATUS", "PROGRESS", "NOTE"], narrow
    assert any("Test Artist – Fir" in line for line in narrow), narrow
    assert any("Test Artist – Dou" in line for line in narrow), narrow
    assert all(Text(line).cell_len <= 80 for line in narrow), "a short note fits the line"
    wide = at_a_terminal(d, 160, "list")
    assert wide[0].split() == ["ID", "WHAT", "QUALITY", "STATUS", "PROGRESS", "CREATED",
                               "NOTE"], wide
    assert any("Test Artist – Double Vision  LOSSLESS" in line for line in wide), wide


def test_pause_and_resume_single_jobs(make_daemon: Any) -> None:
    d: DaemonProcess = make_daemon()
    d.cli("pause")
    job_id = d.cli("add", "track", "1002").stdout.strip()
    d.cli("pause", job_id)
    assert d.json("show", job_id)["status"] == "paused"
    d.cli("resume")
    d.cli("resume", job_id)
    assert d.cli("wait", job_id, "--timeout", "60").returncode == 0


def test_cli_does_not_load_the_daemon_side_or_what_it_does_not_use(tmp_path: Path) -> None:
    """Every command pays for what the CLI imports: not the daemon's modules, not the
    models' dataclasses (the CLI needs only tidalq.terms), no TOML parser without a file,
    and rich only for what it prints for people."""
    code = ("import sys, tidalq.cli; tidalq.cli.App(None, None).settings(); "
            "print(','.join(m for m in ('aiohttp', 'redis', 'mutagen', 'sqlite3', 'asyncio', "
            "'tidalq.models', 'tomllib', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=repo_root(),
                         env=subprocess_env(XDG_CONFIG_HOME=str(tmp_path / "none")))
    assert out.stdout.strip() == ""


def test_help_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "tidalq", "--help"], capture_output=True,
                         text=True, check=True, cwd=repo_root(), env=subprocess_env()).stdout
    for command in ("daemon", "add", "status", "list", "show", "cancel", "retry", "pause",
                    "resume", "remove", "wait", "watch"):
        assert command in out


def test_fake_upstream_runs_from_the_command_line(fake_proc: FakeProcess) -> None:
    assert fake_proc.requests() == []
    fake_proc.faults(rate_limit=1)
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(fake_proc.url + "/info/?id=1001", timeout=5)
        raise AssertionError("expected 429")
    except urllib.error.HTTPError as exc:
        assert exc.code == 429
    with urllib.request.urlopen(fake_proc.url + "/info/?id=1001", timeout=5) as resp:
        assert json.loads(resp.read())["data"]["title"] == "Opening"
