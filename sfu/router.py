"""Router: one room's media. Holds the participants' transports and wires producers to the
other participants' consumers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from core.clock import Clock
from core.errors import NotFound
from sfu.events import (
    CloseReason,
    ParticipantConnected,
    ParticipantFailed,
    ParticipantLeft,
    SfuEvent,
)
from sfu.internals import NetworkConfig, SfuCertificate
from sfu.mux import UdpMux
from sfu.producer import Producer
from sfu.recording import RecordedFile, RoomRecording
from sfu.stats import ForwardLatency, Totals, transport_totals
from sfu.transport import Transport

log = logging.getLogger(__name__)

_FAILURES = {CloseReason.ICE_FAILED, CloseReason.DTLS_FAILED, CloseReason.CONNECT_TIMEOUT}


class Router:
    def __init__(
        self, room_id: str, *, net: NetworkConfig, video_codec: str, clock: Clock,
        emit: Callable[[SfuEvent], None], connect_timeout: float,
        certificate: SfuCertificate | None = None, latency: ForwardLatency | None = None,
        mux: UdpMux | None = None,
    ) -> None:
        self.room_id = room_id
        self.net = net
        self.mux = mux  # the node's shared media port, when NAPALMSKY_RTC_PORT is set
        self.video_codec = video_codec
        self.clock = clock
        self.transports: dict[str, Transport] = {}
        self.closed = False
        self._emit = emit
        self._connect_timeout = connect_timeout
        self.certificate = certificate or SfuCertificate.generateCertificate()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.retired = Totals()  # what closed transports of this room had counted
        self.latency = latency or ForwardLatency()
        self.recording: RoomRecording | None = None
        self.was_recorded = False  # a recording ran in this room (its files may be empty)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `coro` as a task this router owns (cancelled and awaited on close)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("room %s task failed", self.room_id, exc_info=task.exception())

    async def join(self, user_id: str) -> Transport:
        """A transport for `user_id`; an earlier one of the same user is closed (rejoin)."""
        if self.closed:
            raise NotFound("room not found")  # it closed while the join was on its way
        old = self.transports.get(user_id)
        if old is not None:
            await old.close(CloseReason.REPLACED)
        transport = Transport(self, user_id, self.net, self.video_codec, self.clock,
                              self.certificate, self._connect_timeout, self.mux)
        self.transports[user_id] = transport
        for other in self.transports.values():
            if other is not transport:
                for producer in other.producers.values():
                    transport.consumers[producer.kind].attach(producer)
        return transport

    def producer_added(self, transport: Transport, producer: Producer) -> None:
        for other in self.transports.values():
            if other is not transport and not other.closed:
                other.consumers[producer.kind].attach(producer)
        if self.recording is not None:
            self._record(transport.user_id, producer)

    # ---- recording ----

    def start_recording(self, directory: Path) -> RoomRecording:
        """Record every publisher of this room from now on (sfu.recording), into `directory`;
        video publishers are asked for a keyframe so their files can start."""
        if self.recording is None:
            loop = asyncio.get_running_loop()

            def request_keyframe(user_id: str) -> None:  # from the recording thread
                loop.call_soon_threadsafe(self._keyframe_for_recording, user_id)

            self.recording = RoomRecording(self.room_id, directory, self.video_codec,
                                           request_keyframe)
            self.was_recorded = True
            for transport in self.transports.values():
                for producer in transport.producers.values():
                    self._record(transport.user_id, producer)
        return self.recording

    async def stop_recording(self) -> list[RecordedFile]:
        """Stop recording and finish the files (off the event loop); [] when not recording."""
        recording, self.recording = self.recording, None
        if recording is None:
            return []
        for transport in self.transports.values():
            for producer in transport.producers.values():
                producer.recorder = None
        return await asyncio.to_thread(recording.stop)

    def _keyframe_for_recording(self, user_id: str) -> None:
        transport = self.transports.get(user_id)
        producer = transport.producers.get("video") if transport is not None else None
        if producer is not None and not producer.closed:
            producer.request_keyframe(force=True)  # the recorder paces its own asks

    def _record(self, user_id: str, producer: Producer) -> None:
        assert self.recording is not None
        codec = producer.codec
        producer.recorder = self.recording.tap(user_id, producer.kind, codec,
                                               producer.clock_rate, producer.payload_type)
        if producer.kind == "video":
            producer.request_keyframe(force=True)

    def publishing_changed(self, transport: Transport) -> None:
        """Tell the other participants what `transport`'s participant publishes (a partner
        without a camera has no video to show)."""
        message = {"type": "partner", "userId": transport.user_id,
                   "audio": "audio" in transport.publishes, "video": "video" in transport.publishes}
        for other in self.transports.values():
            if other is not transport and not other.closed:
                other.notify(message)

    def partner_message(self, transport: Transport) -> dict[str, object] | None:
        """The `partner` message describing the other participant, for a client joining now."""
        for other in self.transports.values():
            if other is not transport and not other.closed and other.negotiation is not None:
                return {"type": "partner", "userId": other.user_id,
                        "audio": "audio" in other.publishes, "video": "video" in other.publishes}
        return None

    def transport_connected(self, transport: Transport) -> None:
        self._emit(ParticipantConnected(self.room_id, transport.user_id))

    def transport_closed(self, transport: Transport, reason: CloseReason) -> None:
        if self.transports.get(transport.user_id) is transport:
            del self.transports[transport.user_id]
            for other in self.transports.values():
                if not other.closed:
                    other.notify({"type": "partner", "userId": transport.user_id,
                                  "audio": False, "video": False, "left": True})
        self.retired.add(transport_totals(transport))
        if reason in _FAILURES:
            self._emit(ParticipantFailed(self.room_id, transport.user_id, reason))
        elif reason is not CloseReason.ROOM_CLOSED:
            self._emit(ParticipantLeft(self.room_id, transport.user_id, reason))

    def totals(self) -> Totals:
        totals = Totals()
        totals.add(self.retired)
        for transport in self.transports.values():
            totals.add(transport_totals(transport))
        return totals

    async def close(self, reason: CloseReason) -> None:
        if self.closed:
            return
        self.closed = True
        if self.recording is not None:
            await self.stop_recording()
        for transport in list(self.transports.values()):
            await transport.close(reason)
        current = asyncio.current_task()
        # Only transports' closing tasks live here: let them finish rather than cut them short.
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
