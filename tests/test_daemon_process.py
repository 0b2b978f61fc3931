"""The daemon as a real process: crashes, signals, systemd's protocols, several daemons on
one Redis, Redis going away, hostile clients."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import DaemonProcess, FakeProcess, RedisServer, repo_root, wait_until


def library(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file in the library (staging excluded)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".tidalq" not in p.parts}


def staging_leftovers(root: Path) -> list[Path]:
    staging = root / ".tidalq" / "staging"
    return [p for p in staging.rglob("*") if p.is_file()]


def completed_tracks(d: DaemonProcess, job_id: str) -> int:
    return int(d.json("show", job_id).get("completedTracks", 0))


def test_sigkill_at_several_points_then_restart(make_daemon: Any, fake_proc: FakeProcess,
                                                tmp_path: Path) -> None:
    reference = make_daemon("reference", TIDAL_DOWNLOADS=str(tmp_path / "ref"),
                            TIDALQ_STORE=f"sqlite:///{tmp_path}/ref.db")
    ref_id = reference.cli("add", "album", "200").stdout.strip()
    assert reference.cli("wait", ref_id, "--timeout", "60").returncode == 0
    reference.stop()
    expected = library(tmp_path / "ref")
    assert len(expected) == 5  # four tracks and cover.jpg

    fake_proc.faults(throttle_bps=400_000)  # about 2 s a track
    # A 30 s lease: the restarted daemon must see that the holder died, not wait it out.
    d = make_daemon("victim", TIDALQ_LEASE="30s")
    job_id = d.cli("add", "album", "200").stdout.strip()
    wait_until(lambda: bool(staging_leftovers(tmp_path / "lib")), 10, "a download started")
    d.signal(signal.SIGKILL)  # mid-track
    d.wait_exit()
    d.start()
    wait_until(lambda: completed_tracks(d, job_id) >= 1, 30, "one track done after restart")
    d.signal(signal.SIGKILL)  # between tracks or mid-way through the next
    d.wait_exit()
    restarted = time.monotonic()
    d.start()
    assert d.cli("wait", job_id, "--timeout", "90").returncode == 0
    assert time.monotonic() - restarted < 20, "resumed at once, not after the lease"
    job = d.json("show", job_id)
    assert job["status"] == "completed" and job["completedTracks"] == 4
    assert library(tmp_path / "lib") == expected, "byte-identical to an uninterrupted run"
    assert staging_leftovers(tmp_path / "lib") == []
    assert len(d.json("list")) == 1


def test_sigterm_drains_running_work(make_daemon: Any, fake_proc: FakeProcess) -> None:
    fake_proc.faults(throttle_bps=1_500_000)
    d = make_daemon(TIDALQ_DRAIN_TIMEOUT="20s")
    job_id = d.cli("add", "track", "1001").stdout.strip()
    wait_until(lambda: d.json("show", job_id)["status"] == "processing", 10, "processing")
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0
    d.start()
    assert d.json("show", job_id)["status"] == "completed", "the running track was finished"


def test_sigterm_releases_what_cannot_finish_in_time(make_daemon: Any,
                                                    fake_proc: FakeProcess) -> None:
    fake_proc.faults(throttle_bps=50_000)  # far too slow to finish
    d = make_daemon(TIDALQ_DRAIN_TIMEOUT="1s")
    job_id = d.cli("add", "track", "1001", "--max-attempts", "1").stdout.strip()
    wait_until(lambda: d.json("show", job_id)["status"] == "processing", 10, "processing")
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0 and time.monotonic() - started < 8
    d.start(wait=False)
    wait_until(lambda: d.cli("status", check=False).returncode == 0, 20, "restart")
    d.cli("pause")
    job = d.json("show", job_id)
    assert job["status"] in ("queued", "processing") and job["attempts"] <= 1
    fake_proc.faults(throttle_bps=None)
    d.cli("resume")
    assert d.cli("wait", job_id, "--timeout", "60").returncode == 0, "no attempt was spent"


def test_second_signal_exits_at_once(make_daemon: Any, fake_proc: FakeProcess) -> None:
    fake_proc.faults(throttle_bps=50_000)
    d = make_daemon(TIDALQ_DRAIN_TIMEOUT="60s")
    job_id = d.cli("add", "track", "1001").stdout.strip()
    wait_until(lambda: d.json("show", job_id)["status"] == "processing", 10, "processing")
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    time.sleep(0.3)
    d.signal(signal.SIGTERM)
    assert d.wait_exit(10) == 1 and time.monotonic() - started < 4


def test_sd_notify_and_watchdog(make_daemon: Any, tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(20)
    d = make_daemon(start=False, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="1000000")
    d.start(wait=False)
    seen: list[str] = []
    try:
        while not any("WATCHDOG=1" in m for m in seen) or not any("READY=1" in m for m in seen):
            seen.append(listener.recv(4096).decode())
        assert any(m.startswith("READY=1\nSTATUS=") for m in seen)
        d.signal(signal.SIGTERM)
        while not any("STOPPING=1" in m for m in seen[-5:]):
            seen.append(listener.recv(4096).decode())
        assert d.wait_exit(20) == 0
    finally:
        listener.close()


def test_socket_activation_takes_the_passed_socket(make_daemon: Any, tmp_path: Path) -> None:
    d = make_daemon(start=False)
    d.socket.parent.mkdir(mode=0o700)
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(d.socket))
    listening.listen(8)
    inode = d.socket.stat().st_ino
    fd = listening.fileno()
    # As systemd does: the socket as fd 3, LISTEN_PID naming the daemon's own pid.
    script = (f"LISTEN_PID=$$ LISTEN_FDS=1 exec {sys.executable} -m tidalq daemon "
              f"3<&{fd} {fd}<&-")
    log = d.log_path.open("ab")
    d.proc = subprocess.Popen(["bash", "-c", script], cwd=repo_root(), env=d.env, stdout=log,
                              stderr=subprocess.STDOUT, pass_fds=(fd,))
    log.close()
    listening.close()
    wait_until(d.ready, 20, "socket-activated daemon")
    assert d.socket.stat().st_ino == inode, "the daemon used systemd's socket, not its own"
    job_id = d.cli("add", "track", "1003").stdout.strip()
    assert d.cli("wait", job_id, "--timeout", "60").returncode == 0


def test_two_daemons_on_one_redis_share_the_queue(make_daemon: Any, fake_proc: FakeProcess,
                                                  redis_server: RedisServer,
                                                  tmp_path: Path) -> None:
    store = redis_server.url.replace("/0", "/3")
    subprocess.run(["redis-cli", "-p", str(redis_server.port), "-n", "3", "FLUSHDB"],
                   check=True, capture_output=True)
    a = make_daemon("a", TIDALQ_STORE=store, TIDAL_DOWNLOADS=str(tmp_path / "lib-a"),
                    TIDALQ_MAX_CONCURRENT="3")
    b = make_daemon("b", TIDALQ_STORE=store, TIDAL_DOWNLOADS=str(tmp_path / "lib-b"),
                    TIDALQ_MAX_CONCURRENT="3")
    ids = [str(3001 + i) for i in range(200)]
    jobs = a.cli("add", "track", *ids).stdout.split()
    assert len(jobs) == 200
    assert b.cli("wait", "--timeout", "300", timeout=320).returncode == 0
    stats = a.json("status")["queue"]
    assert stats["completed"] == 200 and stats["failed"] == 0
    files_a = {p.name for p in (tmp_path / "lib-a").rglob("*.flac")}
    files_b = {p.name for p in (tmp_path / "lib-b").rglob("*.flac")}
    assert files_a and files_b, "both daemons did work"
    assert not files_a & files_b and len(files_a | files_b) == 200, "each track exactly once"
    downloads = [r["path"] for r in fake_proc.requests() if r["path"].endswith("track.flac")]
    assert len(downloads) == len(set(downloads)) == 200


def test_redis_outage_is_reported_and_survived(make_daemon: Any, fake_proc: FakeProcess,
                                               tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        fake_proc.faults(throttle_bps=2_000_000)
        d = make_daemon(TIDALQ_STORE=server.url)
        jobs = d.cli("add", "track", *[str(3001 + i) for i in range(12)]).stdout.split()
        wait_until(lambda: d.json("status")["queue"]["completed"] >= 2, 30, "some done")
        server.kill()
        down_at = time.monotonic()
        wait_until(lambda: not d.json("status")["worker"]["storeOk"], 15, "outage reported")
        problem = d.json("status")["worker"]["problem"]
        assert "store unavailable" in problem
        time.sleep(max(0, 10 - (time.monotonic() - down_at)))
        server.start()
        assert d.cli("wait", *jobs, "--timeout", "120", timeout=130).returncode == 0
        status = d.json("status")
        assert status["worker"]["storeOk"] and status["queue"]["completed"] == 12
        assert len(list((tmp_path / "lib").rglob("*.flac"))) == 12
    finally:
        server.stop()


def test_hostile_clients_never_crash_the_daemon(make_daemon: Any) -> None:
    d: DaemonProcess = make_daemon()
    sock_path = str(d.socket)

    def exchange(payload: bytes) -> list[dict[str, Any]]:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(sock_path)
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        finally:
            s.close()
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
        | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                    max_size=4),
        max_leaves=20)
    methods = st.sampled_from(["queue.submit", "queue.list", "queue.get", "queue.cancel",
                               "queue.retry", "queue.remove", "queue.pause", "queue.resume",
                               "queue.wait", "queue.stats", "daemon.hello", "nope", ""])

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(method=methods, params=json_values, request_id=json_values)
    def structured(method: str, params: Any, request_id: Any) -> None:
        if method == "queue.wait" and isinstance(params, dict):
            params = {**params, "timeout": 0.1}
        msg = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        answers = exchange(json.dumps(msg).encode() + b"\n")
        assert len(answers) == 1
        assert "error" in answers[0] or "result" in answers[0]
        if "error" in answers[0]:
            assert isinstance(answers[0]["error"]["code"], int)

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(payload=st.binary(min_size=1, max_size=300))
    def garbage(payload: bytes) -> None:
        for answer in exchange(payload + b"\n"):
            assert "error" in answer

    structured()
    garbage()
    deep = b'{"jsonrpc":"2.0","id":1,"method":"queue.get","params":' + b"[" * 100_000 + b"]" \
        * 100_000 + b"}\n"
    assert "error" in exchange(deep)[0]
    assert "error" in exchange(b"x" * (10 << 20) + b"\n")[0]
    assert "error" in exchange(b'{"jsonrpc":"2.0","id":1,"method":"queue.sta')[0]
    assert d.proc is not None and d.proc.poll() is None
    assert d.json("status")["success"] is True


def test_drain_finishes_the_running_track_and_releases_the_album(
        make_daemon: Any, fake_proc: FakeProcess, tmp_path: Path) -> None:
    fake_proc.faults(throttle_bps=400_000)  # about 2 s a track, one track at a time
    d = make_daemon(TIDALQ_MAX_CONCURRENT="1", TIDALQ_DRAIN_TIMEOUT="20s")
    job_id = d.cli("add", "album", "200", "--max-attempts", "1").stdout.strip()
    wait_until(lambda: bool(staging_leftovers(tmp_path / "lib")), 10, "first track started")
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0
    assert time.monotonic() - started < 6, "stopped after the running track, not the album"
    d.env["TIDALQ_WORKERS"] = "off"  # look at the queue as the drain left it
    d.start()
    job = d.json("show", job_id)
    assert job["status"] == "queued" and job["attempts"] == 0
    assert job["completedTracks"] >= 1 and job["completedTracks"] < 4
    d.signal(signal.SIGTERM)
    d.wait_exit(30)
    del d.env["TIDALQ_WORKERS"]
    fake_proc.faults(throttle_bps=None)
    d.start()
    assert d.cli("wait", job_id, "--timeout", "60").returncode == 0
    assert len(list((tmp_path / "lib").rglob("*.flac"))) == 4
