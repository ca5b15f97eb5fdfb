"""Presence in live state: who is online (any tab counts), available, or in a call.

Keys (all with TTLs, so a node that dies leaves nothing behind for long):
- `presence:conns:{user}`: a set of the user's connection ids, each member expiring;
- `presence:online`: a set of online user ids, each member expiring (the deck reads it);
- `presence:busy:{user}`: "1" while the user does not want calls;
- `call:user:{user}`: the room id of the call the user is in (claimed atomically).
- `presence:viewers:{user}`: who was shown the user on their deck lately, each member expiring.
Changes are published on the `presence` channel, addressed to the user's viewers only, for the
gateways to pass on; a user who set themselves unavailable is announced once (going
unavailable), not on every connect and disconnect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from core.live import Bus, LiveState

PRESENCE_TTL = 600.0
PRESENCE_CHANNEL = "presence"
VIEWER_TTL = 60.0  # seconds a deck viewer keeps hearing about the people it was shown


@dataclass(frozen=True, slots=True)
class PresenceState:
    user_id: str
    online: bool
    available: bool
    in_call: str | None

    def to_json(self) -> dict[str, object]:
        return {"userId": self.user_id, "online": self.online, "available": self.available,
                "inCall": self.in_call is not None}


def call_key(user_id: str) -> str:
    return f"call:user:{user_id}"


class Presence:
    def __init__(self, live: LiveState, bus: Bus, ttl: float = PRESENCE_TTL) -> None:
        self.live = live
        self.bus = bus
        self.ttl = ttl

    async def connect(self, user_id: str, conn_id: str) -> None:
        await self.live.set_add(f"presence:conns:{user_id}", conn_id, self.ttl)
        await self.live.set_add("presence:online", user_id, self.ttl)
        await self.publish(user_id)

    async def heartbeat(self, user_id: str, conn_id: str) -> None:
        await self.live.set_add(f"presence:conns:{user_id}", conn_id, self.ttl)
        await self.live.set_add("presence:online", user_id, self.ttl)

    async def disconnect(self, user_id: str, conn_id: str) -> bool:
        """Drop one connection; True when it was the user's last one (now offline)."""
        await self.live.set_remove(f"presence:conns:{user_id}", conn_id)
        if await self.live.set_members(f"presence:conns:{user_id}"):
            return False
        await self.live.set_remove("presence:online", user_id)
        await self.publish(user_id)
        return True

    async def is_online(self, user_id: str) -> bool:
        return bool(await self.live.set_members(f"presence:conns:{user_id}"))

    async def online_users(self) -> set[str]:
        return await self.live.set_members("presence:online")

    async def set_available(self, user_id: str, available: bool) -> None:
        if available:
            await self.live.delete(f"presence:busy:{user_id}")
        else:
            await self.live.set(f"presence:busy:{user_id}", "1", ttl=self.ttl)
        await self.publish(user_id, force=True)

    async def record_viewers(self, viewer_id: str, shown: list[str]) -> None:
        """`viewer_id` was shown these users on its deck: it hears of their changes."""
        for user_id in shown:
            await self.live.set_add(f"presence:viewers:{user_id}", viewer_id, VIEWER_TTL)

    async def current_call(self, user_id: str) -> str | None:
        return await self.live.get(call_key(user_id))

    async def state(self, user_id: str) -> PresenceState:
        online = await self.is_online(user_id)
        busy = await self.live.get(f"presence:busy:{user_id}") is not None
        return PresenceState(user_id, online, online and not busy,
                             await self.current_call(user_id))

    async def publish(self, user_id: str, *, force: bool = False) -> None:
        """Announce `user_id`'s state to the sockets that can see it (its deck viewers)."""
        state = await self.state(user_id)
        if state.online and not state.available and state.in_call is None and not force:
            return  # set unavailable: their comings and goings are nobody's business
        viewers = await self.live.set_members(f"presence:viewers:{user_id}")
        if not viewers:
            return
        await self.bus.publish(PRESENCE_CHANNEL,
                               json.dumps({"to": sorted(viewers), "state": state.to_json()}))
