"""Unattended: follows checked by one daemon each interval, against a catalogue that
changes while the daemon runs; hooks, a webhook and apprise notifications to real HTTP
receivers."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import RedisServer
from tests.helpers import await_until
from tests.test_daemon import rpc, start, submit, wait_status
from tidalq.daemon import Daemon
from tidalq.testing.catalog import PAGING_ARTIST, PLAYLIST
from tidalq.testing.fakeapi import RunningFake


async def follows(d: Daemon) -> list[dict[str, Any]]:
    return list((await rpc(d.settings.socket, "follows.list"))["result"]["follows"])


async def jobs(d: Daemon) -> list[dict[str, Any]]:
    return list((await rpc(d.settings.socket, "queue.list", {"limit": 1000}))["result"]["jobs"])


async def until_checked(d: Daemon, times: int, timeout: float = 20) -> dict[str, Any]:
    async def checked() -> bool:
        return all(f["checks"] >= times for f in await follows(d))

    await await_until(checked, timeout, f"{times} checks")
    return (await follows(d))[0]


async def test_following_an_artist_downloads_only_what_is_new(tmp_path: Path,
                                                              fake: RunningFake) -> None:
    d = await start(tmp_path, fake, follow_interval="1s")
    try:
        added = (await rpc(d.settings.socket, "follows.add",
                           {"kind": "artist", "id": PAGING_ARTIST}))["result"]
        assert added["created"]
        first = await until_checked(d, 1)
        assert first["lastOutcome"] == "ok: 0 submitted" and len(first["seen"]) == 9
        assert await jobs(d) == [], "following starts from now"
        fake.upstream.catalog.new_release(PAGING_ARTIST, "EPSANDSINGLES", 712)

        async def new_album_done() -> bool:
            found = [j for j in await jobs(d) if j["job"].get("albumId") == 712]
            return bool(found) and found[0]["status"] == "completed"

        await await_until(new_album_done, 30, "the new release downloaded")
        assert [j["job"]["albumId"] for j in await jobs(d)] == [712]
        again = (await rpc(d.settings.socket, "follows.add",
                           {"kind": "artist", "id": PAGING_ARTIST}))["result"]
        assert not again["created"]
    finally:
        await d.shutdown()


async def test_following_a_playlist_keeps_it_and_its_m3u8_current(
        tmp_path: Path, fake: RunningFake) -> None:
    d = await start(tmp_path, fake, follow_interval="1s")
    try:
        await rpc(d.settings.socket, "follows.add",
                  {"kind": "playlist", "id": PLAYLIST, "backfill": True})
        await until_checked(d, 1)
        first = (await jobs(d))[0]
        await wait_status(d.settings.socket, first["id"], "completed", 60)
        playlist = fake.upstream.catalog.playlists[PLAYLIST]
        playlist.items.remove(1002)  # an entry leaves…
        playlist.items.append(1101)  # …and one arrives

        async def second_done() -> bool:
            found = [j for j in await jobs(d) if j["job"]["type"] == "playlist"]
            return len(found) == 2 and found[0]["status"] == "completed"

        await await_until(second_done, 30, "the changed playlist fetched")
        library = d.settings.download_dir
        m3u8 = (library / "Playlists" / "Road Trip _ Mix.m3u8").read_text()
        assert "Second Song (Live)" not in m3u8 and "[110]" in m3u8
        assert any(p.name.startswith("02 - Second Song") for p in library.rglob("*.flac")), \
            "what left the playlist stays in the library"
    finally:
        await d.shutdown()


async def test_a_failing_check_is_reported_and_retried(tmp_path: Path,
                                                       fake: RunningFake) -> None:
    d = await start(tmp_path, fake, follow_interval="1s")
    try:
        await rpc(d.settings.socket, "follows.add", {"kind": "mix", "id": "deadbeef"})
        failed = await until_checked(d, 2)
        assert failed["lastOutcome"].startswith("failed:") and failed["failures"] >= 2
        assert failed["nextCheckAt"] > failed["lastCheckAt"]
        removed = (await rpc(d.settings.socket, "follows.remove", {"id": failed["id"][:12]}))
        assert removed["result"]["removed"] == failed["id"] and await follows(d) == []
    finally:
        await d.shutdown()


async def test_two_daemons_on_one_redis_check_a_follow_once_each_time(
        tmp_path: Path, fake: RunningFake, redis_server: RedisServer) -> None:
    store = f"{redis_server.url[:-1]}{4}"
    from redis import Redis

    Redis.from_url(store).flushdb()
    first = await start(tmp_path / "a", fake, store=store, follow_interval="1s")
    second = await start(tmp_path / "b", fake, store=store, follow_interval="1s")
    try:
        await rpc(first.settings.socket, "follows.add", {"kind": "artist", "id": 77})
        checked = await until_checked(second, 6, 40)
        lookups = sum(1 for r in fake.upstream.requests
                      if r.path == "/artist/" and r.query.get("id") == "77")
        assert lookups in (checked["checks"], checked["checks"] + 1), \
            "each check ran on one daemon (one more may be under way)"
    finally:
        await first.shutdown()
        await second.shutdown()


# -- notifications -----------------------------------------------------------------------------

@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[tuple[str, Any]]]]:
    got: list[tuple[str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        got.append((request.path, await request.json()))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"127.0.0.1:{port}", got
    await runner.cleanup()


async def test_hooks_webhook_and_apprise_hear_every_end(
        tmp_path: Path, fake: RunningFake,
        receiver: tuple[str, list[tuple[str, Any]]]) -> None:
    host, got = receiver
    out = tmp_path / "hook.log"
    hook = [sys.executable, "-c",
            "import json,os,sys;job=json.load(sys.stdin);"
            f"open({str(out)!r},'a').write(os.environ['TIDALQ_STATUS']+' '"
            "+os.environ['TIDALQ_JOB_ID']+' '+job['id']+'\\n')"]
    d = await start(tmp_path, fake, on_complete=hook, on_fail=hook,
                    webhook_url=f"http://{host}/hook", notify_urls=[f"json://{host}/apprise"])
    try:
        sock = d.settings.socket
        album = await submit(sock, {"type": "album", "albumId": 100})
        bad = await submit(sock, {"type": "track", "trackId": 5001})
        await wait_status(sock, album, "completed", 30)
        await wait_status(sock, bad, "failed", 30)

        async def all_heard() -> bool:
            lines = out.read_text().splitlines() if out.exists() else []
            return len(lines) == 2 and len([g for g in got if g[0] == "/hook"]) == 2 \
                and any(g[0] == "/apprise" for g in got)

        await await_until(all_heard, 20, "every notification")
        assert sorted(out.read_text().splitlines()) == sorted(
            [f"completed {album} {album}", f"failed {bad} {bad}"])
        hooks = {g[1]["id"]: g[1]["status"] for g in got if g[0] == "/hook"}
        assert hooks == {album: "completed", bad: "failed"}
        message = next(g[1] for g in got if g[0] == "/apprise")
        assert message["message"] == "Test Artist – First Light: 3 tracks, FLAC 16/44.1"
    finally:
        await d.shutdown()


def test_hook_config_must_be_an_argv_list() -> None:
    from tidalq.config import load_settings
    from tidalq.errors import ConfigError

    with pytest.raises(ConfigError, match="on_complete"):
        load_settings({"on_complete": "rm -rf /"}, env={})
    assert load_settings({"on_fail": ["/bin/true"]}, env={}).on_fail == ("/bin/true",)
    assert json.dumps(uuid.uuid4().hex)  # keep imports honest
