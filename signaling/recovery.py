"""A node's beat: it vouches for the rooms it hosts, and puts back the live state that a
Redis restart emptied.

Every BEAT seconds the node records in the database that its rooms are up (each call's
`alive_at`: how a call its node lost is recorded as ending then) and looks for its own mark in
live state. A missing mark means live state lost what this node had put there (Redis restarted
empty, or this node just started): the node writes back what must be there for its own sockets
(presence) and its own rooms (each participant's call key, the room's SFU URL, the call's
facts), from the database and its memory, then sets the mark again.
"""

from __future__ import annotations

import logging

from core.live import LiveState
from signaling.calls import BEAT, CallService
from signaling.gateway import Gateway

log = logging.getLogger(__name__)

MARK_TTL = 60.0  # seconds: a node that stops beating stops claiming its live state


class NodeKeeper:
    def __init__(self, *, calls: CallService, gateway: Gateway, live: LiveState,
                 node_id: str) -> None:
        self.calls, self.gateway, self.live = calls, gateway, live
        self.mark = f"node:mark:{node_id}"
        self.interval = BEAT
        self.restores = 0  # how many times live state was found empty and rebuilt

    async def beat(self) -> None:
        """One beat: vouch for the rooms, then check the mark; failures are logged, never
        raised (the next beat tries again)."""
        try:
            await self.calls.vouch()
        except Exception as exc:
            log.warning("vouching for this node's rooms failed: %s",
                        getattr(exc, "message", type(exc).__name__))
        try:
            if await self.live.get(self.mark) is None:
                calls = await self.calls.restore_live()
                sockets = await self.gateway.restore_presence()
                self.restores += 1
                if calls or sockets:
                    log.warning("live state had lost this node's keys: restored %d calls and "
                                "%d sockets", calls, sockets)
            await self.live.set(self.mark, "1", ttl=MARK_TTL)
        except Exception as exc:
            log.warning("checking live state failed: %s",
                        getattr(exc, "message", type(exc).__name__))
