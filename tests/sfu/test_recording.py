"""Recording a room through the SFU (sfu.recording) between two aiortc peers: the files decode
with PyAV, start on a keyframe, carry both participants' audio and video in step, and survive
loss and reordering on the way in (repaired by the SFU's NACKs where it can)."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av

from loadtest.bot import BLUE, RED
from tests.sfu.conftest import LOOPBACK, SfuHarness, open_sfu, wait_for
from tests.sfu.test_feedback import call


def disorderly(original: Callable[[Any, bytes, float], None], payload_type: int
               ) -> Callable[[Any, bytes, float], None]:
    """Lose the first copy of every 17th video datagram and swap every 11th with the next (a
    wrapper of `Transport._receive_rtp`: the header is readable before decryption)."""
    seen: set[int] = set()
    held: list[tuple[Any, bytes, float]] = []
    count = 0

    def handler(rx: Any, data: bytes, arrival: float) -> None:
        nonlocal count
        if len(data) >= 12 and data[1] & 0x7F == payload_type:
            seq = struct.unpack_from("!H", data, 2)[0]
            if seq not in seen:
                seen.add(seq)
                count += 1
                if count % 17 == 0:
                    return
                if count % 11 == 0:
                    held.append((rx, data, arrival))
                    return
        original(rx, data, arrival)
        while held:
            original(*held.pop())

    return handler


async def test_a_recorded_call_decodes_in_step_despite_loss_and_reordering(
        sfu: SfuHarness, tmp_path: Path) -> None:
    alice, bob, _, _ = await call(sfu, "rec")  # joined, media flowing
    router = sfu.server.rooms["rec"]
    alice_t = router.transports["alice"]
    video = alice_t.producers["video"]
    alice_t._receive_rtp = disorderly(  # type: ignore[method-assign]
        alice_t._receive_rtp, video.payload_type)
    router.start_recording(tmp_path)
    start_a, start_b = alice.received.video_frames, bob.received.video_frames
    await wait_for(lambda: bob.received.video_frames >= start_b + 60
                   and alice.received.video_frames >= start_a + 60, timeout=30)
    files = {f.user_id: f for f in await router.stop_recording()}
    assert set(files) == {"alice", "bob"}
    for user, recorded in files.items():
        assert recorded.container == "webm" and recorded.path.suffix == ".webm"
        with av.open(str(recorded.path)) as media:
            v, a = media.streams.video[0], media.streams.audio[0]
            assert (v.codec_context.name, a.codec_context.name) == ("vp8", "opus")
            frames = list(media.decode(v))
        with av.open(str(recorded.path)) as media:
            sounds = list(media.decode(media.streams.audio[0]))
        assert len(frames) >= 40, (user, len(frames))
        assert frames[0].key_frame  # the file starts on a keyframe
        assert (frames[0].width, frames[0].height) == (320, 240)
        assert len(sounds) >= 40, (user, len(sounds))
        # audio and video of one participant start together (their first frames arrived
        # within a few tens of milliseconds of each other)
        assert abs(float(frames[0].time) - float(sounds[0].time)) < 0.15, user
        span_video = float(frames[-1].time - frames[0].time)
        span_audio = float(sounds[-1].time - sounds[0].time)
        assert abs(span_video - span_audio) < 0.25, (user, span_video, span_audio)
        assert recorded.video_frames == len(frames)
    # alice's uplink lost packets, repaired by retransmissions the recorder got too
    assert video.rtx_received > 0
    assert router.recording is None


async def test_a_room_not_recorded_writes_nothing(sfu: SfuHarness, tmp_path: Path) -> None:
    _alice, bob, _, _ = await call(sfu, "plain")
    await wait_for(lambda: bob.received.video_frames >= 10)
    router = sfu.server.rooms["plain"]
    assert await router.stop_recording() == []
    assert all(p.recorder is None for t in router.transports.values()
               for p in t.producers.values())
    assert list(tmp_path.iterdir()) == []


async def test_a_publisher_who_reconnects_keeps_one_file_that_plays_through(
        sfu: SfuHarness, tmp_path: Path) -> None:
    alice, bob, _, _ = await call(sfu, "again")  # joined, media flowing
    router = sfu.server.rooms["again"]
    router.start_recording(tmp_path)
    await wait_for(lambda: alice.received.video_frames >= 40)
    # bob's browser reloads: a new connection, new SSRCs, his old one replaced
    await bob.close()
    bob_again = sfu.bot("again", "bob", BLUE)
    await bob_again.join()
    seen = alice.received.video_frames
    await wait_for(lambda: alice.received.video_frames >= seen + 40, timeout=30)
    files = {f.user_id: f for f in await router.stop_recording()}
    with av.open(str(files["bob"].path)) as media:
        frames = list(media.decode(video=0))
    times = [float(f.time) for f in frames]
    assert len(frames) >= 60  # both of bob's sessions are in the one file
    assert times == sorted(times)  # in order across the reconnect
    assert max(b - a for a, b in itertools.pairwise(times)) > 0.05  # the gap is kept


async def test_an_h264_room_records_matroska_without_transcoding(tmp_path: Path) -> None:
    async with open_sfu(LOOPBACK, video_codec="h264") as sfu:
        _alice, bob, _, _ = await call(sfu, "h")
        router = sfu.server.rooms["h"]
        router.start_recording(tmp_path)
        seen = bob.received.video_frames
        await wait_for(lambda: bob.received.video_frames >= seen + 45, timeout=30)
        files = {f.user_id: f for f in await router.stop_recording()}
    recorded = files["alice"]
    assert recorded.container == "matroska" and recorded.path.suffix == ".mkv"
    with av.open(str(recorded.path)) as media:
        assert media.streams.video[0].codec_context.name == "h264"
        assert media.streams.audio[0].codec_context.name == "opus"
        frames = list(media.decode(video=0))
    assert len(frames) >= 30 and frames[0].key_frame
    assert (frames[0].width, frames[0].height) == (320, 240)


async def test_a_loss_the_recorder_cannot_repair_makes_it_ask_for_a_keyframe(
        sfu: SfuHarness, tmp_path: Path) -> None:
    # Browsers send keyframes only when asked: a recording whose video lost a frame for good
    # would stop there unless the recorder asks (PLI) for the next keyframe.
    _alice, bob, _, _ = await call(sfu, "pli")  # joined, media flowing
    router = sfu.server.rooms["pli"]
    router.start_recording(tmp_path)
    video = router.transports["alice"].producers["video"]
    tap = video.recorder
    assert tap is not None
    taken = 0

    def lose_one(packet: bytes) -> None:  # the recorder never gets packet 30 after the start
        nonlocal taken
        taken += 1
        if taken != 30:
            tap(packet)

    video.recorder = lose_one
    asked = video.keyframe_requests
    # the gap is given up once the reorder buffer has waited for a retransmission (about a
    # second here), then the recorder asks; a second later the recording must still run
    await wait_for(lambda: video.keyframe_requests > asked, timeout=30)
    seen = bob.received.video_frames
    await wait_for(lambda: bob.received.video_frames >= seen + 30, timeout=30)
    files = {f.user_id: f for f in await router.stop_recording()}
    with av.open(str(files["alice"].path)) as media:
        frames = list(media.decode(video=0))
    keys = [i for i, f in enumerate(frames) if f.key_frame]
    assert len(keys) >= 2  # the first, and the one asked for after the loss
    assert len(frames) - keys[1] >= 20  # and the video goes on from there


async def test_a_participant_without_a_camera_gets_an_audio_only_file(
        sfu: SfuHarness, tmp_path: Path) -> None:
    from loadtest.bot import Bot

    sfu.server.create_room("voice")
    alice = sfu.bot("voice", "alice", RED)
    bob = Bot(sfu.url, sfu.token("voice", "bob"), camera=False)  # audio only
    sfu.bots.append(bob)
    await alice.join()
    await bob.join()
    await wait_for(lambda: bob.received.audio_frames >= 3 and alice.received.audio_frames >= 3)
    router = sfu.server.rooms["voice"]
    router.start_recording(tmp_path)
    seen = alice.received.audio_frames
    await wait_for(lambda: alice.received.audio_frames >= seen + 60, timeout=30)
    files = {f.user_id: f for f in await router.stop_recording()}
    voice = files["bob"]
    assert voice.video_frames == 0 and voice.audio_frames >= 40
    with av.open(str(voice.path)) as media:
        assert not media.streams.video
        assert media.streams.audio[0].codec_context.name == "opus"
        sounds = sum(1 for _ in media.decode(audio=0))
    assert sounds >= 40
    assert files["alice"].video_frames >= 30  # the other side is recorded as before
