"""Nobody else gets in: a squatted socket folder, a socket of another user, DNS rebinding
against the HTTP API, manifests pointing into the daemon's own network."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import free_port, repo_root, subprocess_env
from tests.test_daemon import start, submit, wait_status
from tidalq.daemon import Daemon
from tidalq.errors import ManifestError
from tidalq.testing.fakeapi import RunningFake
from tidalq.upstream.netguard import AddressPolicy

NOBODY = 65534


def run_tidalq(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tidalq", *args], cwd=repo_root(),
                          env=subprocess_env(**env), capture_output=True, text=True, timeout=60)


def test_the_daemon_refuses_a_socket_folder_made_by_another_user(tmp_path: Path) -> None:
    squatted = tmp_path / "tidalq-0"
    squatted.mkdir(mode=0o777)
    os.chmod(squatted, 0o777)
    os.chown(squatted, NOBODY, NOBODY)
    out = run_tidalq("daemon", "--store", "memory:", "--download-dir", str(tmp_path / "lib"),
                     TIDALQ_SOCKET=str(squatted / "tidalq.sock"),
                     XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    assert out.returncode != 0
    assert "belongs to uid 65534" in out.stderr and "Traceback" not in out.stderr
    assert list(squatted.iterdir()) == []
    assert not (tmp_path / "lib").exists(), "a refused daemon touches nothing"


def test_the_cli_talks_to_no_socket_of_another_user_at_the_default_path(tmp_path: Path) -> None:
    runtime = tmp_path / "xdg"
    (runtime / "tidalq").mkdir(parents=True)
    path = runtime / "tidalq" / "tidalq.sock"
    impostor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    impostor.bind(str(path))
    impostor.listen(4)
    os.chown(path, NOBODY, NOBODY)
    try:
        env = subprocess_env(XDG_RUNTIME_DIR=str(runtime), XDG_CONFIG_HOME=str(tmp_path / "c"))
        env.pop("TIDALQ_SOCKET", None)
        out = subprocess.run([sys.executable, "-m", "tidalq", "add", "track", "1001"],
                             cwd=repo_root(), env=env, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 3 and "belongs to uid 65534" in out.stderr
        impostor.setblocking(False)
        with pytest.raises(BlockingIOError):
            impostor.accept()  # nobody even connected
    finally:
        impostor.close()


# -- HTTP: DNS rebinding ----------------------------------------------------------------------

@pytest.fixture
async def http_daemon(tmp_path: Path, fake: RunningFake) -> AsyncIterator[tuple[Daemon, str]]:
    port = free_port()
    d = await start(tmp_path, fake, http_listen=f"127.0.0.1:{port}",
                    http_allowed_hosts=["music.example.org"])
    yield d, f"http://127.0.0.1:{port}"
    await d.shutdown()


async def test_http_without_a_token_answers_only_its_own_host_names(
        http_daemon: tuple[Daemon, str]) -> None:
    _, base = http_daemon
    port = base.rsplit(":", 1)[1]
    async with aiohttp.ClientSession() as http:
        async def status(host: str) -> int:
            async with http.get(f"{base}/api/download-queue/stats",
                                headers={"Host": host}) as resp:
                return resp.status

        for good in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost",
                     "music.example.org", f"LOCALHOST:{port}"):
            assert await status(good) == 200, good
        for bad in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}",
                    f"localhost:{int(port) + 1}", ""):
            assert await status(bad) == 403, bad
        async with http.post(f"{base}/api/download-queue", headers={"Host": "evil.example"},
                             json={"job": {"type": "track", "trackId": 1001}}) as resp:
            assert resp.status == 403 and "not allowed" in (await resp.json())["error"]


# -- where the daemon connects ----------------------------------------------------------------

def test_link_local_is_always_refused_and_private_only_where_an_upstream_is() -> None:
    loopback = AddressPolicy(["http://127.0.0.1:8080"])
    public = AddressPolicy(["https://hifi.example.org"])
    private = AddressPolicy(["http://192.168.1.20:8000", "https://resources.tidal.com"])
    for policy in (loopback, public, private):
        for url in ("http://169.254.169.254/latest/meta-data", "http://[fe80::1]/x",
                    "http://0.0.0.0/x", "http://[::ffff:169.254.169.254]/x"):
            with pytest.raises(ManifestError):
                policy.check_url(url)
        policy.check_url("https://cdn.example.net/track.flac")
        policy.check_url("http://93.184.216.34/x")
    loopback.check_url("http://127.0.0.1:9/x")
    loopback.check_url("http://localhost:9/x")
    for url in ("http://10.0.0.5/x", "http://192.168.1.1/x"):
        with pytest.raises(ManifestError):
            loopback.check_url(url)
        private.check_url(url)
    for url in ("http://127.0.0.1/x", "http://localhost/x", "http://[::1]/x"):
        with pytest.raises(ManifestError):
            public.check_url(url)


async def test_a_host_name_resolving_into_a_refused_range_is_refused() -> None:
    resolver = AddressPolicy(["https://hifi.example.org"]).resolver()
    try:
        with pytest.raises(ManifestError):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


async def test_a_manifest_pointing_at_a_link_local_address_fails_the_track(
        tmp_path: Path, fake: RunningFake) -> None:
    fake.faults.cdn_base = "http://[fe80::1]:9"  # unroutable without a scope: never sent
    daemon = await start(tmp_path, fake)
    try:
        sock = daemon.settings.socket
        job_id = await submit(sock, {"type": "track", "trackId": 1001})
        failed = await wait_status(sock, job_id, "failed", 20)
        assert failed["failureCode"] == "MANIFEST" and "fe80::1" in failed["error"]
    finally:
        await daemon.shutdown()
