"""Headless Chromium through the SFU, with its default settings and unusual ones.

Each test is a client shape people have: default Chromium (ECDSA certificate, audio then video),
RSA 2048 and 4096 certificates, video added before audio, no camera at all, a second camera,
a data channel in the offer, H.264 preferred in a VP8 room, an ICE restart that moves the path,
and full quality compared with a direct Chromium-to-Chromium call.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from sfu.twcc import TransportCcFeedback
from tests.sfu.zoo.chromium import ChromiumSfu, decoding, p2p_call, wait_stats, zoo_stats


def both_ways(stats: dict[str, Any]) -> bool:
    return decoding(stats, "video", 15) and decoding(stats, "audio", 25)


async def call(h: ChromiumSfu, room: str, a_opts: dict[str, Any], b_opts: dict[str, Any]
               ) -> tuple[Any, Any]:
    h.server.create_room(room)
    a = await h.join(room, "a", **a_opts)
    b = await h.join(room, "b", **b_opts)
    return a, b


async def test_default_chromium(chromium_sfu: ChromiumSfu) -> None:
    a, b = await call(chromium_sfu, "r", {}, {})
    await wait_stats(a, both_ways)
    stats = await wait_stats(b, both_ways)
    assert stats["transport"]["dtls"] == "connected"
    partner = [m for m in await a.evaluate("zoo.messages") if m["type"] == "partner"]
    assert partner and partner[-1]["video"] and partner[-1]["audio"]


@pytest.mark.parametrize("certificate", ["rsa2048", "rsa4096"])
async def test_rsa_certificates(chromium_sfu: ChromiumSfu, certificate: str) -> None:
    a, b = await call(chromium_sfu, "r", {"cert": certificate}, {"cert": certificate})
    stats = await wait_stats(a, both_ways)
    await wait_stats(b, both_ways)
    assert "RSA" in (stats["transport"]["cipher"] or ""), stats["transport"]


async def test_video_before_audio(chromium_sfu: ChromiumSfu) -> None:
    a, b = await call(chromium_sfu, "r", {"order": ["video", "audio"]}, {})
    answer = await a.evaluate(
        "zoo.messages.find((m) => m.type === 'answer').sdp")
    first_section = answer.split("m=")[1]
    assert first_section.startswith("video") and "a=candidate:" in first_section
    await wait_stats(a, both_ways)
    await wait_stats(b, both_ways)


async def test_no_camera_at_all(chromium_sfu: ChromiumSfu) -> None:
    """An offer with only m=audio: audio both ways, and the partner is told there is no video."""
    h = chromium_sfu
    a, b = await call(h, "r", {"video": False, "order": ["audio"], "receiveMissing": False}, {})
    await wait_stats(a, lambda s: decoding(s, "audio", 25))
    await wait_stats(b, lambda s: decoding(s, "audio", 25))
    offer = await a.evaluate("zoo.lastOffer")
    assert "m=video" not in offer
    transport = h.server.rooms["r"].transports["a"]
    assert set(transport.producers) == {"audio"}
    partner = [m for m in await b.evaluate("zoo.messages") if m["type"] == "partner"]
    assert partner and partner[-1] == {"type": "partner", "userId": "a", "audio": True,
                                       "video": False}


async def test_no_camera_receives_video(chromium_sfu: ChromiumSfu) -> None:
    """The web client's shape without a camera: audio sendrecv, video recvonly."""
    a, b = await call(chromium_sfu, "r", {"video": False}, {})
    await wait_stats(a, both_ways)  # sees and hears b
    await wait_stats(b, lambda s: decoding(s, "audio", 25))
    partner = [m for m in await b.evaluate("zoo.messages") if m["type"] == "partner"]
    assert partner and not partner[-1]["video"]


async def test_a_second_camera_is_rejected(chromium_sfu: ChromiumSfu) -> None:
    h = chromium_sfu
    a, b = await call(h, "r", {"secondVideo": True}, {})
    answer = await a.evaluate("zoo.messages.find((m) => m.type === 'answer').sdp")
    assert answer.count("m=video 0 ") == 1
    first = await wait_stats(b, both_ways)
    await asyncio.sleep(0)
    later = await wait_stats(
        b, lambda s: s["inbound"]["video"]["frames"] > first["inbound"]["video"]["frames"] + 30)
    # one video stream, one SSRC, decoding steadily: nothing of the second camera got mixed in
    assert "video2" not in later["inbound"]
    assert later["inbound"]["video"]["ssrc"] == first["inbound"]["video"]["ssrc"]
    producer = h.server.rooms["r"].transports["a"].producers["video"]
    assert producer.sources == 1


async def test_a_data_channel_in_the_offer(chromium_sfu: ChromiumSfu) -> None:
    a, b = await call(chromium_sfu, "r", {"dataChannel": True}, {})
    answer = await a.evaluate("zoo.messages.find((m) => m.type === 'answer').sdp")
    assert "m=application 0 " in answer
    await wait_stats(a, both_ways)
    await wait_stats(b, both_ways)


async def test_h264_preferred_in_a_vp8_room(chromium_sfu: ChromiumSfu) -> None:
    a, b = await call(chromium_sfu, "r", {"preferVideo": "video/h264"}, {})
    await wait_stats(a, both_ways)
    await wait_stats(b, both_ways)


async def test_ice_restart_moves_the_path(chromium_sfu: ChromiumSfu) -> None:
    h = chromium_sfu
    a, b = await call(h, "r", {}, {})
    await wait_stats(b, both_ways)
    transport = h.server.rooms["r"].transports["a"]
    old = transport.ice.current
    assert old is not None
    old_port = old.connection.local_candidates[0].port
    before = await zoo_stats(a)
    old_ufrag = (await a.evaluate("zoo.lastOffer")).split("a=ice-ufrag:")[1].split()[0]
    assert await a.evaluate("zoo.restartIce()")
    new_offer = await a.evaluate("zoo.lastOffer")
    assert new_offer.split("a=ice-ufrag:")[1].split()[0] != old_ufrag
    answer = [m for m in await a.evaluate("zoo.messages") if m["type"] == "answer"][-1]["sdp"]
    assert f"a=ice-ufrag:{old.local_ufrag}" not in answer  # new local credentials
    # the new session takes over and the old one (its socket) is gone: media now flows
    # on a new path, not on the old one
    deadline = time.monotonic() + 20
    while transport.ice.current is old or not old.closed:
        assert time.monotonic() < deadline, "the restarted ICE session never took over"
        await asyncio.sleep(0.05)
    current = transport.ice.current
    assert current is not None and current.connection.local_candidates[0].port != old_port
    frames = before["inbound"]["video"]["frames"]
    after = await wait_stats(a, lambda s: s["inbound"]["video"]["frames"] > frames + 30)
    await wait_stats(b, lambda s: s["inbound"]["video"]["frames"] > 60)
    assert after["candidatePair"]["remote"] != before["candidatePair"]["remote"]
    assert transport.ice.restarts == 1 and transport.connected


async def sample(page: Any, seconds: float, kind: str = "outbound") -> tuple[float, int, Any]:
    """(bits/s over `seconds`, the encoder's target then, the last stats)."""
    first = await zoo_stats(page)
    await asyncio.sleep(seconds)
    last = await zoo_stats(page)
    video = last[kind]["video"]
    bits = 8 * (video["bytes"] - first[kind]["video"]["bytes"])
    rate = bits / ((last["time"] - first["time"]) / 1000)
    target = last["outbound"]["video"]["target"]
    return rate, target, last


class FeedbackTap:
    """Counts what the SFU's transport-cc feedback to one publisher says: packets reported
    received, and packets reported lost."""

    def __init__(self, transport: Any) -> None:
        self.received = 0
        self.lost = 0
        original = transport.send_rtcp

        def send_rtcp(data: bytes) -> bool:
            if len(data) > 1 and data[1] == 205 and data[0] & 0x1F == 15:
                feedback = TransportCcFeedback.parse(data)
                self.received += sum(1 for d in feedback.deltas if d is not None)
                self.lost += sum(1 for d in feedback.deltas if d is None)
            return bool(original(data))

        transport.send_rtcp = send_rtcp


async def sfu_call_reaches(h: ChromiumSfu, room: str, target: float
                           ) -> tuple[Any, Any, bool, FeedbackTap]:
    """A call through the SFU: the subscriber first, then the measured publisher (so that
    Chrome's start-up bandwidth probes are not sent while another page starts its camera and
    codecs on the same two cores). True when the publisher's encoder target reaches `target`
    within 10 s of its joining. Whatever the outcome, the SFU must not have held it back."""
    h.server.create_room(room)
    d = await h.join(room, "b")
    await wait_stats(d, lambda s: s["state"] == "connected")
    c = await h.join(room, "a")
    transport = h.server.rooms[room].transports["a"]
    tap = FeedbackTap(transport)
    try:
        await wait_stats(c, lambda s: (s["outbound"]["video"]["target"] or 0) >= target,
                         timeout=10.0)
        reached = True
    except AssertionError:
        reached = False
    producer = transport.producers["video"]
    assert producer.transport_cc and producer.remb_bitrate() is None  # no cap on a clean path
    assert tap.lost == 0, (tap.received, tap.lost)
    return c, d, reached, tap


async def test_full_quality_compared_with_a_direct_call(chromium_sfu: ChromiumSfu) -> None:
    """On a clean path, a 640x480 camera through the SFU gets what Chrome picks for it on a
    direct connection (within 20 %, within 10 s of the start): the SFU's feedback must not be
    what holds the publisher back.

    The SFU's part is checked on every attempt: no REMB cap, and transport-cc feedback that
    reports every packet received. Chrome's part, reaching the rate, depends on its start-up
    probes, which CPU contention on this machine can spoil (they then leave in a burst and
    GoogCC ramps at 8 % a second): such an attempt is repeated with new pages, up to three
    in all."""
    h = chromium_sfu
    a, b = await h.page(), await h.page()
    await p2p_call(a, b)
    await wait_stats(a, lambda s: s["outbound"]["video"]["frames"] > 30)
    await asyncio.sleep(6)  # the same 10 s as the SFU call below has
    direct_rate, direct_target, _ = await sample(a, 3.0)
    await h.close_page(a)
    await h.close_page(b)

    for attempt in range(3):
        c, d, reached, tap = await sfu_call_reaches(h, f"q{attempt}", 0.8 * direct_target)
        if reached:
            break
        await h.close_page(c)
        await h.close_page(d)
    assert reached, "Chrome never reached the direct call's rate through the SFU"
    await wait_stats(c, lambda s: s["outbound"]["video"]["frames"] > 60)
    sent_rate, _, sent = await sample(c, 3.0)
    received_rate, _, received = await sample(d, 3.0, kind="inbound")
    assert sent_rate >= 0.8 * direct_rate, (sent_rate, direct_rate)
    assert received_rate >= 0.8 * direct_rate, (received_rate, direct_rate)
    video = sent["outbound"]["video"]
    assert (video["width"], video["height"]) == (640, 480), video
    assert video["limitation"] == "none", video
    assert received["inbound"]["video"]["width"] == 640
    assert tap.received > 300 and tap.lost == 0, (tap.received, tap.lost)


async def test_a_constrained_uplink_adapts_and_recovers(chromium_sfu: ChromiumSfu) -> None:
    """Chrome's estimate follows a 250 kbit/s bottleneck on its way to the SFU (our
    transport-cc feedback shows it the loss and delay), then recovers when it goes."""
    h = chromium_sfu
    h.server.create_room("r")
    b = await h.join("r", "b")
    await wait_stats(b, lambda s: s["state"] == "connected")
    a = await h.join("r", "a")
    # well above the bottleneck first (GoogCC ramps slowly if its start-up probes were spoilt)
    await wait_stats(a, lambda s: (s["outbound"]["video"]["target"] or 0) >= 700_000,
                     timeout=30)
    transport = h.server.rooms["r"].transports["a"]
    original = transport._receive_rtp
    bucket = {"tokens": 0.0, "at": time.monotonic(), "on": True}
    rate = 250_000 / 8

    def bottleneck(rx: Any, data: bytes, arrival: float) -> None:
        if bucket["on"]:  # SRTP (not SRTCP) from the browser
            now = time.monotonic()
            bucket["tokens"] = min(rate * 0.1, bucket["tokens"] + (now - bucket["at"]) * rate)
            bucket["at"] = now
            if bucket["tokens"] < len(data):
                return  # the router's queue is full: the packet is lost
            bucket["tokens"] -= len(data)
        original(rx, data, arrival)

    transport._receive_rtp = bottleneck  # type: ignore[method-assign]
    low = await wait_stats(a, lambda s: (s["outbound"]["video"]["target"] or 1e9) <= 400_000,
                           timeout=30)
    assert low["outbound"]["video"]["limitation"] in ("bandwidth", "none")
    bucket["on"] = False
    # Recovered: well above the bottleneck again (GoogCC climbs about 8 % a second, faster
    # when its probes succeed).
    await wait_stats(a, lambda s: (s["outbound"]["video"]["target"] or 0) >= 700_000,
                     timeout=45)
    await wait_stats(b, lambda s: decoding(s, "video", 100))


async def test_the_web_client_restarts_ice_when_its_path_dies(chromium_sfu: ChromiumSfu) -> None:
    """The web client's own media code: when the path to the SFU goes dead (here the SFU's
    sockets of the connection close under it), the client restarts ICE on the same socket
    within a few seconds and media comes back, without a new join."""
    await web_client_restarts_ice_when_its_path_dies(chromium_sfu)


async def test_the_web_client_restarts_ice_on_one_port(
        chromium_sfu_one_port: ChromiumSfu) -> None:
    """The same on one shared UDP port (NAPALMSKY_RTC_PORT): the restart's session shares the
    port with the dead one."""
    await web_client_restarts_ice_when_its_path_dies(chromium_sfu_one_port)


async def web_client_restarts_ice_when_its_path_dies(h: ChromiumSfu) -> None:
    h.server.create_room("w")
    a = await h.client("w", "a")
    b = await h.join("w", "b")
    await wait_stats(b, both_ways)
    transport = h.server.rooms["w"].transports["a"]
    old = transport.ice.current
    assert old is not None
    # The network under this path goes away: nothing in, nothing out (STUN included).
    for protocol in old.connection._protocols:
        protocol.datagram_received = lambda data, addr: None
        protocol.send_stun = lambda message, addr: None
    old.send = lambda data: False  # type: ignore[method-assign]
    deadline = time.monotonic() + 30
    while transport.ice.restarts < 1 or transport.ice.current is old:
        assert time.monotonic() < deadline, await a.evaluate("window.client.events")
        assert not transport.closed
        await asyncio.sleep(0.1)
    offers = [m for m in await a.evaluate("window.client.sent") if '"offer"' in m]
    assert len(offers) == 2  # the first offer and the ICE restart's, on the same socket
    assert h.server.rooms["w"].transports["a"] is transport  # no new join
    frames = (await zoo_stats(b))["inbound"]["video"]["frames"]
    await wait_stats(b, lambda s: s["inbound"]["video"]["frames"] > frames + 30)


async def test_one_port_call_and_ice_restart(
        chromium_sfu_one_port: ChromiumSfu) -> None:
    """Every connection on one shared UDP port (NAPALMSKY_RTC_PORT): a call, then an ICE
    restart (new ufrag; Chromium gathers new sockets): the new session on the same shared port
    takes over, the old one leaves the demultiplexer, media goes on."""
    h = chromium_sfu_one_port
    mux = h.server.mux
    port = h.server.config.net.shared_port
    assert mux is not None
    a, b = await call(h, "r", {}, {})
    await wait_stats(a, both_ways)
    await wait_stats(b, both_ways)
    answers = [m["sdp"] for page in (a, b) for m in await page.evaluate("zoo.messages")
               if m["type"] == "answer"]
    assert answers and all(f"127.0.0.1 {port} typ host" in sdp for sdp in answers)
    assert mux.session_count == 2 and mux.stray_datagrams == 0
    transport = h.server.rooms["r"].transports["a"]
    old = transport.ice.current
    assert old is not None and old.mux_session is not None
    old_session = old.mux_session
    remote = old.remote_address()
    assert remote is not None and mux.session_for(remote) is old_session
    before = await zoo_stats(a)
    assert await a.evaluate("zoo.restartIce()")
    deadline = time.monotonic() + 20
    while transport.ice.current is old or not old.closed:
        assert time.monotonic() < deadline, "the restarted ICE session never took over"
        await asyncio.sleep(0.05)
    current = transport.ice.current
    assert current is not None and current.mux_session is not None
    assert current.connection.local_candidates[0].port == port
    frames = before["inbound"]["video"]["frames"]
    await wait_stats(a, lambda s: s["inbound"]["video"]["frames"] > frames + 30)
    frames_b = (await zoo_stats(b))["inbound"]["video"]["frames"]
    await wait_stats(b, lambda s: s["inbound"]["video"]["frames"] > frames_b + 30)
    assert old_session.closed and not old_session.addresses
    assert mux.session_for(current.remote_address() or ("", 0)) is current.mux_session
    assert mux.session_for(remote) is current.mux_session  # the old address passed on too
    assert mux.session_count == 2
    assert transport.ice.restarts == 1 and transport.connected
