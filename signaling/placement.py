"""Where a call's media goes: the placement interface signaling uses to open and close rooms
on an SFU node, and to hear what happens to the participants' media.

Single node: the room goes on this node's SFU (LocalPlacement). The cluster work replaces it
with one that picks a node by region and load and routes these calls over the bus.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from core.errors import Unavailable
from sfu.events import ParticipantConnected, ParticipantFailed, ParticipantLeft, SfuEvent
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

    def on_media(self, listener: MediaListener) -> None: ...

    def room_ids(self) -> list[str]:
        """The rooms this node's SFU hosts now."""
        ...

    def hosts(self, room_id: str) -> bool: ...

    def url_of(self, room_id: str) -> str:
        """Where participants of a room hosted here open GET /sfu/ws."""
        ...


class LocalPlacement:
    def __init__(self, sfu: SfuServer | None, node_id: str, public_url: str) -> None:
        self.sfu = sfu
        self.node_id = node_id
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
        if self.sfu is not None:
            await self.sfu.close_room(room_id, reason)

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
