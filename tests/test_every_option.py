"""Every option of every command, through the installed ``tidalq``: each one's effect is
observed in ``show --json``, in the library or in the daemon's answer (an option without an
observed effect is a bug: ``--mb-release`` was parsed and dropped once). Also the end of a
cancelled album's entries, and the web app's second cancel, as the CLI sees them."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from mutagen.flac import FLAC

from tests.helpers import DaemonProcess, FakeProcess, free_port, wait_until
from tidalq.testing.catalog import PLAYLIST
from tidalq.testing.fakemb import mbid

SLOW_BPS = 300_000


def added(d: DaemonProcess, *args: str) -> str:
    return d.cli("add", *args).stdout.strip()


def finished(d: DaemonProcess, job_id: str, timeout: str = "60") -> dict[str, Any]:
    d.cli("wait", job_id, "--timeout", timeout, check=False)
    job: dict[str, Any] = d.json("show", job_id)
    return job


def test_the_options_of_add(make_daemon: Any, fake_proc: FakeProcess) -> None:
    d: DaemonProcess = make_daemon(TIDALQ_MUSICBRAINZ_URL=f"{fake_proc.url}/mb")
    # --quality: the job's quality, and the file's container
    high = finished(d, added(d, "track", "1001", "--quality", "HIGH"))
    assert high["job"]["quality"] == "HIGH" and high["result"]["path"].endswith(".m4a")
    # --min-quality: less than it is a failure, said with its code
    below = finished(d, added(d, "track", "1002", "--quality", "HIGH", "--min-quality",
                              "LOSSLESS", "--max-attempts", "1"))
    assert below["job"]["minQuality"] == "LOSSLESS" and below["status"] == "failed"
    assert below["failureCode"] == "QUALITY_UNAVAILABLE", below
    # --max-attempts
    assert below["maxAttempts"] == 1
    # --force: what the library has is replaced, not kept
    first = finished(d, added(d, "track", "1003"))
    kept = finished(d, added(d, "track", "1003"))
    forced = finished(d, added(d, "track", "1003", "--force"))
    assert first["result"]["skipped"] is False and kept["result"]["skipped"] is True
    assert forced["job"]["forceOverwrite"] is True and forced["result"]["skipped"] is False
    # --include: which of an artist's releases (artist 77 has albums only)
    eps = finished(d, added(d, "artist", "77", "--include", "eps"))
    assert eps["job"]["include"] == ["eps"] and eps["status"] == "completed"
    assert eps["children"] == []
    # --mb-release: sent, matched, written
    album = finished(d, added(d, "album", "100", "--mb-release",
                              f"https://musicbrainz.org/release/{mbid('a', 100)}"))
    assert album["job"]["musicBrainzReleaseId"] == mbid("a", 100), album["job"]
    assert "(given): 3 of 3 tracks" in album["job"]["musicBrainzMatch"]
    for entry in album["trackProgress"]:
        assert FLAC(entry["path"])["MUSICBRAINZ_ALBUMID"] == [mbid("a", 100)]
    for bad in (["track", "5", "--mb-release", "not-a-uuid"],
                ["playlist", PLAYLIST, "--mb-release", mbid("a", 100)]):
        out = d.cli("add", *bad, check=False)
        assert out.returncode == 2 and "release" in out.stderr, out.stderr
    # --json: the job objects of the contract
    out = json.loads(d.cli("add", "track", "1001", "--quality", "HIGH", "--json").stdout)
    assert out[0]["job"] == {"type": "track", "trackId": 1001, "quality": "HIGH"}
    assert out[0]["id"].startswith("job-") and out[0]["status"] == "queued"
    assert finished(d, out[0]["id"])["result"]["skipped"] is True


def test_the_options_of_list_and_wait(make_daemon: Any) -> None:
    d: DaemonProcess = make_daemon()
    done = [finished(d, added(d, "track", n))["id"] for n in ("1001", "1002", "1003")]
    d.cli("pause")
    waiting = added(d, "track", "2001")
    listed = json.loads(d.cli("list", "--status", "completed", "--json").stdout)
    assert {j["id"] for j in listed} == set(done)
    assert [j["id"] for j in d.json("list", "--status", "queued")] == [waiting]
    two = json.loads(d.cli("list", "--limit", "2", "--json").stdout)
    assert len(two) == 2 and two[0]["id"] == waiting, "newest first"
    text = d.cli("list", "--limit", "1").stdout
    assert waiting in text and not any(j in text for j in done)
    out = d.cli("wait", waiting, "--timeout", "1", check=False)
    assert out.returncode == 124, out
    d.cli("resume")
    assert d.cli("wait", waiting, "--timeout", "60").returncode == 0


def test_the_daemons_flags(tmp_path: Path, fake_proc: FakeProcess) -> None:
    """--store, --download-dir, --max-concurrent, --http and -v beat an environment that
    names none of them; --priority orders a queue served one job at a time."""
    port = free_port()
    library, db = tmp_path / "flagged-library", tmp_path / "flagged.db"
    d = DaemonProcess(tmp_path, {**fake_proc.env(), "TIDALQ_LEASE": "2s"}, "flags")
    d.start(True, "--store", f"sqlite:///{db}", "--download-dir", str(library),
            "--max-concurrent", "1", "--http", f"127.0.0.1:{port}", "-v")
    try:
        stats = d.json("status")
        assert stats["daemon"]["store"] == f"sqlite:///{db}" and db.exists()
        assert stats["daemon"]["downloadDir"] == str(library)
        assert stats["worker"]["maxConcurrent"] == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/download-queue/stats",
                                    timeout=10) as resp:
            assert json.loads(resp.read())["worker"]["maxConcurrent"] == 1
        d.cli("pause")
        low = added(d, "track", "2001", "--priority", "low")
        high = added(d, "track", "2002", "--priority", "high")
        d.cli("resume")
        jobs = {j: finished(d, j) for j in (low, high)}
        assert jobs[high]["priority"] == "high" and jobs[low]["priority"] == "low"
        assert jobs[high]["completedAt"] <= jobs[low]["startedAt"], "one slot, high first"
        assert Path(jobs[low]["result"]["path"]).is_relative_to(library)
        assert " DEBUG " in d.log()
    finally:
        d.stop()


def test_no_workers_accepts_and_downloads_nothing(tmp_path: Path,
                                                  fake_proc: FakeProcess) -> None:
    d = DaemonProcess(tmp_path, {**fake_proc.env(), "TIDAL_DOWNLOADS": str(tmp_path / "lib"),
                                 "TIDALQ_STORE": f"sqlite:///{tmp_path}/q.db"}, "control")
    d.start(True, "--no-workers")
    try:
        job = added(d, "track", "1001")
        assert d.json("status")["worker"]["workers"] == "off"
        assert d.cli("wait", job, "--timeout", "2", check=False).returncode == 124
        assert d.json("show", job)["status"] == "queued"
        assert not (tmp_path / "lib").exists() or not list((tmp_path / "lib").rglob("*.flac"))
    finally:
        d.stop()


def test_a_cancelled_album_ends_every_entry_and_a_second_cancel_says_so(
        make_daemon: Any, fake_proc: FakeProcess) -> None:
    d: DaemonProcess = make_daemon()
    fake_proc.faults(throttle_bps=SLOW_BPS)
    job = added(d, "album", "300")

    def running_a_track() -> bool:
        entries = d.json("show", job).get("trackProgress") or []
        return any(e["status"] == "processing" for e in entries)

    wait_until(running_a_track, 30, "a track of album 300 to be running")
    assert d.cli("cancel", job).returncode == 0
    fake_proc.faults(throttle_bps=None)
    cancelled = d.json("show", job)
    assert cancelled["status"] == "cancelled"
    states = {e["status"] for e in cancelled["trackProgress"]}
    assert states <= {"completed", "cancelled"} and "cancelled" in states, states
    again = d.cli("cancel", job)
    assert again.returncode == 0 and "already cancelled" in again.stdout


def test_playlist_entries_carry_disc_and_track_numbers(make_daemon: Any) -> None:
    d: DaemonProcess = make_daemon()
    done = finished(d, added(d, "playlist", PLAYLIST))
    entries = done["trackProgress"]
    assert entries and all({"discNumber", "trackNumber"} <= set(e) for e in entries)
    side_two = next(e for e in entries if e["trackId"] == 2001)
    assert (side_two["discNumber"], side_two["trackNumber"]) == (1, 1)
    assert next(e for e in entries if e["trackId"] == 1003)["trackNumber"] == 3
