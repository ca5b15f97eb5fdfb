"""Recording a room from the packets the SFU already forwards: no decoding, no encoding.

Each publisher's producer hands every packet it accepts (retransmissions unwrapped from RTX
included, so the recorder gets the repairs the SFU's NACKs bring) to a `RoomRecording` tap: one
queue put, nothing else on the forwarding path. A thread of its own takes the packets, turns
each stream into complete frames (recorder.depacketize: reordering, loss, duplicates, SSRC
changes) and muxes them per participant into a WebM (VP8 + Opus) or Matroska (H.264 + Opus)
file (recorder.mux), flushed as it goes, so a crash leaves a file that plays up to then.

Times: a track's first frame is placed at its arrival time after the recording started (in the
track's RTP clock), later frames at their RTP timestamp distance from it. Audio and video of one
participant therefore start aligned to within the network's jitter; aligning them through the
senders' RTCP sender reports (RFC 3550 6.4.1) is the next step.

When recording starts, each video publisher is asked for a keyframe (PLI), since a file's video
must start on one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recorder.depacketize import EncodedFrame, FrameAssembler
from recorder.mux import RecordingError, RecordingWriter, TrackSpec, h264_size

log = logging.getLogger(__name__)

Tap = Callable[[bytes], None]
_STOP = None


def vp8_size(frame: bytes) -> tuple[int, int]:
    """Width and height from a VP8 keyframe header (RFC 6386 section 9.1); (0, 0) if absent."""
    if len(frame) >= 10 and not frame[0] & 1 and frame[3:6] == b"\x9d\x01\x2a":
        return (int.from_bytes(frame[6:8], "little") & 0x3FFF,
                int.from_bytes(frame[8:10], "little") & 0x3FFF)
    return 0, 0


KEYFRAME_RETRY = 1.0  # seconds between the recorder's keyframe requests for one track


@dataclass
class _Track:
    assembler: FrameAssembler
    clock_rate: int
    first_timestamp: int | None = None
    offset: int = 0  # RTP ticks from the recording's start to the track's first frame
    asked_at: float = float("-inf")  # when the recorder last asked for a keyframe


@dataclass
class _Participant:
    path: Path
    video_codec: str
    writer: RecordingWriter | None = None
    tracks: dict[str, _Track] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordedFile:
    """One participant's file: where it is, its container, frames written per kind."""

    user_id: str
    path: Path
    container: str
    video_frames: int
    audio_frames: int


class RoomRecording:
    """`tap(user, kind, codec, clock_rate, payload_type)` for each producer, then `stop()`
    (blocking: call it off the event loop) for the files. Nothing is written for a participant
    until their first video keyframe; a participant without video (no camera) gets an audio-only
    file from their first packet."""

    def __init__(self, room_id: str, directory: Path, video_codec: str,
                 request_keyframe: Callable[[str], None] | None = None) -> None:
        """`request_keyframe(user_id)` is called (from the recording thread, at most every
        KEYFRAME_RETRY seconds a track) while a video track waits for a keyframe after a loss:
        browsers send keyframes only when asked, so without it the file's video would stop."""
        self.room_id = room_id
        self._request_keyframe = request_keyframe
        self.directory = directory
        self.video_codec = video_codec
        directory.mkdir(parents=True, exist_ok=True)
        # (user, kind, a packet, its arrival), or (user, kind, a new track, 0): in order
        self._queue: queue.SimpleQueue[tuple[str, str, bytes | _Track, float] | None] = (
            queue.SimpleQueue())
        self._participants: dict[str, _Participant] = {}
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"recording-{room_id[:8]}",
                                        daemon=True)
        self._thread.start()
        self.errors = 0
        self.stopped = False

    def tap(self, user_id: str, kind: str, codec: str, clock_rate: int,
            payload_type: int) -> Tap:
        """The callable a producer calls with each accepted plain RTP packet."""
        put = self._queue.put
        track = _Track(FrameAssembler(codec, clock_rate=clock_rate, payload_type=payload_type),
                       clock_rate)
        self._queue.put((user_id, kind, track, 0.0))

        def on_packet(packet: bytes) -> None:
            put((user_id, kind, packet, time.monotonic()))

        return on_packet

    def stop(self) -> list[RecordedFile]:
        """Finish every file and return them (blocks until the thread is done)."""
        if not self.stopped:
            self.stopped = True
            self._queue.put(_STOP)
            self._thread.join()
        files = []
        for user_id, p in self._participants.items():
            if p.writer is not None:
                files.append(RecordedFile(user_id, p.path, p.writer.format,
                                          p.writer.video_frames, p.writer.audio_frames))
        return files

    # ---- the recording thread ----

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            user_id, kind, packet, arrival = item
            try:
                if isinstance(packet, _Track):
                    self._add_track(user_id, kind, packet)
                else:
                    self._on_packet(user_id, kind, packet, arrival)
            except Exception:  # one bad stream must not end the room's recording
                self.errors += 1
                log.exception("room %s: recording %s's %s failed", self.room_id, user_id, kind)
        for p in self._participants.values():
            if p.writer is not None:
                try:
                    p.writer.close()
                except Exception:
                    self.errors += 1
                    log.exception("room %s: closing a recording failed", self.room_id)

    def _add_track(self, user_id: str, kind: str, track: _Track) -> None:
        p = self._participants.get(user_id)
        if p is None:
            suffix = "webm" if self.video_codec == "vp8" else "mkv"
            p = self._participants[user_id] = _Participant(
                self.directory / f"{self.room_id}-{user_id}.{suffix}", self.video_codec)
        p.tracks[kind] = track  # a reconnect's new track replaces the old one

    def _on_packet(self, user_id: str, kind: str, packet: bytes, arrival: float) -> None:
        p = self._participants.get(user_id)
        track = p.tracks.get(kind) if p is not None else None
        if p is None or track is None:
            return
        for frame in track.assembler.push(packet):
            self._write(p, kind, track, frame, arrival)
        if (kind == "video" and track.assembler.waiting_keyframe
                and self._request_keyframe is not None
                and arrival - track.asked_at >= KEYFRAME_RETRY):
            track.asked_at = arrival
            self._request_keyframe(user_id)

    def _write(self, p: _Participant, kind: str, track: _Track, frame: EncodedFrame,
               arrival: float) -> None:
        if track.first_timestamp is None:
            track.first_timestamp = frame.timestamp
            track.offset = round((arrival - self._started) * track.clock_rate)
        pts = frame.timestamp - track.first_timestamp + track.offset
        if kind == "video":
            if p.writer is None:
                if not frame.keyframe:
                    return
                width, height = (vp8_size(frame.data) if frame.codec == "vp8"
                                 else h264_size(frame.data))
                p.writer = RecordingWriter(
                    p.path, TrackSpec(frame.codec, width, height),
                    TrackSpec("opus") if "audio" in p.tracks else None)
            try:
                p.writer.write_video(frame.data, pts, frame.keyframe)
            except RecordingError:
                self.errors += 1
        else:
            if p.writer is None and "video" not in p.tracks:
                # no camera (audio only): the file is audio alone, from the first packet
                p.writer = RecordingWriter(p.path, None, TrackSpec("opus"))
            if p.writer is not None:
                try:
                    p.writer.write_audio(frame.data, pts)
                except RecordingError:
                    self.errors += 1


__all__ = ["RecordedFile", "RoomRecording", "Tap", "vp8_size"]
