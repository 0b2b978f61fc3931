"""The daemon's own page in a real browser (Debian's chromium, driven by Playwright): add
by link and watch it complete without reloading, a failure's message, cancel, retry and
remove, no console errors, and no sideways scrolling at a phone's 390 px. Screenshots
at 1280 and 390 px are kept in tests/artifacts/."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.helpers import free_port
from tests.test_daemon import rpc, start
from tidalq.daemon import Daemon
from tidalq.testing.fakeapi import RunningFake

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture
async def served(tmp_path: Path, fake: RunningFake) -> AsyncIterator[tuple[Daemon, str]]:
    port = free_port()
    daemon = await start(tmp_path, fake, http_listen=f"127.0.0.1:{port}")
    yield daemon, f"http://127.0.0.1:{port}"
    await daemon.shutdown()


@pytest.fixture
async def page() -> AsyncIterator[tuple[Page, list[str]]]:
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser_path, "chromium is not installed; run scripts/test"
    errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=browser_path,
                                           args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield page, errors
        await browser.close()


async def add(page: Page, link: str) -> None:
    await page.get_by_label("TIDAL link").fill(link)
    await page.get_by_role("button", name="Add", exact=True).click()
    await expect(page.locator("#message")).to_contain_text("added")


async def test_the_page_runs_a_download_and_every_button(
        served: tuple[Daemon, str], page: tuple[Page, list[str]], fake: RunningFake) -> None:
    _, url = served
    browser, errors = page
    ARTIFACTS.mkdir(exist_ok=True)
    await browser.goto(url + "/")
    await expect(browser.locator("#counts")).to_contain_text("queued")
    # paste a link: it shows up and completes, live, without a reload
    await add(browser, "https://tidal.com/browse/album/100")
    done = browser.locator('#history li[data-status="completed"]')
    await expect(done).to_contain_text("Test Artist – First Light", timeout=30_000)
    # a failure shows its message; retry brings it back (and it fails again)
    await add(browser, "tidal.com/browse/track/5001")
    failed = browser.locator('#history li[data-status="failed"]')
    await expect(failed).to_contain_text("preview", timeout=30_000)
    await failed.get_by_role("button", name="Retry").click()
    await expect(browser.locator("#message")).to_contain_text("Retry")
    await expect(failed).to_contain_text("preview", timeout=30_000)
    # a slow album: cancel it while it runs, then remove it
    fake.faults.throttle_bps = 50_000
    await add(browser, "https://listen.tidal.com/album/200")
    running = browser.locator("#running li.job")
    await expect(running).to_contain_text("Double Vision", timeout=30_000)
    await browser.screenshot(path=str(ARTIFACTS / "page-1280.png"), full_page=True)
    await running.get_by_role("button", name="Cancel").click()
    cancelled = browser.locator('#history li[data-status="cancelled"]')
    await expect(cancelled).to_contain_text("Double Vision", timeout=15_000)
    await cancelled.get_by_role("button", name="Remove").click()
    await expect(browser.locator("#history")).not_to_contain_text("Double Vision",
                                                                  timeout=15_000)
    fake.faults.throttle_bps = None
    # a phone: nothing scrolls sideways
    await browser.set_viewport_size({"width": 390, "height": 844})
    await browser.reload()
    await expect(browser.locator("#history")).to_contain_text("First Light")
    width = await browser.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    await browser.screenshot(path=str(ARTIFACTS / "page-390.png"), full_page=True)
    assert errors == []


async def test_the_event_stream_resumes_from_last_event_id(
        served: tuple[Daemon, str]) -> None:
    daemon, url = served
    store = daemon.store
    assert store is not None
    start_id = await store.last_event_id()
    await store.set_queue_paused(True)
    from tidalq.models import JobSpec

    job, _ = await store.submit(JobSpec("track", 1001))
    lines: list[str] = []
    async with aiohttp.ClientSession() as http, http.get(
            url + "/api/events", headers={"Last-Event-ID": start_id}) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for raw in resp.content:
            lines.append(raw.decode().strip())
            if any(job.id in line for line in lines):
                break
    data = next(line for line in lines if job.id in line)
    event: Any = __import__("json").loads(data.removeprefix("data: "))
    assert event["type"] == "submitted" and any(line.startswith("id: ") for line in lines)


async def test_with_a_token_the_page_asks_for_it_once(
        tmp_path: Path, fake: RunningFake, page: tuple[Page, list[str]]) -> None:
    port = free_port()
    daemon = await start(tmp_path, fake, http_listen=f"127.0.0.1:{port}",
                         http_token="s3cret-token")
    browser, _ = page
    try:
        await browser.goto(f"http://127.0.0.1:{port}/")
        dialog = browser.locator("#token-dialog")
        await expect(dialog).to_be_visible()
        await browser.get_by_label("This tidalq asks for its HTTP token").fill("s3cret-token")
        await browser.get_by_role("button", name="Use it").click()
        await expect(browser.locator("#counts")).to_contain_text("queued")
        await add(browser, "https://tidal.com/browse/track/1001")
        await expect(browser.locator('#history li[data-status="completed"]')).to_contain_text(
            "Opening", timeout=30_000)
        await browser.reload()  # the token is kept for the tab: not asked again
        await expect(browser.locator("#counts")).to_contain_text("1 done")
        await expect(dialog).not_to_be_visible()
    finally:
        await daemon.shutdown()


async def test_the_page_follows_the_favourites(tmp_path: Path, fake: RunningFake,
                                               page: tuple[Page, list[str]]) -> None:
    """The Followed section's button, refused before `tidalq login` and taken after."""
    port = free_port()
    d = await start(tmp_path, None, http_listen=f"127.0.0.1:{port}", upstream="tidal",
                    tidal_api_url=f"{fake.url}/tidal/v1", cover_url=fake.url,
                    tidal_auth_url=f"{fake.url}/tidal/auth/v1/oauth2", request_pace=1000,
                    state_dir=str(tmp_path / "state"))
    browser, errors = page
    try:
        await browser.goto(f"http://127.0.0.1:{port}/")
        button = browser.get_by_role("button", name="Follow my TIDAL favourites")
        await button.click()
        await expect(browser.locator("#follow-message")).to_contain_text("not logged in")
        code = (await rpc(d.settings.socket, "account.login"))["result"]["code"]
        async with aiohttp.ClientSession() as http, \
                http.get(f"{fake.url}/tidal/link/{code}") as resp:
            assert resp.status == 200
        waited = await rpc(d.settings.socket, "account.wait", {"timeout": 20})
        assert waited["result"]["state"] == "done"
        fake.upstream.tidal.favourites.albums = [100]
        await button.click()
        await expect(browser.locator("#follow-message")).to_contain_text(
            "following your favourites")
        await expect(browser.locator("#follows")).to_contain_text("favorites TIDAL favourites")
        done = browser.locator('#history li[data-status="completed"]')
        await expect(done).to_contain_text("First Light", timeout=30_000)
        # the refused follow is the one failed request (the browser logs its 400)
        assert [e for e in errors if "status of 400" not in e] == [], errors
    finally:
        await d.shutdown()


async def test_the_page_finds_adds_and_shows_speed(
        served: tuple[Daemon, str], page: tuple[Page, list[str]], fake: RunningFake) -> None:
    """Search, add from a result, an artist's releases and follow, a running album with
    its cover, bytes, speed and ETA, a waiting job moved to the top; 1280 and 390 px, light
    and dark, no console error, no sideways scroll, images from the cover host only."""
    daemon, url = served
    browser, errors = page
    ARTIFACTS.mkdir(exist_ok=True)
    async with aiohttp.ClientSession() as http, http.get(url + "/") as resp:
        policy = resp.headers["Content-Security-Policy"]
    assert policy.endswith(f"img-src 'self' {fake.url}") and "unsafe" not in policy
    await browser.goto(url + "/")
    await expect(browser.locator("#counts")).to_contain_text("queued")
    # find an album by typing and Enter; the results are cards with covers
    await browser.get_by_label("Search TIDAL").fill("first light")
    await browser.get_by_label("Search TIDAL").press("Enter")
    cards = browser.locator("#results li.card")
    await expect(cards).to_have_count(2)
    await expect(cards.first).to_contain_text("Test Artist · 2024 · 3 tracks · LOSSLESS")
    loaded = await cards.first.locator("img.cover").evaluate("i => i.complete && i.naturalWidth")
    assert loaded, "the cover came from the cover host"
    # a slow album, added from its card with the quality chosen: speed and ETA while it runs
    fake.faults.throttle_bps = 40_000  # about 20 s: long enough to look at, even when slow
    await browser.get_by_label("Search TIDAL").fill("double vision")
    await browser.get_by_role("button", name="Search").click()
    await expect(cards).to_have_count(1)
    await browser.get_by_label("Quality to add").select_option("LOSSLESS")
    await cards.first.get_by_role("button", name="Add Double Vision").click()
    await expect(browser.locator("#search-message")).to_contain_text("added Double Vision")
    running = browser.locator("#running li.job")
    await expect(running.locator("summary")).to_have_count(1, timeout=20_000)
    await running.locator("summary").click()
    await expect(running.locator("details ol")).to_contain_text("Side 1 Song 1")
    shown = await running.locator(".meta").first.text_content()
    await expect(running.locator(".meta").first).not_to_have_text(shown or "", timeout=20_000)
    # redrawn with new figures, the row still shows its tracks
    await expect(running.locator("details ol")).to_contain_text("Side 1 Song 1")
    await expect(running).to_contain_text("/s", timeout=20_000)
    await expect(running).to_contain_text("ETA", timeout=20_000)
    await expect(running.locator("img.cover")).to_have_count(1)
    await expect(browser.locator("#speed")).to_contain_text("/s")
    await browser.screenshot(path=str(ARTIFACTS / "find-1280-light.png"), full_page=True)
    # a waiting job moves to the top
    await rpc(daemon.settings.socket, "queue.pause")
    job = (await rpc(daemon.settings.socket, "queue.submit",
                     {"job": {"type": "album", "albumId": 110}}))["result"]["jobIds"][0]
    waiting = browser.locator(f'#waiting li[data-job="{job}"]')
    await waiting.get_by_role("button", name="To top").click()
    await expect(waiting).to_contain_text("high priority")
    await rpc(daemon.settings.socket, "queue.resume")
    # an artist opens its releases; follow it
    await browser.get_by_label("Kind").select_option("artist")
    await browser.get_by_label("Search TIDAL").fill("paging")
    await browser.get_by_label("Search TIDAL").press("Enter")
    await expect(cards).to_have_count(1)
    await cards.first.get_by_role("button", name="Releases of Paging Artist").click()
    await expect(cards.first.locator("ul.releases li")).to_have_count(12)
    await cards.first.get_by_role("button", name="Follow Paging Artist").click()
    await expect(browser.locator("#follows")).to_contain_text("artist")
    fake.faults.throttle_bps = None
    done = browser.locator('#history li[data-status="completed"]')
    await expect(done.filter(has_text="Double Vision")).to_contain_text("MB", timeout=30_000)
    await browser.emulate_media(color_scheme="dark")
    await browser.screenshot(path=str(ARTIFACTS / "find-1280-dark.png"), full_page=True)
    for scheme in ("light", "dark"):
        await browser.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        await browser.set_viewport_size({"width": 390, "height": 844})
        width = await browser.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (scheme, width)
        await browser.screenshot(path=str(ARTIFACTS / f"find-390-{scheme}.png"),
                                 full_page=True)
    assert errors == [], errors
