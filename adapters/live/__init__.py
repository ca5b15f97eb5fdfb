"""Live state (keys with a time to live) and the message bus: in-process and Redis adapters."""

from adapters.live.memory import MemoryBus, MemoryLiveState
from adapters.live.redis import RedisBus, RedisLiveState

__all__ = ["MemoryBus", "MemoryLiveState", "RedisBus", "RedisLiveState"]
