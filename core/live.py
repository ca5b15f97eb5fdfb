"""Ports for live state (keys with a time to live) and the message bus.

Both have an in-process implementation (single node, the embedded default) and a Redis one
(many nodes). Keys and channels are plain strings chosen by the caller; implementations may add
a namespace prefix of their own. Values and messages are text (JSON by convention).
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from core.ids import NodeId, UserId


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket as one `LiveState.take` left it."""

    allowed: bool
    """True when the unit was taken (or, for a peek, would have been)."""
    used: float
    """Units in use after the call: 0 for an idle bucket, up to the capacity it was called with."""
    retry_after: float
    """Seconds until a take at the same capacity would be allowed; 0 when `allowed`."""


class LiveState(Protocol):
    async def get(self, key: str) -> str | None:
        """The value of `key`, or None when it is absent or expired."""
        ...

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        """Store `value` under `key`, replacing any value; it expires after `ttl` seconds."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove `key`; True when it existed."""
        ...

    async def expire(self, key: str, ttl: float) -> bool:
        """Give an existing key a new time to live; False when the key is absent."""
        ...

    async def ttl(self, key: str) -> float | None:
        """Seconds left for `key`; None when absent or when it never expires."""
        ...

    async def claim(self, key: str, value: str, ttl: float) -> bool:
        """Atomically set `key` only if it is absent (set-if-absent). True when this call won."""
        ...

    async def release(self, key: str, expected: str) -> bool:
        """Atomically delete `key` only if its value is `expected` (compare-and-delete)."""
        ...

    async def pop(self, key: str) -> str | None:
        """Atomically read and delete `key`: of racing callers exactly one gets the value."""
        ...

    async def incr(self, key: str, window: float) -> tuple[int, float]:
        """Count one hit in a fixed window of `window` seconds that starts at the first hit.

        Returns the count so far in the window and the seconds until the window resets.
        """
        ...

    async def take(self, key: str, interval: float, capacity: float, *,
                   peek: bool = False) -> Bucket:
        """Take one unit from the token bucket `key`, atomically (GCRA: one stored value).

        The bucket regains one unit every `interval` seconds and holds up to `capacity` units
        in use; a take that would exceed `capacity` is refused and changes nothing. Callers may
        pass different capacities for the same key (a larger one lets a unit be taken "on
        credit", which later normal takes must wait out). With `peek` nothing is taken: the
        answer says whether a take would be allowed. An idle bucket's key expires by itself.
        """
        ...

    async def rate(self, key: str, period: float, *, add: bool = True) -> float:
        """Count one event (none with `add=False`) in the decaying count `key`, atomically,
        and return the count: every event adds 1 and the count decays as e^(-t/period).

        At a steady R events per `period` the count tends to R, so it reads as the recent
        rate per `period`, forgetting the past smoothly (a burst long ago weighs nothing).
        The key expires by itself once the count has decayed to nothing.
        """
        ...

    async def set_add(self, key: str, member: str, ttl: float) -> None:
        """Add (or refresh) `member` in the set `key`; the member alone expires after `ttl`."""
        ...

    async def set_remove(self, key: str, member: str) -> bool:
        """Remove `member` from the set `key`; True when it was there and alive."""
        ...

    async def set_members(self, key: str) -> builtins.set[str]:
        """The members of the set `key` that have not expired."""
        ...

    async def ping(self) -> None:
        """Return when the backend answers; raise core.errors.Unavailable otherwise."""
        ...

    async def close(self) -> None: ...


MessageHandler = Callable[[str], Awaitable[None]]


class Subscription(Protocol):
    @property
    def channel(self) -> str: ...

    async def close(self) -> None:
        """Stop delivery to this subscription's handler. Idempotent."""
        ...

    async def flush(self) -> None:
        """Return once every message this subscription has received so far has been handed
        to its handler (before a socket it feeds is closed). Messages still in flight to
        this node are not waited for."""
        ...


class Bus(Protocol):
    """Publish/subscribe between nodes. Delivery is at most once, in order per publisher."""

    async def publish(self, channel: str, message: str) -> None: ...

    async def subscribe(self, channel: str, handler: MessageHandler) -> Subscription:
        """Deliver each later message on `channel` to `handler`.

        A handler that raises is logged and contained; it never stops delivery to others.
        """
        ...

    async def ping(self) -> None:
        """Return when the backend answers; raise core.errors.Unavailable otherwise."""
        ...

    async def close(self) -> None: ...


def user_channel(user_id: UserId) -> str:
    """The channel that reaches every socket of one user, wherever it is connected."""
    return f"user:{user_id}"


def node_channel(node_id: NodeId) -> str:
    """The channel that carries commands to one node (for example to the node hosting a room)."""
    return f"node:{node_id}"
