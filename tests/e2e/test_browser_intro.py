"""Intro videos in headless Chromium against a real node: recorded with the (fake) camera or
chosen as a file, uploaded with a progress bar, processed by the node's worker, shown to their
owner and played from other people's deck cards; a file that isn't a video gets a message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from tests.e2e.conftest import Pages
from tests.e2e.test_browser_call import DESKTOP, NAME_FITS, PHONE, sign_up
from tests.recorder.samples import make_video

TRANSCODE_MS = 60_000  # a busy 2-core machine transcodes a short clip in seconds

# The owner's <video>: a signed source and poster, and a picture the browser decoded.
PLAYABLE = """() => {
  const v = document.getElementById("intro-video");
  return !!v && !v.hidden && !!v.getAttribute("src") && v.readyState >= 2 && v.videoWidth > 0;
}"""

# The upload's progress bar reached its end.
UPLOADED = """() => {
  const p = document.getElementById("intro-upload-progress");
  return p.value === p.max && p.max > 0;
}"""

# A card's inline intro: created on demand, playing (or at least a decoded picture).
CARD_PLAYING = """(li) => {
  const v = li.querySelector("video.intro-card-video");
  return !!v && !!v.getAttribute("src") && (v.currentTime > 0 || v.readyState >= 2) &&
    v.videoWidth > 0;
}"""


async def wait_intro_ready(pages: Pages, page: Any) -> None:
    """After an upload began: the bar fills, "Processing…" shows, then the playable video."""
    await page.wait_for_function(UPLOADED, timeout=30_000)
    await page.locator("#intro-status", has_text="Processing").wait_for(timeout=30_000)
    await pages.shoot("3-intro-processing", page)
    await page.locator("#intro-video").wait_for(state="visible", timeout=TRANSCODE_MS)
    await page.wait_for_function(PLAYABLE, timeout=30_000)
    video = page.locator("#intro-video")
    assert (await video.get_attribute("src") or "").strip()
    assert (await video.get_attribute("poster") or "").strip()
    assert await page.locator("#intro-error").is_hidden()
    assert await page.locator("#intro-upload").is_hidden()
    await pages.shoot("4-intro-ready", page)


async def check_deck_intro(pages: Pages, url: str, ada_id: str) -> None:
    """Someone else's deck: Ada's card shows her poster and plays her intro on demand."""
    bo = await pages.new("bo", *DESKTOP)
    await sign_up(bo, url, "Bo", "male")
    card = bo.locator(f"#deck li[data-user-id='{ada_id}']")
    await card.wait_for(timeout=20_000)
    poster = card.locator("img.intro-poster")
    await poster.wait_for(timeout=20_000)
    await bo.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=await poster.element_handle(),
        timeout=15_000)
    play = card.locator("button.intro-play")
    await play.wait_for(state="visible", timeout=5_000)
    assert (await play.inner_text()).strip() == "Play intro"
    assert "Ada" in (await play.get_attribute("aria-label") or "")
    # no video is loaded before it is asked for
    assert await card.locator("video").count() == 0
    info = await card.evaluate(NAME_FITS)
    assert info["text"] == "Ada" and info["fits"] and info["photo"] >= 150, info
    await pages.shoot("5-deck-poster", bo)

    await play.focus()  # by keyboard
    await bo.keyboard.press("Enter")
    await bo.wait_for_function(CARD_PLAYING, arg=await card.element_handle(), timeout=30_000)
    assert await card.locator("video.intro-card-video").count() == 1
    assert (await play.inner_text()).strip() == "Stop intro"
    await pages.shoot("6-deck-playing", bo)
    await play.click()  # stop: the poster is back and the video gone
    await card.locator("img.intro-poster").wait_for(timeout=5_000)
    assert await card.locator("video").count() == 0
    assert (await play.inner_text()).strip() == "Play intro"
    assert await bo.evaluate("window.__csp") == []


async def test_record_an_intro_with_the_camera(live_server: str, pages: Pages) -> None:
    ada = await pages.new("ada", *PHONE)
    ada_id = await sign_up(ada, live_server, "Ada", "female")
    await ada.locator("#intro-section").wait_for(state="visible", timeout=10_000)
    assert await ada.locator("#intro-video").is_hidden()  # nothing uploaded yet
    await pages.shoot("1-intro-empty", ada)

    await ada.click("#intro-record")
    await ada.locator("#intro-stop").wait_for(state="visible", timeout=10_000)
    await ada.wait_for_function(
        "() => document.getElementById('intro-preview').videoWidth > 0", timeout=10_000)
    # about three seconds of the fake camera, by the on-screen countdown
    await ada.wait_for_function(
        "() => Number(document.getElementById('intro-countdown').textContent) <= 57",
        timeout=15_000)
    await pages.shoot("2-intro-recording", ada)
    await ada.click("#intro-stop")
    await wait_intro_ready(pages, ada)
    assert await ada.locator("#intro-record").is_visible()
    assert await ada.locator("#intro-recorder").is_hidden()
    await check_deck_intro(pages, live_server, ada_id)
    assert await ada.evaluate("window.__csp") == []


async def test_upload_an_intro_file(live_server: str, pages: Pages, tmp_path: Path) -> None:
    clip = make_video(tmp_path / "intro.webm", seconds=2)
    ada = await pages.new("ada", *PHONE)
    ada_id = await sign_up(ada, live_server, "Ada", "female")
    await ada.set_input_files("#intro-file", str(clip))
    await wait_intro_ready(pages, ada)

    # a reload shows the intro as it stands
    await ada.reload()
    await ada.locator("#intro-video").wait_for(state="visible", timeout=15_000)
    await ada.wait_for_function(PLAYABLE, timeout=30_000)
    await check_deck_intro(pages, live_server, ada_id)


async def test_a_file_that_is_not_a_video_gets_a_readable_message(
        live_server: str, pages: Pages, tmp_path: Path) -> None:
    fake = tmp_path / "holiday.mp4"  # a PNG under a video's name (sent as video/mp4)
    Image.new("RGB", (64, 64), (200, 40, 40)).save(fake, format="PNG")
    ada = await pages.new("ada", *PHONE)
    await sign_up(ada, live_server, "Ada", "female")
    await ada.set_input_files("#intro-file", str(fake))
    error = ada.locator("#intro-error")
    await error.wait_for(state="visible", timeout=20_000)
    text = (await error.inner_text()).strip()
    assert text and text[0].isupper() and text.endswith("."), text
    assert "{" not in text and "unsupported_media_type" not in text, text
    assert await ada.locator("#intro-video").is_hidden()
    assert await ada.locator("#intro-video").get_attribute("src") is None
    assert await ada.locator("#intro-upload").is_hidden()
    assert not await ada.locator("#intro-file").is_disabled()  # ready for another try
    await pages.shoot("intro-refused", ada)

    # over 50 MB is refused before anything is sent
    big = tmp_path / "long.webm"
    with big.open("wb") as f:
        f.truncate(50 * 1024 * 1024 + 1)
    await ada.set_input_files("#intro-file", str(big))
    await ada.locator("#intro-error", has_text="50 MB").wait_for(timeout=10_000)
    assert await ada.locator("#intro-upload").is_hidden()
    assert await ada.evaluate("window.__csp") == []
