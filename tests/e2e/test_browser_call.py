"""Two headless Chromium users make a real call through a real node: sign-up, deck, invite,
accept, media both ways (checked through getStats), chat, the timer's end, history."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest

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


# The call screen as laid out now: every control inside the viewport with nothing to scroll,
# and the partner's whole picture shown (object-fit contain: the content rect worked out from
# the element's box and the video's intrinsic size lies inside the element, inside the clipping
# video area and inside the viewport); the self-view mirrored and uncropped too.
LAYOUT = """() => {
  const vw = innerWidth, vh = innerHeight, eps = 1;
  const box = (el) => el.getBoundingClientRect();
  const within = (r, o) => r.left >= o.left - eps && r.top >= o.top - eps &&
    r.right <= o.right + eps && r.bottom <= o.bottom + eps;
  const viewport = {left: 0, top: 0, right: vw, bottom: vh};
  const visible = (id) => {
    const el = document.getElementById(id), r = box(el);
    return r.width > 0 && r.height > 0 && within(r, viewport) &&
      document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2) !== null &&
      el.contains(document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2));
  };
  const content = (v) => {  // the rect object-fit: contain draws the picture in
    const r = box(v), s = Math.min(r.width / v.videoWidth, r.height / v.videoHeight);
    const w = v.videoWidth * s, h = v.videoHeight * s;
    return {left: r.left + (r.width - w) / 2, top: r.top + (r.height - h) / 2,
            right: r.left + (r.width + w) / 2, bottom: r.top + (r.height + h) / 2, w, h};
  };
  const remote = document.getElementById("remote-video");
  const local = document.getElementById("local-video");
  const area = box(document.querySelector("#call .videos"));
  const rc = content(remote), lc = content(local), rbox = box(remote);
  const scroller = document.scrollingElement;
  return {
    noScroll: scroller.scrollHeight <= vh && scroller.scrollWidth <= vw,
    controls: ["toggle-mic", "toggle-camera", "end-call"].every(visible),
    timer: visible("time-left"),
    remoteFit: getComputedStyle(remote).objectFit,
    remoteSize: [remote.videoWidth, remote.videoHeight],
    remoteWhole: remote.videoWidth > 0 && within(rc, rbox) && within(rc, area) &&
      within(rc, viewport),
    // as large as fits: the picture spans the video area's width or its height
    remoteFills: Math.abs(rc.w - area.width) <= 2 || Math.abs(rc.h - area.height) <= 2,
    remoteShare: (rc.w * rc.h) / (vw * vh),
    localFit: getComputedStyle(local).objectFit,
    localMirrored: new DOMMatrix(getComputedStyle(local).transform).a < 0,
    localWhole: local.videoWidth > 0 && within(lc, box(local)) && within(box(local), area),
  };
}"""

# A name's whole text is on the card: nothing cut by an ellipsis or by the card's box.
NAME_FITS = """(li) => {
  const el = li.querySelector(".person-name");
  const r = el.getBoundingClientRect(), card = li.getBoundingClientRect();
  return {text: el.innerText, fits: el.scrollWidth <= el.clientWidth &&
          el.scrollHeight <= el.clientHeight + 1 && r.right <= card.right &&
          r.bottom <= card.bottom && getComputedStyle(el).textOverflow !== "ellipsis",
          photo: li.querySelector(".avatar").getBoundingClientRect().width};
}"""

PHONE, DESKTOP = (390, 844), (1280, 800)
# The sizes the call screen is checked at, for each size the call runs at: portrait and
# landscape phones, desktop windows.
ALSO = {PHONE: [(844, 390), (360, 640), (640, 360), PHONE], DESKTOP: [(1024, 600), DESKTOP]}
LONG_NAME = "Bo " + "Wolfeschlegelsteinhausenbergerdorffvoralternwarengewissenhaft"[:47]


async def open_chat(page: Any) -> None:
    """On a phone the chat is a drawer behind the Chat button; beside the video elsewhere."""
    if await page.locator("#chat-toggle").is_visible():
        await page.click("#chat-toggle")
    await page.locator("#chat-input").wait_for(state="visible", timeout=5_000)


async def check_call_layout(pages: Pages, page: Any, sizes: list[tuple[int, int]]) -> None:
    for width, height in sizes:
        await page.set_viewport_size({"width": width, "height": height})
        await page.wait_for_function(
            "([w, h]) => innerWidth === w && innerHeight === h", arg=[width, height])
        await page.wait_for_function(  # the partner's picture is there to measure
            "() => document.getElementById('remote-video').videoWidth > 0")
        layout = await page.evaluate(LAYOUT)
        where = (width, height, layout)
        assert layout["noScroll"] and layout["controls"] and layout["timer"], where
        assert layout["remoteFit"] == "contain" and layout["remoteWhole"], where
        assert layout["remoteFills"], where
        assert layout["localFit"] == "contain" and layout["localMirrored"], where
        assert layout["localWhole"], where
        await pages.shoot("4-call", page)


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
async def test_two_browsers_call_each_other(live_server: str, pages: Pages,
                                            size: tuple[int, int]) -> None:
    width, height = size
    ada, bo = await pages.new("ada", width, height), await pages.new("bo", width, height)
    await ada.goto(live_server)
    await ada.locator("#signup-name").wait_for()
    await pages.shoot("1-signup", ada)
    ada_id = await sign_up(ada, live_server, "Ada", "female")
    bo_id = await sign_up(bo, live_server, LONG_NAME, "male")
    assert ada_id != bo_id

    person = ada.locator(f"#deck li[data-user-id='{bo_id}']")
    await person.wait_for(timeout=20_000)
    # the longest name a user can have is readable on the card, under a large photo
    card = await person.evaluate(NAME_FITS)
    assert card["text"] == LONG_NAME and card["fits"], card
    assert card["photo"] >= 150, card
    await pages.shoot("2-deck", ada)
    # long enough for the checks below on a busy machine; the server's timer ends it
    await ada.select_option("#invite-seconds", "30")
    await person.locator(".invite-button").click()

    dialog = bo.locator("#incoming-invite")
    await dialog.wait_for(state="visible", timeout=10_000)
    assert "Ada" in await dialog.inner_text()
    # the protocol's ISO 8601 times become countdowns: seconds left, never NaN
    countdown = int(await bo.locator("#invite-countdown").inner_text())
    assert 0 < countdown <= 30
    outgoing = await ada.locator("#outgoing-countdown").inner_text()
    assert "NaN" not in outgoing and "s)" in outgoing
    # the cards say it too: a countdown and Cancel on the invited one, Accept/Decline on the
    # inviter's card instead of Invite
    await person.locator(".cancel-button").wait_for(state="visible", timeout=5_000)
    assert not await person.locator(".invite-button").is_visible()
    assert (await person.locator(".person-countdown").inner_text()).endswith(" s")
    inviter = bo.locator(f"#deck li[data-user-id='{ada_id}']")
    await inviter.locator(".accept-button").wait_for(state="attached", timeout=20_000)
    await bo.wait_for_function(
        "(id) => { const li = document.querySelector(`#deck li[data-user-id='${id}']`);"
        " return li && !li.querySelector('.accept-button').hidden &&"
        " !li.querySelector('.decline-button').hidden &&"
        " li.querySelector('.invite-button').hidden; }", arg=ada_id)
    await pages.shoot("3-invite")
    await bo.click("#accept-invite")

    for page in (ada, bo):
        await page.locator("#call").wait_for(state="visible", timeout=10_000)
        left = await page.locator("#time-left").inner_text()
        assert "NaN" not in left and ":" in left, left
    media = await asyncio.gather(wait_media(ada), wait_media(bo))
    assert all(m["framesDecoded"] > 0 and m["audioPackets"] > 0 for m in media)
    # one status for one state, on both sides
    await ada.locator("#call-status", has_text=f"Connected with {LONG_NAME}").wait_for(
        timeout=10_000)
    await bo.locator("#call-status", has_text="Connected with Ada").wait_for(timeout=10_000)

    # the partner sees the mute and the camera going off (over signaling: a disabled track
    # still sends silence and black frames)
    await ada.click("#toggle-mic")
    await ada.click("#toggle-camera")
    await bo.locator("#remote-muted", has_text="Ada is muted").wait_for(timeout=10_000)
    await bo.locator("#remote-no-video", has_text="Ada turned their camera off").wait_for(
        timeout=10_000)
    await pages.shoot("4-call-muted", bo)
    await ada.click("#toggle-mic")
    await ada.click("#toggle-camera")
    await bo.locator("#remote-muted").wait_for(state="hidden", timeout=10_000)
    await bo.locator("#remote-no-video").wait_for(state="hidden", timeout=10_000)

    await open_chat(ada)
    await ada.fill("#chat-input", "hello from Ada")
    await ada.click("#chat-send")
    if await bo.locator("#chat-toggle").is_visible():  # a drawer: the unread count says so
        await bo.locator("#chat-unread", has_text="1").wait_for(timeout=10_000)
    await open_chat(bo)
    await bo.locator("#chat-log li", has_text="hello from Ada").wait_for(timeout=10_000)
    assert await bo.locator("#chat-title").inner_text() == "Chat with Ada"
    await pages.shoot("5-call-chat")
    if await ada.locator("#chat-close").is_visible():
        await ada.click("#chat-close")
    await pages.shoot("4-call", ada)
    await check_call_layout(pages, bo, ALSO[size])

    for page in (ada, bo):  # the server's timer ends the call for both
        await page.locator("#call-ended").wait_for(state="visible", timeout=45_000)
        await page.locator("#call").wait_for(state="hidden", timeout=5_000)
    await pages.shoot("6-after-call")

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
    ada_id = await sign_up(ada, live_server, "Ada", "female")
    bo_id = await sign_up(bo, live_server, "Bo", "male")
    # the invite from the cards: Cancel on the invited one, Accept on the inviter's
    person = ada.locator(f"#deck li[data-user-id='{bo_id}']")
    await person.wait_for(timeout=20_000)
    await person.locator(".invite-button").click()
    inviter = bo.locator(f"#deck li[data-user-id='{ada_id}']")
    await inviter.locator(".accept-button").wait_for(state="visible", timeout=10_000)
    await person.locator(".cancel-button").click()
    await inviter.locator(".invite-button").wait_for(state="visible", timeout=10_000)
    await bo.locator("#incoming-invite").wait_for(state="hidden", timeout=10_000)
    await person.locator(".invite-button").click()
    await inviter.locator(".accept-button").click(timeout=10_000)
    await asyncio.gather(wait_media(ada), wait_media(bo))
    await open_chat(ada)
    await open_chat(bo)
    await ada.fill("#chat-input", "before the reload")
    await ada.click("#chat-send")
    await bo.locator("#chat-log li", has_text="before the reload").wait_for(timeout=10_000)
    await ada.click("#toggle-mic")
    await bo.locator("#remote-muted", has_text="Ada is muted").wait_for(timeout=10_000)

    await bo.reload()  # the socket and the peer connection drop; the grace period runs
    await bo.locator("#call").wait_for(state="visible", timeout=15_000)
    await asyncio.gather(wait_media(bo), wait_media(ada))  # both directions again
    # the chat so far comes back with the resumed call
    await open_chat(bo)
    await bo.locator("#chat-log li", has_text="before the reload").wait_for(timeout=10_000)
    # and so does the partner's mute (state.call.partnerMedia)
    await bo.locator("#remote-muted", has_text="Ada is muted").wait_for(timeout=10_000)
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
        # while the server is away: one clear state, "Reconnecting…", the timer hidden, no
        # banner saying otherwise
        for page in (ada, bo):
            await page.locator("#call-status", has_text="Reconnecting…").wait_for(
                timeout=30_000)
            assert not await page.locator("#time-left-box").is_visible()
            assert not await page.locator("#error").is_visible()
        await pages.shoot("reconnecting")
        proc, _, _ = start_server(tmp_path, port, **env)  # the same node, on the same address
        for page in (ada, bo):
            reason = page.locator("#call-ended-reason")
            await reason.wait_for(state="visible", timeout=60_000)
            text = await reason.inner_text()
            assert "media server hosting the call went away" in text, text
            assert "while you were offline" not in text
    finally:
        stop_server(proc)
