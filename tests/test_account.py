"""The user's own TIDAL account, through the installed CLI against the fake TIDAL in its
own process: `tidalq login` (device flow), downloads through `upstream = "tidal"`, the
favourites, `tidalq logout`; tokens that expire, refreshes refused, rate limits."""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.helpers import DaemonProcess, FakeProcess, read_line, wait_until
from tests.test_packaging import readme_blocks
from tidalq.testing.catalog import PLAYLIST
from tidalq.testing.faketidal import TEST_CLIENT_ID, TEST_CLIENT_SECRET, USER_ID


def begin_login(d: DaemonProcess, *args: str) -> tuple[subprocess.Popen[str], str, str]:
    """`tidalq login` running; (the process, the code it printed, what it printed)."""
    proc = d.cli_process("login", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    printed = line = ""
    while "approve the code" not in line:
        assert proc.stdout is not None
        line = read_line(proc.stdout, 20, "the login link and code")
        assert line, f"login ended early: {proc.stderr.read() if proc.stderr else ''}"
        printed += line
    words = line.split()
    assert words[1].startswith("https://") and "/tidal/link/" in words[1], line
    return proc, words[words.index("code") + 1], printed


def log_in(d: DaemonProcess, fake: FakeProcess) -> dict[str, Any]:
    proc, code, _ = begin_login(d, "--json")
    assert fake.approve(code) == "approved"
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    account: dict[str, Any] = json.loads(out[out.index("{"):])
    return account


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and ".tidalq" not in p.parts)


def flac_ok(path: Path) -> bool:
    return subprocess.run(["flac", "-t", "-s", str(path)], capture_output=True).returncode == 0


def wait_job(d: DaemonProcess, job_id: str, status: str = "completed",
             timeout: float = 60) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def reached() -> bool:
        found.update(d.json("show", job_id))
        return found["status"] == status

    wait_until(reached, timeout, f"{job_id} {status}")
    return found


def test_login_download_favourites_logout(make_daemon: Any, fake_proc: FakeProcess,
                                          tmp_path: Path) -> None:
    """The whole path a user with no hifi-api server walks (lyrics on: TIDAL's own)."""
    d = make_daemon(TIDALQ_LYRICS="on", **fake_proc.tidal_env())
    status = d.cli("status").stdout
    assert "not logged in to TIDAL: run tidalq login; claims paused" in status
    job_id = d.cli("add", "album", "100").stdout.strip()
    time.sleep(1.5)
    assert d.json("show", job_id)["status"] == "queued", "no claim before the login"

    account = log_in(d, fake_proc)
    assert account["userId"] == USER_ID and account["countryCode"] == "NO"
    assert account["bestQuality"] == "HI_RES_LOSSLESS"
    login_file = tmp_path / "state" / "tidal-login.json"
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600
    token = json.loads(login_file.read_text())["access_token"]

    done = wait_job(d, job_id)
    library = tmp_path / "lib"
    assert files_under(library) == [
        "Test Artist/First Light/01 - Opening.flac", "Test Artist/First Light/01 - Opening.lrc",
        "Test Artist/First Light/02 - Second Song (Live).flac",
        "Test Artist/First Light/03 - Closing.flac", "Test Artist/First Light/cover.jpg"]
    assert all(flac_ok(p) for p in library.rglob("*.flac"))
    assert done["completedTracks"] == 3
    shown = d.json("status")["account"]
    assert shown["userId"] == USER_ID and shown["problem"] is None
    for text in (d.log(), json.dumps(d.json("list")), json.dumps(d.json("status"))):
        assert token not in text, "a token never reaches a log or a job"

    fake_proc.favourites(tracks=[2001], albums=[600], playlists=[PLAYLIST], artists=[77])
    created = d.cli("follow", "favorites").stdout.strip()
    assert created.startswith("follow-")

    def favourites_in() -> bool:
        jobs = d.json("list")
        kinds = {(j["job"]["type"], j["status"]) for j in jobs}
        return {("track", "completed"), ("playlist", "completed")} <= kinds and \
            sum(1 for j in jobs if j["job"]["type"] == "album" and j["status"] == "completed") == 2

    wait_until(favourites_in, 90, "the favourites downloaded")
    follows = {(f["kind"], str(f["ref"])) for f in d.json("follows")}
    assert {("favorites", "me"), ("playlist", PLAYLIST), ("artist", "77")} <= follows
    assert (library / "Test Artist" / "Double Vision" / "1-01 - Side 1 Song 1.flac").exists()
    assert (library / "Test Artist" / "High Resolution" / "01 - Hi-Res One.flac").exists()

    assert d.cli("logout").stdout.strip() == "logged out"
    assert not login_file.exists()
    assert "not logged in to TIDAL" in d.cli("status").stdout
    assert d.cli("logout").stdout.strip() == "was not logged in"


def test_login_without_a_daemon_is_kept_for_the_daemon(make_daemon: Any,
                                                       fake_proc: FakeProcess,
                                                       tmp_path: Path) -> None:
    d = make_daemon(start=False, **fake_proc.tidal_env())
    proc, code, printed = begin_login(d)
    fake_proc.approve(code)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "no daemon running: logging in here" in printed and f"user {USER_ID} (NO)" in out
    login_file = tmp_path / "state" / "tidal-login.json"
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600
    d.start()
    assert d.json("status")["account"]["userId"] == USER_ID
    job_id = d.cli("add", "track", "1001").stdout.strip()
    assert wait_job(d, job_id)["result"]["quality"] == "LOSSLESS"
    d.stop()
    assert d.cli("logout").stdout.strip() == "logged out"
    assert not login_file.exists()


def test_a_refused_or_expired_login_says_why(make_daemon: Any, fake_proc: FakeProcess) -> None:
    d = make_daemon(**fake_proc.tidal_env())
    proc, code, _ = begin_login(d)
    fake_proc.approve(code, deny=True)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "refused" in err

    fake_proc.tidal_faults(code_ttl_s=2)
    proc, _, _ = begin_login(d)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "expired" in err, err
    assert d.json("status")["account"] is None


def test_expired_tokens_refresh_once_and_a_refused_refresh_fails_with_auth(
        make_daemon: Any, fake_proc: FakeProcess) -> None:
    d = make_daemon(TIDALQ_MAX_CONCURRENT="4", **fake_proc.tidal_env())
    log_in(d, fake_proc)
    before = len(fake_proc.requests())
    fake_proc.tidal_faults(expire_all_tokens=True)
    ids = d.cli("add", "track", "1001", "1002", "1003", "2001").stdout.split()
    for job_id in ids:
        wait_job(d, job_id)
    refreshes = [r for r in fake_proc.requests()[before:]
                 if r["path"] == "/tidal/auth/v1/oauth2/token"]
    assert len(refreshes) == 1, "four jobs holding an expired token cause one refresh"

    fake_proc.tidal_faults(expire_all_tokens=True, refuse_refresh=True)
    job_id = d.cli("add", "track", "1101").stdout.strip()
    failed = wait_job(d, job_id, "failed")
    assert failed["failureCode"] == "AUTH" and "run tidalq login" in failed["error"]
    assert failed["attempts"] == 1, "a refused login is not retried"
    assert "run tidalq login" in d.cli("status").stdout


def test_a_rate_limit_pauses_the_whole_upstream(make_daemon: Any,
                                                fake_proc: FakeProcess) -> None:
    d = make_daemon(**fake_proc.tidal_env())
    log_in(d, fake_proc)
    fake_proc.tidal_faults(rate_limit=1, retry_after="600")
    first = d.cli("add", "track", "1001").stdout.strip()
    job = wait_job(d, first, "queued")

    def retry_set() -> bool:
        job.update(d.json("show", first))
        return job["failureCode"] == "RATE_LIMITED"

    wait_until(retry_set, 20, "the rate limit recorded")
    assert job["nextRetryAt"] - time.time() * 1000 > 60_000
    before = len(fake_proc.requests())
    second = d.cli("add", "track", "1002").stdout.strip()

    def also_waiting() -> bool:
        return d.json("show", second).get("failureCode") == "RATE_LIMITED"

    wait_until(also_waiting, 20, "the second job held by the same pause")
    asked = [r for r in fake_proc.requests()[before:] if r["path"].startswith("/tidal/v1/")]
    assert asked == [], "no request reaches TIDAL while the upstream is paused"
    assert "tidal rested for" in d.cli("status").stdout


def test_request_pace_spaces_the_api_requests(make_daemon: Any,
                                              fake_proc: FakeProcess) -> None:
    d = make_daemon(**{**fake_proc.tidal_env(), "TIDALQ_REQUEST_PACE": "120"})
    log_in(d, fake_proc)
    start = len(fake_proc.requests())
    wait_job(d, d.cli("add", "album", "100").stdout.strip())
    api = [r for r in fake_proc.requests()[start:] if r["path"].startswith("/tidal/v1/")]
    cdn = [r for r in fake_proc.requests()[start:] if r["path"].startswith("/cdn/")]
    assert len(api) >= 5 and cdn, "the album's API requests and its CDN downloads"
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(api)]
    assert min(gaps) >= 0.45, f"120 a minute is one each 0.5 s: {gaps}"
    for r in api:
        assert r["query"].get("countryCode") == "NO"


def test_the_subscription_decides_the_quality(make_daemon: Any, fake_proc: FakeProcess) -> None:
    d = make_daemon(**fake_proc.tidal_env())
    log_in(d, fake_proc)
    hires = d.cli("add", "track", "6001", "--quality", "HI_RES_LOSSLESS").stdout.strip()
    result = wait_job(d, hires)["result"]
    assert result["quality"] == "HI_RES_LOSSLESS" and result["bitDepth"] == 24
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                            "stream=bits_per_raw_sample,sample_rate", "-of", "json",
                            result["path"]], capture_output=True, text=True, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    assert stream["bits_per_raw_sample"] == "24" and stream["sample_rate"] == "96000"

    fake_proc.tidal_faults(best_quality="LOSSLESS")
    strict = d.cli("add", "track", "6002", "--quality", "HI_RES_LOSSLESS",
                   "--min-quality", "HI_RES_LOSSLESS").stdout.strip()
    assert wait_job(d, strict, "failed")["failureCode"] == "QUALITY_UNAVAILABLE"
    lenient = d.cli("add", "track", "6002", "--quality", "HI_RES_LOSSLESS").stdout.strip()
    assert wait_job(d, lenient)["result"]["quality"] == "LOSSLESS"

    fake_proc.tidal_faults(no_streaming=True)
    blocked = d.cli("add", "track", "1003").stdout.strip()
    failed = wait_job(d, blocked, "failed")
    assert failed["failureCode"] == "AUTH" and "subscription" in failed["error"]


def test_tidal_first_then_hifi_without_a_login(make_daemon: Any, fake_proc: FakeProcess,
                                               tmp_path: Path) -> None:
    env = {**fake_proc.tidal_env(), "TIDALQ_UPSTREAM": "tidal,hifi",
           "TIDALQ_API_URLS": fake_proc.url}
    d = make_daemon(**env)
    assert "claims paused" not in d.cli("status").stdout, "hifi-api serves meanwhile"
    before = len(fake_proc.requests())
    wait_job(d, d.cli("add", "track", "1001").stdout.strip())
    paths = [r["path"] for r in fake_proc.requests()[before:]]
    assert "/info/" in paths and not any(p.startswith("/tidal/v1/") for p in paths)
    refused = d.cli("follow", "favorites", check=False)
    assert refused.returncode == 2 and "not logged in to TIDAL" in refused.stderr

    log_in(d, fake_proc)
    before = len(fake_proc.requests())
    wait_job(d, d.cli("add", "track", "1002").stdout.strip())
    paths = [r["path"] for r in fake_proc.requests()[before:]]
    assert "/tidal/v1/tracks/1002" in paths and "/info/" not in paths


def test_favourites_need_the_tidal_upstream(make_daemon: Any) -> None:
    d = make_daemon()
    refused = d.cli("follow", "favorites", check=False)
    assert refused.returncode == 2 and 'upstream = "tidal"' in refused.stderr
    wrong = d.cli("follow", "favorites", "123", check=False)
    assert wrong.returncode == 2 and "takes no id" in wrong.stderr


def test_claims_paused_cost_no_cpu(make_daemon: Any, fake_proc: FakeProcess) -> None:
    """While not logged in (claims paused), the claim loop waits; it does not spin."""
    d = make_daemon(**fake_proc.tidal_env())
    d.cli("add", "track", "1001")
    assert d.proc is not None

    def cpu_s() -> float:
        fields = Path(f"/proc/{d.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before = cpu_s()
    time.sleep(3)
    assert cpu_s() - before < 0.6, "a paused daemon idles"
    assert d.cli("status", timeout=5).returncode == 0


def test_the_readme_account_commands_run(make_daemon: Any, fake_proc: FakeProcess) -> None:
    """The README's account block, line by line; the person approving is the test."""
    d = make_daemon(**fake_proc.tidal_env())
    ran = []
    for line in readme_blocks("Your own TIDAL account")[0].strip().splitlines():
        words = line.split("#")[0].split()
        assert words[0] == "tidalq", line
        if words[1] == "login":
            log_in(d, fake_proc)
        else:
            d.cli(*words[1:])
        ran.append(words[1])
    assert ran == ["login", "add", "follow", "status", "logout"]


def test_the_client_id_and_secret_are_the_logins(make_daemon: Any, fake_proc: FakeProcess,
                                                 tmp_path: Path) -> None:
    """A secret TIDAL does not know refuses the login; a login belongs to its client id."""
    d = make_daemon(**{**fake_proc.tidal_env(), "TIDALQ_TIDAL_CLIENT_SECRET": "wrong"})
    refused = d.cli("login", check=False)
    assert refused.returncode == 1 and "tidal_client_secret" in refused.stderr
    d.stop()
    other = {**fake_proc.tidal_env(), "TIDALQ_TIDAL_CLIENT_ID": TEST_CLIENT_ID,
             "TIDALQ_TIDAL_CLIENT_SECRET": TEST_CLIENT_SECRET}
    d = make_daemon("other", **other)
    log_in(d, fake_proc)
    saved = json.loads((tmp_path / "state" / "tidal-login.json").read_text())
    assert saved["client_id"] == TEST_CLIENT_ID
    d.stop()
    d = make_daemon("default-client", **fake_proc.tidal_env())
    assert "belongs to another client id" in d.cli("status").stdout


def test_a_failing_renewal_backs_off_and_the_job_is_retried(make_daemon: Any,
                                                            fake_proc: FakeProcess) -> None:
    d = make_daemon(**fake_proc.tidal_env())
    log_in(d, fake_proc)
    fake_proc.tidal_faults(expire_all_tokens=True, refresh_500=1)
    job_id = d.cli("add", "track", "1001").stdout.strip()
    done = wait_job(d, job_id, timeout=90)
    assert done["attempts"] == 2, "the first attempt met the 503, the retry renewed"
    assert "renewal" in d.log() and d.json("status")["account"]["problem"] is None


def test_a_damaged_login_file_is_ignored_not_fatal(make_daemon: Any, fake_proc: FakeProcess,
                                                   tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    for junk in (b"\x00\xffnot json", b'{"access_token": 1}', b"[]", b'{"expires_at": "x"}'):
        (state / "tidal-login.json").write_bytes(junk)
        d = make_daemon(f"junk{len(junk)}", **fake_proc.tidal_env())
        assert "not logged in to TIDAL: run tidalq login" in d.cli("status").stdout
        d.stop()
    d = make_daemon("after", **fake_proc.tidal_env())
    log_in(d, fake_proc)  # a new login replaces the damaged file
    assert stat.S_IMODE((state / "tidal-login.json").stat().st_mode) == 0o600


def test_tidal_answers_that_make_no_sense_fail_the_job_not_the_daemon(
        make_daemon: Any, fake_proc: FakeProcess) -> None:
    d = make_daemon(**{**fake_proc.tidal_env(), "TIDALQ_MAX_ATTEMPTS": "1"})
    log_in(d, fake_proc)
    failed = wait_job(d, d.cli("add", "track", "999999").stdout.strip(), "failed")
    assert failed["failureCode"] == "NOT_FOUND"
    fake_proc.tidal_faults(rate_limit=5, retry_after="soon")  # a Retry-After that is no number
    limited = d.cli("add", "track", "1001").stdout.strip()
    job = wait_job(d, limited, "failed", timeout=120)
    assert job["failureCode"] == "RATE_LIMITED"
    assert d.proc is not None and d.proc.poll() is None
    assert d.cli("status").returncode == 0


async def test_slow_down_makes_the_polling_slower(fake: Any) -> None:
    """TIDAL's `slow_down` (polled faster than its interval) adds five seconds each time;
    the waits are recorded, not slept, so the test takes no time."""
    import asyncio
    from dataclasses import replace

    from tidalq.config import DEFAULT_TIDAL_CLIENT_ID, DEFAULT_TIDAL_CLIENT_SECRET
    from tidalq.upstream.account import AuthServer, wait_for_approval

    fake.upstream.tidal.faults.interval_s = 30.0  # the server wants 30 s between polls
    server = AuthServer(f"{fake.url}/tidal/auth/v1/oauth2", DEFAULT_TIDAL_CLIENT_ID,
                        DEFAULT_TIDAL_CLIENT_SECRET)
    code = replace(await server.start_device_login(), interval=0.01)  # we poll too fast
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:  # the person approves after the third wait
            device = next(iter(fake.upstream.tidal.devices.values()))
            device.approved = True
            device.last_poll = 0.0  # and this poll comes after the server's interval
        await asyncio.sleep(0)

    answer = await wait_for_approval(server, code, sleep=record)
    assert answer["access_token"]
    assert waits[0] == 0.01 and waits[1] == 0.01 and waits[2] == 5.01, waits
