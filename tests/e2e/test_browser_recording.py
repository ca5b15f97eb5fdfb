"""Recorded calls in two headless Chromium pages through a real node with recording on: the
caller asks to record, the callee agrees (or not), both call screens say so, and afterwards the
history lists the files, opens them by signed URL and deletes them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest

from tests.e2e.conftest import SERVER_ENV, Pages
from tests.e2e.test_browser_call import DESKTOP, PHONE, check_call_layout, sign_up, wait_media
from tests.napalmsky.served import start_server, stop_server

# Short enough to keep the test quick, long enough for the checks below on a busy machine:
# the caller ends the call before the timer does.
CALL_SECONDS = 30

# The badge is on screen, inside the viewport, and not covered by anything.
BADGE_SEEN = """() => {
  const el = document.getElementById("recorded-mark");
  const r = el.getBoundingClientRect();
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return {width: r.width, height: r.height, inside: r.left >= 0 && r.top >= 0 &&
          r.right <= innerWidth && r.bottom <= innerHeight, onTop: el.contains(hit),
          label: el.getAttribute("aria-label"), text: el.innerText};
}"""


@pytest.fixture
def recording_server(tmp_path: Path) -> Iterator[str]:
    """`napalmsky serve` with calls recorded when both people agree."""
    env = {**SERVER_ENV, "NAPALMSKY_RECORDING": "true"}
    proc, url, _ = start_server(tmp_path, None, **env)
    try:
        yield url
    finally:
        stop_server(proc)


async def invite_asking_to_record(caller: Any, callee: Any, callee_id: str) -> None:
    """The caller ticks "Record this call" and invites; the callee's dialog asks for consent."""
    box = caller.locator("#invite-record")
    await box.wait_for(state="visible", timeout=15_000)  # once the config says recording is on
    assert not await box.is_checked()  # no recording unless asked for
    await box.check()
    person = caller.locator(f"#deck li[data-user-id='{callee_id}']")
    await person.wait_for(timeout=20_000)
    await caller.select_option("#invite-seconds", str(CALL_SECONDS))
    await person.locator(".invite-button").click()
    await callee.locator("#incoming-invite").wait_for(state="visible", timeout=10_000)
    ask = callee.locator("#incoming-record")
    await ask.wait_for(state="visible", timeout=5_000)
    assert "Ada would like to record this call" in await ask.inner_text()
    agree = callee.locator("#accept-record")
    assert await agree.is_visible() and not await agree.is_checked()


async def end_call(caller: Any, callee: Any) -> None:
    await caller.click("#end-call")
    for page in (caller, callee):
        await page.locator("#call-ended").wait_for(state="visible", timeout=15_000)


async def test_a_call_both_agree_to_record_is_recorded_and_deleted(recording_server: str,
                                                                   pages: Pages) -> None:
    url = recording_server
    ada = await pages.new("ada", *PHONE)
    bo = await pages.new("bo", *DESKTOP)
    await sign_up(ada, url, "Ada", "female")
    bo_id = await sign_up(bo, url, "Bo", "male")
    await invite_asking_to_record(ada, bo, bo_id)
    await bo.check("#accept-record")
    await pages.shoot("1-invite-record", bo)
    await bo.click("#accept-invite")

    for page in (ada, bo):
        await page.locator("#call").wait_for(state="visible", timeout=10_000)
        await page.locator("#recorded-mark").wait_for(state="visible", timeout=10_000)
    await asyncio.gather(wait_media(ada), wait_media(bo))
    for page, size in ((ada, PHONE), (bo, DESKTOP)):
        # the call screen's layout holds with the badge on it, and the badge is in plain sight
        await check_call_layout(pages, page, [size])
        badge = await page.evaluate(BADGE_SEEN)
        assert badge["inside"] and badge["onTop"] and badge["width"] > 0, badge
        assert "Recorded" in badge["text"] and "recorded" in (badge["label"] or ""), badge
    await pages.shoot("2-call-recorded")

    await end_call(ada, bo)
    links: dict[str, list[str]] = {}
    for name, page in (("ada", ada), ("bo", bo)):
        await page.click("#history-button")
        item = page.locator("#history li.history-item").first
        await item.wait_for(timeout=10_000)
        # each participant's file, ready once the recorder has written it (the page asks again
        # by itself while a file is being processed)
        ready = item.locator(".history-recordings li.recording[data-status='ready'] "
                             "a.recording-link")
        await ready.nth(1).wait_for(state="visible", timeout=60_000)
        assert await ready.count() == 2
        links[name] = [await a.evaluate("(a) => a.href") for a in await ready.all()]
        assert all("/blobs/" in href for href in links[name]), links
        await pages.shoot("3-history-recordings", page)
    old = urljoin(url, links["bo"][0])
    fetched = await bo.request.get(old)
    assert fetched.status == 200 and len(await fetched.body()) > 0

    # the callee deletes them: gone from the view, and the old signed URL answers 404
    item = bo.locator("#history li.history-item").first
    await item.locator(".delete-recording").click()
    await item.locator(".history-recordings").wait_for(state="hidden", timeout=10_000)
    assert await item.locator("li.recording").count() == 0
    await pages.shoot("4-history-deleted", bo)
    for href in links["bo"]:
        gone = await bo.request.get(urljoin(url, href))
        assert gone.status == 404, (href, gone.status)
    # the caller's history, opened again, has none either
    await ada.click("#history-close")
    async with ada.expect_response(lambda r: r.url.endswith("/recordings")) as listed:
        await ada.click("#history-button")
    assert (await (await listed.value).json())["recordings"] == []
    await ada.locator("#history li.history-item").first.wait_for(timeout=10_000)
    assert not await ada.locator("#history .history-recordings").first.is_visible()
    for page in (ada, bo):
        assert await page.evaluate("window.__csp") == []


async def test_without_the_callees_consent_nothing_is_recorded(recording_server: str,
                                                              pages: Pages) -> None:
    url = recording_server
    ada, bo = await pages.new("ada"), await pages.new("bo")
    await sign_up(ada, url, "Ada", "female")
    bo_id = await sign_up(bo, url, "Bo", "male")
    await invite_asking_to_record(ada, bo, bo_id)
    await bo.click("#accept-invite")  # "I agree to be recorded" left unticked

    for page in (ada, bo):
        await page.locator("#call").wait_for(state="visible", timeout=10_000)
    await asyncio.gather(wait_media(ada), wait_media(bo))
    for page in (ada, bo):
        assert not await page.locator("#recorded-mark").is_visible()
    await pages.shoot("1-call-not-recorded")

    await end_call(ada, bo)
    async with ada.expect_response(lambda r: r.url.endswith("/recordings")) as listed:
        await ada.click("#history-button")
    response = await listed.value
    assert response.status == 200 and (await response.json())["recordings"] == []
    item = ada.locator("#history li.history-item", has_text="Bo")
    await item.wait_for(timeout=10_000)
    assert not await item.locator(".history-recordings").is_visible()
    assert await item.locator("li.recording, .delete-recording").count() == 0
    await pages.shoot("2-history", ada)


async def test_recording_off_shows_no_recording_controls(live_server: str,
                                                        pages: Pages) -> None:
    ada = await pages.new("ada")
    await sign_up(ada, live_server, "Ada", "female")
    config = await ada.request.get(urljoin(live_server, "/api/v1/config"))
    assert (await config.json())["recordingEnabled"] is False
    # the config has been applied: the call lengths are there
    await ada.locator("#invite-seconds option[value='60']").wait_for(state="attached",
                                                                      timeout=15_000)
    assert not await ada.locator("#invite-record").is_visible()
    assert not await ada.locator("#invite-record-field").is_visible()
    await pages.shoot("deck", ada)
