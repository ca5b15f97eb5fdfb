"""Where a call's media goes: the placement interface signaling uses to open and close rooms
on an SFU node, and to hear what happens to the participants' media.

Single node: the room goes on this node's SFU (LocalPlacement). The cluster work replaces it
with one that picks a node by region and load and routes these calls over the bus.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from core.errors import Unavailable
from sfu.events import ParticipantConnected, ParticipantFailed, ParticipantLeft, SfuEvent
from sfu.recording import RecordedFile
from sfu.server import SfuServer


@dataclass(frozen=True, slots=True)
class PlacedRoom:
    room_id: str
    node_id: str
    sfu_url: str  # where participants open GET /sfu/ws


@dataclass(frozen=True, slots=True)
class MediaEvent:
    room_id: str
    user_id: str
    state: str  # connected | failed | left


MediaListener = Callable[[MediaEvent], None]


class Placement(Protocol):
    async def open_room(self, room_id: str) -> PlacedRoom: ...

    async def close_room(self, room_id: str, reason: str) -> None: ...

    async def start_recording(self, room_id: str) -> None:
        """Record the room's media where it is hosted (both participants agreed)."""
        ...

    def on_media(self, listener: MediaListener) -> None: ...

    def room_ids(self) -> list[str]:
        """The rooms this node's SFU hosts now."""
        ...

    def hosts(self, room_id: str) -> bool: ...

    def url_of(self, room_id: str) -> str:
        """Where participants of a room hosted here open GET /sfu/ws."""
        ...


RecordedHandler = Callable[[str, list[RecordedFile]], Coroutine[Any, Any, None]]


class LocalPlacement:
    """Rooms on this node's own SFU. A recorded room's files go to `recordings` while the call
    runs and to `on_recorded(room_id, files)` once the room closes (to store them)."""

    def __init__(self, sfu: SfuServer | None, node_id: str, public_url: str, *,
                 recordings: Path | None = None,
                 on_recorded: RecordedHandler | None = None) -> None:
        self.sfu = sfu
        self.node_id = node_id
        self.recordings = recordings
        self.on_recorded = on_recorded
        self._finishing: set[asyncio.Task[None]] = set()  # recordings being stored
        self.sfu_url = public_url.replace("http://", "ws://").replace("https://", "wss://")
        self.sfu_url += "/sfu/ws"
        self._listeners: list[MediaListener] = []
        if sfu is not None:
            sfu.subscribe(self._forward)

    async def open_room(self, room_id: str) -> PlacedRoom:
        if self.sfu is None:
            raise Unavailable("this node runs no SFU")
        self.sfu.create_room(room_id)
        return PlacedRoom(room_id, self.node_id, self.sfu_url)

    async def close_room(self, room_id: str, reason: str) -> None:
        if self.sfu is None:
            return
        router = self.sfu.rooms.get(room_id)
        files = await router.stop_recording() if router is not None else []
        await self.sfu.close_room(room_id, reason)
        if router is not None and router.was_recorded and self.on_recorded is not None:
            # Checked and stored in the background: the end of the call is announced now.
            task = asyncio.create_task(self.on_recorded(room_id, files))
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)

    async def start_recording(self, room_id: str) -> None:
        router = self.sfu.rooms.get(room_id) if self.sfu is not None else None
        if router is None or self.recordings is None:
            raise Unavailable("this node cannot record the room")
        router.start_recording(self.recordings)

    def on_media(self, listener: MediaListener) -> None:
        self._listeners.append(listener)

    def room_ids(self) -> list[str]:
        return [] if self.sfu is None else list(self.sfu.rooms)

    def hosts(self, room_id: str) -> bool:
        return self.sfu is not None and room_id in self.sfu.rooms

    def url_of(self, room_id: str) -> str:
        return self.sfu_url

    def _forward(self, event: SfuEvent) -> None:
        if isinstance(event, ParticipantConnected):
            media = MediaEvent(event.room_id, event.user_id, "connected")
        elif isinstance(event, ParticipantFailed):
            media = MediaEvent(event.room_id, event.user_id, "failed")
        elif isinstance(event, ParticipantLeft):
            media = MediaEvent(event.room_id, event.user_id, "left")
        else:
            return
        for listener in list(self._listeners):
            listener(media)
