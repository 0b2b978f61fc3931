"""The hifi-api client against the fake upstream over real loopback HTTP."""

from __future__ import annotations

import subprocess
from pathlib import Path

import aiohttp
import pytest

from tidalq.errors import (
    AuthFailed,
    PreviewOnly,
    RateLimited,
    UpstreamNotFound,
    UpstreamUnavailable,
)
from tidalq.media.remux import FlacRemuxer
from tidalq.terms import Quality
from tidalq.testing.fakeapi import RunningFake
from tidalq.upstream.api import UpstreamClient
from tidalq.upstream.http import parse_retry_after
from tidalq.upstream.manifest import DashStream, DirectStream


def client(session: aiohttp.ClientSession, *fakes: RunningFake, **kw: float) -> UpstreamClient:
    return UpstreamClient(session, [f.url for f in fakes], fakes[0].url, **kw)


async def test_track_info_and_version(fake: RunningFake, session: aiohttp.ClientSession) -> None:
    meta = await client(session, fake).track(1002)
    assert meta.full_title == "Second Song (Live)" and meta.album_title == "First Light"
    assert [a.name for a in meta.artists] == ["Test Artist", "Guest Singer"]
    assert meta.artist_name == "Test Artist" and meta.duration_s == 4


@pytest.mark.parametrize("legacy", [False, True])
async def test_playback_shapes(fake: RunningFake, session: aiohttp.ClientSession,
                               legacy: bool, tmp_path: Path) -> None:
    fake.faults.legacy = legacy
    up = client(session, fake)
    served = await up.playback(1001, Quality.LOSSLESS)
    assert isinstance(served.stream, DirectStream) and served.stream.codec == "flac"
    assert served.quality is Quality.LOSSLESS and served.bit_depth == 16
    assert served.replay_gain["albumReplayGain"] == -8.0
    async with session.get(served.stream.url) as resp:
        (tmp_path / "a.flac").write_bytes(await resp.read())
    subprocess.run(["flac", "-t", "-s", str(tmp_path / "a.flac")], check=True)
    aac = await up.playback(1001, Quality.HIGH)
    assert isinstance(aac.stream, DirectStream) and aac.stream.codec == "mp4a.40.2"
    async with session.get(aac.stream.url) as resp:
        (tmp_path / "a.m4a").write_bytes(await resp.read())
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name",
                            "-of", "csv=p=0", str(tmp_path / "a.m4a")],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "aac"


@pytest.mark.parametrize("uri", [False, True])
async def test_hires_dash_remuxes_to_valid_flac(fake: RunningFake, session: aiohttp.ClientSession,
                                                tmp_path: Path, uri: bool) -> None:
    fake.faults.manifest_uri = uri
    up = client(session, fake)
    served = await up.hires(6001)
    assert served is not None and isinstance(served.stream, DashStream)
    assert served.quality is Quality.HI_RES_LOSSLESS and served.stream.sample_rate == 96000
    assert await up.hires(1001) is None  # no hi-res version
    out = tmp_path / "hires.flac"
    with out.open("wb") as fh:
        remux = FlacRemuxer(fh)
        async with session.get(served.stream.init_url) as resp:
            remux.feed_init(await resp.read())
        for url in served.stream.segment_urls:
            async with session.get(url) as resp:
                assert resp.status == 200, url
                remux.feed_segment(await resp.read())
        info = remux.finish()
    assert info.total_samples == 94 * 4096 and info.bits_per_sample == 24
    subprocess.run(["flac", "-t", "-s", str(out)], check=True)


async def test_album_pages_and_discs(fake: RunningFake, session: aiohttp.ClientSession) -> None:
    up = client(session, fake)
    double = await up.album(200)
    assert [(t.disc_number, t.track_number) for t in double.tracks] == \
        [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert double.number_of_volumes == 2
    before = fake.upstream.count("/album/")
    long = await up.album(300)
    assert len(long.tracks) == 210 and fake.upstream.count("/album/") - before == 3
    offsets = [r.query["offset"] for r in fake.upstream.requests if r.path == "/album/"][-3:]
    assert offsets == ["0", "100", "200"]
    fake.faults.legacy = True
    assert len((await up.album(300)).tracks) == 210


async def test_not_found_is_final(fake: RunningFake, fake2: RunningFake,
                                  session: aiohttp.ClientSession) -> None:
    with pytest.raises(UpstreamNotFound) as err:
        await client(session, fake, fake2).track(424242)
    assert not err.value.retryable and err.value.code == "NOT_FOUND"
    assert fake2.upstream.count("/info/") == 0


async def test_preview_only(fake: RunningFake, session: aiohttp.ClientSession) -> None:
    with pytest.raises(PreviewOnly) as err:
        await client(session, fake).playback(5001, Quality.LOSSLESS)
    assert err.value.code == "PREVIEW_ONLY" and not err.value.retryable


async def test_rate_limit_honours_retry_after_and_fails_over(
        fake: RunningFake, fake2: RunningFake, session: aiohttp.ClientSession) -> None:
    fake.faults.rate_limit, fake.faults.retry_after = 1, "7"
    with pytest.raises(RateLimited) as err:
        await client(session, fake).track(1001)
    assert err.value.retry_after_s == 7 and err.value.retryable
    fake.faults.rate_limit = 1
    up = client(session, fake, fake2)
    assert (await up.track(1001)).id == 1001
    assert fake2.upstream.count("/info/") == 1
    await up.track(1001)  # the rate-limited server is skipped until its Retry-After
    assert fake.upstream.count("/info/") == 2 and fake2.upstream.count("/info/") == 2


@pytest.mark.parametrize("fault", ["server_error", "token_error"])
async def test_failover_and_skip_window(fake: RunningFake, fake2: RunningFake,
                                        session: aiohttp.ClientSession, fault: str) -> None:
    setattr(fake.faults, fault, 1)
    up = client(session, fake, fake2, skip_window_s=60)
    assert (await up.track(1001)).id == 1001
    assert (await up.track(1003)).id == 1003
    assert fake.upstream.count("/info/") == 1 and fake2.upstream.count("/info/") == 2
    setattr(fake.faults, fault, 5)
    with pytest.raises(AuthFailed if fault == "token_error" else UpstreamUnavailable) as err:
        await client(session, fake).track(1001)
    assert err.value.retryable


async def test_stalled_server_times_out(fake: RunningFake, fake2: RunningFake,
                                        session: aiohttp.ClientSession) -> None:
    fake.faults.api_stall_s = 3
    up = client(session, fake, fake2, read_timeout_s=0.3)
    assert (await up.track(1001)).id == 1001
    with pytest.raises(UpstreamUnavailable):
        await client(session, fake, read_timeout_s=0.3).track(1001)


async def test_lyrics(fake: RunningFake, session: aiohttp.ClientSession) -> None:
    up = client(session, fake)
    lyrics = await up.lyrics(1001)
    assert lyrics is not None and lyrics.synced and lyrics.synced.startswith("[00:00.50]")
    assert await up.lyrics(1003) is None


async def test_no_upstream_configured(session: aiohttp.ClientSession) -> None:
    with pytest.raises(UpstreamUnavailable, match="api_urls"):
        await UpstreamClient(session, []).track(1)


def test_retry_after_forms() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
