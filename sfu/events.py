"""What the SFU tells the application about rooms and participants, as typed events."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CloseReason(StrEnum):
    LEFT = "left"  # the participant hung up or its socket went away
    REPLACED = "replaced"  # the same user joined again (rejoin)
    ICE_FAILED = "ice_failed"
    DTLS_FAILED = "dtls_failed"
    CONNECT_TIMEOUT = "connect_timeout"
    ROOM_CLOSED = "room_closed"
    TRANSPORT_CLOSED = "transport_closed"
    PRODUCER_CLOSED = "producer_closed"
    NODE_SHUTDOWN = "node_shutdown"


@dataclass(frozen=True, slots=True)
class ParticipantConnected:
    room_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class ParticipantFailed:
    room_id: str
    user_id: str
    reason: CloseReason


@dataclass(frozen=True, slots=True)
class ParticipantLeft:
    room_id: str
    user_id: str
    reason: CloseReason


@dataclass(frozen=True, slots=True)
class RoomClosed:
    room_id: str
    reason: str


SfuEvent = ParticipantConnected | ParticipantFailed | ParticipantLeft | RoomClosed
