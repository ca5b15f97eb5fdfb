"""Two headless Chromium users make a real call through a real node: sign-up, deck, invite,
accept, media both ways (checked through getStats), chat, the timer's end, history."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import SERVER_ENV, Pages
from tests.napalmsky.served import start_server, stop_server
from tests.services import free_port

STATS = """async () => {
  const pc = window.napalmsky && window.napalmsky.pc;
  if (!pc) return null;
  const out = {framesDecoded: 0, audioPackets: 0, state: pc.connectionState};
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') out.framesDecoded += s.framesDecoded || 0;
    if (s.type === 'inbound-rtp' && s.kind === 'audio') out.audioPackets += s.packetsReceived || 0;
  });
  return out;
}"""


async def sign_up(page: Any, url: str, name: str, gender: str) -> str:
    await page.goto(url)
    await page.fill("#signup-name", name)
    await page.select_option("#signup-gender", gender)
    await page.click("#signup-submit")
    me = page.locator("#me[data-user-id]")
    await me.wait_for(timeout=15_000)
    return str(await me.get_attribute("data-user-id"))


async def stats(page: Any) -> dict[str, Any] | None:
    result: dict[str, Any] | None = await page.evaluate(STATS)
    return result


async def wait_media(page: Any, timeout: float = 20) -> dict[str, Any]:
    """Until this page decodes the partner's video (and it keeps growing) and gets audio."""
    deadline = time.monotonic() + timeout
    first: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        now = await stats(page)
        if now and now["framesDecoded"] > 0 and now["audioPackets"] > 0:
            if first is None:
                first = now
            elif now["framesDecoded"] > first["framesDecoded"]:
                return now
        await asyncio.sleep(0.25)
    raise AssertionError(f"no media decoded: {await stats(page)}")


async def invite_and_accept(caller: Any, callee: Any, callee_id: str, seconds: int) -> None:
    """The caller invites the callee from the deck for `seconds`; the callee accepts."""
    person = caller.locator(f"#deck li[data-user-id='{callee_id}']")
    await person.wait_for(timeout=20_000)
    await caller.select_option("#invite-seconds", str(seconds))
    await person.locator(".invite-button").click()
    await callee.locator("#incoming-invite").wait_for(state="visible", timeout=10_000)
    await callee.click("#accept-invite")


async def test_two_browsers_call_each_other(live_server: str, pages: Pages) -> None:
    ada, bo = await pages.new("ada"), await pages.new("bo")
    ada_id = await sign_up(ada, live_server, "Ada", "female")
    bo_id = await sign_up(bo, live_server, "Bo", "male")
    assert ada_id != bo_id

    person = ada.locator(f"#deck li[data-user-id='{bo_id}']")
    await person.wait_for(timeout=20_000)
    await ada.select_option("#invite-seconds", "15")
    await person.locator(".invite-button").click()

    dialog = bo.locator("#incoming-invite")
    await dialog.wait_for(state="visible", timeout=10_000)
    assert "Ada" in await dialog.inner_text()
    # the protocol's ISO 8601 times become countdowns: seconds left, never NaN
    countdown = int(await bo.locator("#invite-countdown").inner_text())
    assert 0 < countdown <= 30
    outgoing = await ada.locator("#outgoing-countdown").inner_text()
    assert "NaN" not in outgoing and "s)" in outgoing
    await bo.click("#accept-invite")

    for page in (ada, bo):
        await page.locator("#call").wait_for(state="visible", timeout=10_000)
        left = await page.locator("#time-left").inner_text()
        assert "NaN" not in left and ":" in left, left
    media = await asyncio.gather(wait_media(ada), wait_media(bo))
    assert all(m["framesDecoded"] > 0 and m["audioPackets"] > 0 for m in media)

    await ada.fill("#chat-input", "hello from Ada")
    await ada.click("#chat-send")
    await bo.locator("#chat-log li", has_text="hello from Ada").wait_for(timeout=10_000)

    for page in (ada, bo):  # the server's timer ends the call for both
        await page.locator("#call-ended").wait_for(state="visible", timeout=30_000)
        await page.locator("#call").wait_for(state="hidden", timeout=5_000)

    for page, partner in ((ada, "Bo"), (bo, "Ada")):
        await page.click("#history-button")
        item = page.locator("#history li.history-item", has_text=partner)
        await item.wait_for(timeout=10_000)
        assert "hello from Ada" in await item.inner_text()
    # the whole call ran under the service's Content-Security-Policy without a violation
    for page in (ada, bo):
        assert await page.evaluate("window.__csp") == []
        policy = await page.evaluate(
            "fetch('/').then((r) => r.headers.get('content-security-policy'))")
        assert policy and "script-src 'self'" in policy


async def test_a_reload_mid_call_resumes_it(live_server: str, pages: Pages) -> None:
    ada, bo = await pages.new("ada"), await pages.new("bo")
    await sign_up(ada, live_server, "Ada", "female")
    bo_id = await sign_up(bo, live_server, "Bo", "male")
    await invite_and_accept(ada, bo, bo_id, 60)
    await asyncio.gather(wait_media(ada), wait_media(bo))
    await ada.fill("#chat-input", "before the reload")
    await ada.click("#chat-send")
    await bo.locator("#chat-log li", has_text="before the reload").wait_for(timeout=10_000)

    await bo.reload()  # the socket and the peer connection drop; the grace period runs
    await bo.locator("#call").wait_for(state="visible", timeout=15_000)
    await asyncio.gather(wait_media(bo), wait_media(ada))  # both directions again
    # the chat so far comes back with the resumed call
    await bo.locator("#chat-log li", has_text="before the reload").wait_for(timeout=10_000)
    assert not await ada.locator("#call-ended").is_visible()

    await bo.click("#end-call")
    for page in (ada, bo):
        ended = page.locator("#call-ended")
        await ended.wait_for(state="visible", timeout=10_000)


NO_CAMERA = """(() => {
  const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (constraints) => {
    if (constraints && constraints.video) {
      return Promise.reject(new DOMException("Requested device not found", "NotFoundError"));
    }
    return original(constraints);
  };
})();"""


async def test_a_partner_without_a_camera_is_shown_as_such(live_server: str,
                                                          pages: Pages) -> None:
    """A user with a microphone and no camera: the partner hears them, is told there is no
    video, and they still see the partner."""
    ada, bo = await pages.new("ada"), await pages.new("bo")
    await ada.add_init_script(NO_CAMERA)
    await sign_up(ada, live_server, "Ada", "female")
    bo_id = await sign_up(bo, live_server, "Bo", "male")
    await invite_and_accept(ada, bo, bo_id, 60)
    note = bo.locator("#remote-no-video")
    await note.wait_for(state="visible", timeout=15_000)
    assert "Ada has no camera" in await note.inner_text()
    seen = await wait_media(ada)  # Ada sees and hears Bo
    assert seen["framesDecoded"] > 0
    deadline = time.monotonic() + 15
    while True:  # Bo hears Ada
        heard = await stats(bo)
        if heard and heard["audioPackets"] > 25:
            break
        assert time.monotonic() < deadline, heard
        await asyncio.sleep(0.25)
    assert not await ada.locator("#remote-no-video").is_visible()
    await bo.click("#end-call")
    await bo.locator("#call-ended").wait_for(state="visible", timeout=10_000)


async def test_a_call_cut_by_a_node_crash_is_told_as_such(tmp_path: Path, pages: Pages) -> None:
    """The node dies mid-call and comes back: both pages reconnect and say the media server
    went away, with how long the call really lasted, not that it ended while they were away."""
    port = free_port()
    env = {**SERVER_ENV, "NAPALMSKY_NODE_ID": "e2e-node"}
    proc, url, _ = start_server(tmp_path, port, **env)
    try:
        ada, bo = await pages.new("ada"), await pages.new("bo")
        await sign_up(ada, url, "Ada", "female")
        bo_id = await sign_up(bo, url, "Bo", "male")
        await invite_and_accept(ada, bo, bo_id, 300)
        await asyncio.gather(wait_media(ada), wait_media(bo))
        stop_server(proc, signal.SIGKILL)
        proc, _, _ = start_server(tmp_path, port, **env)  # the same node, on the same address
        for page in (ada, bo):
            reason = page.locator("#call-ended-reason")
            await reason.wait_for(state="visible", timeout=60_000)
            text = await reason.inner_text()
            assert "media server hosting the call went away" in text, text
            assert "while you were offline" not in text
    finally:
        stop_server(proc)
