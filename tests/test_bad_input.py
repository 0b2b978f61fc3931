"""Bad input never kills a task, a client or the daemon: hostile media and manifests,
absurd Retry-After, unchecked config values, text that is not Unicode, markup in titles,
odd digits, and a library on two filesystems."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import free_port, repo_root, subprocess_env
from tests.test_daemon import raw, rpc, start, submit, wait_status
from tests.test_pipeline import audio_files, job, make_pipeline, no_report
from tidalq.config import load_settings
from tidalq.daemon import Daemon
from tidalq.errors import ConfigError, IntegrityFailed, ManifestError
from tidalq.jsontext import loads_repaired
from tidalq.media.remux import FlacRemuxer
from tidalq.models import now_ms
from tidalq.store.memory import MemoryStore
from tidalq.testing import media
from tidalq.testing.fakeapi import RunningFake
from tidalq.upstream.http import RETRY_AFTER_LIMIT_S, parse_retry_after
from tidalq.upstream.manifest import parse_mpd


def test_a_trun_claiming_four_billion_samples_fails_at_once() -> None:
    stream = media.FlacStream.for_duration(media.CD, 1, 7)
    tfhd = media.full_box(b"tfhd", 0, 0x020008, struct.pack(">II", 1, 4096))
    trun = media.full_box(b"trun", 0, 0, struct.pack(">I", 2**32 - 1))
    segment = media.box(b"moof", media.box(b"traf", tfhd, trun)) + media.box(b"mdat", b"x" * 4)
    assert len(segment) <= 64
    remux = FlacRemuxer(io.BytesIO())
    remux.feed_init(media.init_segment(stream))
    began = time.monotonic()
    with pytest.raises(IntegrityFailed, match="4294967295 samples"):
        remux.feed_segment(segment)
    assert time.monotonic() - began < 0.5


def test_an_mpd_duration_of_400_digits_is_a_manifest_error() -> None:
    mpd = ('<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" mediaPresentationDuration="PT'
           + "9" * 400 + 'S"><Period><AdaptationSet><Representation id="a" codecs="flac">'
           '<SegmentTemplate timescale="44100" duration="4096" media="s$Number$.mp4" '
           'initialization="i.mp4"/></Representation></AdaptationSet></Period></MPD>')
    with pytest.raises(ManifestError):
        parse_mpd(mpd, "http://127.0.0.1/x/")


def test_retry_after_is_capped_and_odd_digits_are_not_numbers() -> None:
    assert parse_retry_after("99999999") == RETRY_AFTER_LIMIT_S
    assert parse_retry_after("1" + "0" * 22) == RETRY_AFTER_LIMIT_S
    assert parse_retry_after("²") is None
    assert parse_retry_after("120") == 120.0


async def test_a_huge_retry_after_schedules_a_capped_retry(tmp_path: Path,
                                                           fake: RunningFake) -> None:
    fake.faults.rate_limit = 1
    fake.faults.retry_after = "1" + "0" * 22
    daemon = await start(tmp_path, fake, retry_after_max="1h")
    try:
        sock = daemon.settings.socket
        job_id = await submit(sock, {"type": "track", "trackId": 1001})

        async def retry_scheduled() -> bool:
            found = (await rpc(sock, "queue.get", {"id": job_id}))["result"]["job"]
            return found["status"] == "queued" and found["nextRetryAt"] is not None

        from tests.helpers import await_until
        await await_until(retry_scheduled, 10, "a retry scheduled")
        found = (await rpc(sock, "queue.get", {"id": job_id}))["result"]["job"]
        assert found["failureCode"] == "RATE_LIMITED"
        assert found["nextRetryAt"] <= now_ms() + 3600 * 1000 + 5000
    finally:
        await daemon.shutdown()


@pytest.mark.parametrize(("key", "value"), [
    ("retention", float("inf")), ("lease", float("inf")), ("poll_interval", float("nan")),
    ("lease", "0.1s"), ("max_concurrent", "²"), ("max_attempts", "٣"), ("lease", -5),
    ("retention", "1" + "0" * 30), ("drain_timeout", "2d"),
])
def test_config_values_are_finite_and_in_range(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({key: value}, env={})
    assert caught.value.field == key and key in str(caught.value)


def test_a_bad_config_file_stops_the_daemon_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("retention = inf\nmax_concurrent = 4\n")
    out = subprocess.run([sys.executable, "-m", "tidalq", "--config", str(config), "daemon"],
                         cwd=repo_root(), env=subprocess_env(), capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2
    assert "retention" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


class BrokenPurgeStore(MemoryStore):
    async def purge_finished(self, older_than_s: float, batch: int = 500) -> int:
        raise RuntimeError("a bug in retention")


async def test_a_background_task_that_dies_stops_the_daemon(tmp_path: Path,
                                                            fake: RunningFake) -> None:
    settings = load_settings({
        "download_dir": str(tmp_path / "lib"), "socket": str(tmp_path / "run" / "q.sock"),
        "api_urls": [fake.url], "cover_url": fake.url}, env={})
    daemon = Daemon(settings, store=BrokenPurgeStore())
    await daemon.startup()
    try:
        await asyncio.wait_for(daemon.stop_requested.wait(), 10)
        assert daemon.failed
    finally:
        await daemon.shutdown()


# -- text that is not Unicode, markup, odd digits ----------------------------------------------

async def test_a_lone_surrogate_from_a_client_is_refused_and_nothing_breaks(
        tmp_path: Path, fake: RunningFake) -> None:
    daemon = await start(tmp_path, fake, workers=False)
    try:
        sock = daemon.settings.socket
        line = (b'{"jsonrpc":"2.0","id":1,"method":"queue.submit","params":{"job":'
                b'{"type":"track","trackId":1001,"albumTitle":"bad \\ud800 text"}}}\n')
        answer = (await raw(sock, line))[0]
        assert answer["error"]["code"] in (-32700, -32602) and "surrogate" in \
            answer["error"]["message"]
        for bad_id in (b"Infinity", b"NaN", b"1e999"):
            msg = b'{"jsonrpc":"2.0","id":' + bad_id + b',"method":"queue.stats"}\n'
            reply = (await raw(sock, msg))[0]
            assert reply["id"] is None and reply["error"]["code"] == -32700
        listed = await rpc(sock, "queue.list")
        assert listed["result"]["count"] == 0
    finally:
        await daemon.shutdown()


async def test_a_lone_surrogate_from_the_upstream_is_repaired(tmp_path: Path,
                                                              fake: RunningFake) -> None:
    daemon = await start(tmp_path, fake)
    try:
        sock = daemon.settings.socket
        job_id = await submit(sock, {"type": "album", "albumId": 410})
        done = await wait_status(sock, job_id, "completed", 30)
        assert done["trackProgress"][0]["title"] == "Bad \ufffd Text"
        assert "result" in await rpc(sock, "queue.list")
    finally:
        await daemon.shutdown()


@pytest.mark.parametrize("raw, expected", [
    (b'{"t": "bad \\ud800 text"}', {"t": "bad \ufffd text"}),
    (b'{"t": "bad \xed\xa0\x80 text"}', {"t": "bad \ufffd text"}),
    ('{"t": "bad \\udfff"}', {"t": "bad \ufffd"}),
    ('{"t": "pair \\ud83d\\ude00"}'.encode("utf-16"), {"t": "pair \U0001f600"}),
    ('{"t": "bad \ud800"}'.encode("utf-16-le", "surrogatepass"), {"t": "bad \ufffd"}),
    (b'{"n": 1e999, "m": -1e999, "k": NaN, "i": Infinity, "f": 1.5}',
     {"n": None, "m": None, "k": None, "i": None, "f": 1.5}),
    (b'{"fine": ["plain", 1, 2.5, {"\\u00e9": true}]}',
     {"fine": ["plain", 1, 2.5, {"\u00e9": True}]}),
])
def test_upstream_json_is_repaired_whatever_its_form(raw: str | bytes, expected: Any) -> None:
    assert loads_repaired(raw) == expected
    assert json.dumps(loads_repaired(raw), ensure_ascii=False).encode()  # sendable back out


def test_markup_in_titles_and_errors_is_printed_literally(make_daemon: Any) -> None:
    d = make_daemon(TIDALQ_WORKERS="off")
    title = "[/] [untitled] :smile: [bold]x"
    msg = {"jsonrpc": "2.0", "id": 1, "method": "queue.submit",
           "params": {"job": {"type": "track", "trackId": 1001, "trackTitle": title}}}
    import socket as socketlib

    with socketlib.socket(socketlib.AF_UNIX) as s:
        s.connect(str(d.socket))
        s.sendall(json.dumps(msg).encode() + b"\n")
        job_id = json.loads(s.makefile().readline())["result"]["jobIds"][0]
    listed = d.cli("list")
    assert title in listed.stdout
    shown = d.cli("show", job_id)
    assert title in shown.stdout


async def test_http_odd_digits_are_bad_requests(tmp_path: Path, fake: RunningFake) -> None:
    port = free_port()
    daemon = await start(tmp_path, fake, http_listen=f"127.0.0.1:{port}", workers=False)
    base = f"http://127.0.0.1:{port}/api/download-queue"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}?limit=²") as resp:
                assert resp.status == 400
            async with http.get(f"{base}/²") as resp:
                assert resp.status in (400, 404)
            async with http.post(base, json={"job": {"type": "track", "trackId": "²"}}) as resp:
                assert resp.status == 400 and "trackId" in (await resp.json())["error"]
            async with http.post(base, data=b'{"job": {"type": "track", "trackId": NaN}}',
                                 headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == 400
    finally:
        await daemon.shutdown()


# -- a library on two filesystems -------------------------------------------------------------

async def test_an_artist_folder_on_another_filesystem_is_published_by_copy(
        tmp_path: Path, fake: RunningFake) -> None:
    library = tmp_path / "lib"
    artist = library / "Test Artist"
    artist.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(artist)], check=True)
    try:
        async with aiohttp.ClientSession() as session:
            pipe = make_pipeline(session, fake, library)
            tracks = await pipe.run_album_job(job("album", 100), no_report)
        assert [t["status"] for t in tracks] == ["completed"] * 3
        files = audio_files(library)
        assert len(files) == 3
        for path in files:
            subprocess.run(["flac", "-t", "-s", str(path)], check=True, capture_output=True)
        assert not [p for p in artist.rglob(".*tidalq-tmp")]
    finally:
        subprocess.run(["umount", "-l", str(artist)], check=True)
