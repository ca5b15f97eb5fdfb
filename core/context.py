"""Logging context carried by contextvars: request, user, room and node ids.

Set them where the id becomes known; the log formatter adds whatever is set to each record.
"""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
user_id: ContextVar[str | None] = ContextVar("user_id", default=None)
room_id: ContextVar[str | None] = ContextVar("room_id", default=None)
node_id: ContextVar[str | None] = ContextVar("node_id", default=None)

ALL: dict[str, ContextVar[str | None]] = {
    "request_id": request_id,
    "user_id": user_id,
    "room_id": room_id,
    "node_id": node_id,
}


def current() -> dict[str, str]:
    """The context ids that are set, by name."""
    return {name: value for name, var in ALL.items() if (value := var.get()) is not None}
