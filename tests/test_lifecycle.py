"""`wait` reports what was just added, a removed job, and a stopping daemon truthfully;
Ctrl-C exits 130; a refused peer can read why, every time."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.helpers import DaemonProcess, wait_until
from tests.test_daemon import rpc, start, submit
from tidalq.config import load_settings
from tidalq.daemon import Daemon
from tidalq.protocol import ErrorCode
from tidalq.store.memory import MemoryStore
from tidalq.testing.fakeapi import RunningFake


def test_add_and_wait_fails_when_what_was_added_failed_before_wait_connected(
        make_daemon: Any) -> None:
    d: DaemonProcess = make_daemon()
    job_id = d.cli("add", "track", "5001").stdout.strip()  # preview only: fails at once
    wait_until(lambda: d.json("show", job_id)["status"] == "failed", 20, "the job failed")
    out = d.cli("wait", "--json", check=False)
    assert out.returncode == 1
    assert [j["id"] for j in json.loads(out.stdout)["jobs"]] == [job_id]
    # reported once: the next bare wait covers only what is new
    assert d.cli("wait", check=False).returncode == 0
    cancelled = d.cli("add", "track", "1001", "--priority", "low").stdout.strip()
    d.cli("cancel", cancelled, check=False)
    good = d.cli("add", "track", "1002").stdout.strip()
    out = d.cli("wait", "--json", "--timeout", "60", check=False)
    assert out.returncode == 0, out.stdout
    assert good in [j["id"] for j in json.loads(out.stdout)["jobs"]]


async def test_wait_for_a_job_removed_meanwhile_fails(tmp_path: Path, fake: RunningFake) -> None:
    settings = load_settings({
        "download_dir": str(tmp_path / "lib"), "socket": str(tmp_path / "run" / "q.sock"),
        "workers": False}, env={})
    store = MemoryStore()
    daemon = Daemon(settings, store=store)
    await daemon.startup()
    try:
        sock = settings.socket
        job_id = await submit(sock, {"type": "track", "trackId": 1001})
        waiting = asyncio.create_task(rpc(sock, "queue.wait", {"ids": [job_id]}))
        await asyncio.sleep(0.3)
        await store.cancel(job_id)  # the memory store does both without yielding
        await store.remove(job_id)
        answer = (await asyncio.wait_for(waiting, 10))["result"]
        assert answer["missing"] == [job_id] and answer["jobs"] == []
    finally:
        await daemon.shutdown()


def test_clients_waiting_when_the_daemon_stops_hear_it_and_it_logs_no_traceback(
        make_daemon: Any) -> None:
    d: DaemonProcess = make_daemon()
    d.cli("pause")
    job_id = d.cli("add", "track", "1001").stdout.strip()
    waiter = d.cli_process("wait", job_id, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watcher = d.cli_process("watch", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # the listener, the waiter and the watcher's event stream
    wait_until(lambda: d.connections() >= 3, 15, "both clients connected")
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0
    _, wait_err = waiter.communicate(timeout=20)
    assert waiter.returncode == 3 and "stopped" in wait_err
    watcher.communicate(timeout=20)
    assert watcher.returncode == 3
    assert "Traceback" not in d.log()


def test_ctrl_c_in_wait_exits_130_quietly(make_daemon: Any) -> None:
    d: DaemonProcess = make_daemon()
    d.cli("pause")
    job_id = d.cli("add", "track", "1001").stdout.strip()
    waiter = d.cli_process("wait", job_id, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: d.connections() >= 2, 15, "wait connected")
    waiter.send_signal(signal.SIGINT)
    _, err = waiter.communicate(timeout=20)
    assert waiter.returncode == 130 and "Aborted" not in err


async def test_a_refused_peer_always_reads_why(tmp_path: Path, fake: RunningFake) -> None:
    """The client connects, waits until the daemon has refused it, then sends: the answer
    is still there to read (before, the daemon hung up and the send broke the pipe)."""
    run_dir = Path(tempfile.mkdtemp(prefix="tidalq-peer-", dir="/tmp"))
    d = await start(tmp_path, fake, socket=str(run_dir / "s" / "tidalq.sock"))
    try:
        sock = d.settings.socket
        for path in (run_dir, sock.parent):
            os.chmod(path, 0o755)
        os.chmod(sock, 0o777)
        code = ("import os,socket,time;os.setgid(65534);os.setuid(65534);"
                "s=socket.socket(socket.AF_UNIX);"
                f"s.connect({str(sock)!r});time.sleep(0.5);"
                "s.sendall(b'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"queue.stats\"}\\n');"
                "print(s.makefile().readline())")
        for _ in range(3):
            out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code],
                                          capture_output=True, text=True, timeout=20)
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["error"]["code"] == ErrorCode.FORBIDDEN
    finally:
        await d.shutdown()
        shutil.rmtree(run_dir, ignore_errors=True)
