"""Load-test scenarios: what the bots do, with named presets. Pure data: no I/O here."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

Mode = Literal["calls", "idle"]
VideoCodec = Literal["vp8", "h264"]


class ScenarioError(ValueError):
    """A parameter out of range; the message names it and says what is allowed."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str = "custom"
    mode: Mode = "calls"  # idle: sockets connected and heartbeating, no calls
    users: int = 4
    ramp_per_s: float = 4.0  # users started per second
    call_seconds: float = 6.0  # how long a call lasts before the caller leaves
    think_seconds: float = 1.0  # pause between one call and the next invite
    decline_share: float = 0.0  # share of invites the callee declines
    expire_share: float = 0.0  # share of invites the callee leaves to expire
    chat_per_call: int = 2  # chat messages each participant sends per call
    processes: int = 1  # bot processes, one event loop each
    duration_s: float = 20.0  # the run stops by itself after this
    heartbeat_s: float = 30.0  # presence heartbeat interval
    browse_s: float = 0.0  # idle users read deck, profile and history this often (0: never)
    video_codec: VideoCodec = "vp8"  # the codec of the node's rooms (NAPALMSKY_SFU_VIDEO_CODEC)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> Scenario:
        """Self, or `ScenarioError` naming the first parameter out of range."""
        def need(ok: bool, option: str, what: str) -> None:
            if not ok:
                raise ScenarioError(f"{option} must be {what}")

        def finite(value: float) -> bool:
            return math.isfinite(value)

        need(self.users >= 1, "--users", "at least 1")
        need(self.mode == "idle" or self.users >= 2, "--users", "at least 2 for calls")
        need(self.users <= 100_000, "--users", "at most 100000")
        need(finite(self.ramp_per_s) and self.ramp_per_s > 0, "--ramp", "a positive rate")
        need(finite(self.call_seconds) and self.call_seconds > 0, "--call-seconds",
             "positive")
        need(finite(self.think_seconds) and self.think_seconds >= 0, "--think-seconds",
             "zero or positive")
        need(0 <= self.decline_share <= 1, "--decline", "a share between 0 and 1")
        need(0 <= self.expire_share <= 1, "--expire", "a share between 0 and 1")
        need(self.decline_share + self.expire_share <= 1, "--decline plus --expire",
             "at most 1")
        need(0 <= self.chat_per_call <= 1000, "--chat", "between 0 and 1000")
        need(1 <= self.processes <= 256, "--processes", "between 1 and 256")
        need(self.processes <= self.users, "--processes", "at most --users")
        need(finite(self.duration_s) and 0 < self.duration_s <= 7 * 86400, "--duration",
             "positive (seconds, at most a week)")
        need(finite(self.heartbeat_s) and self.heartbeat_s > 0, "--heartbeat", "positive")
        need(finite(self.browse_s) and self.browse_s >= 0, "--browse", "zero or positive")
        need(self.video_codec in ("vp8", "h264"), "--video-codec", "vp8 or h264")
        return self


PRESETS: dict[str, Scenario] = {
    # A quick check that everything works: two pairs call, chat and hang up.
    "smoke": Scenario(name="smoke", users=4, ramp_per_s=4, call_seconds=6, think_seconds=1,
                      chat_per_call=2, duration_s=20),
    # N users in calls: long calls, steady media load.
    "calls": Scenario(name="calls", users=20, ramp_per_s=5, call_seconds=60, think_seconds=2,
                      chat_per_call=3, duration_s=120),
    # N sockets connected and heartbeating, nobody calling: the signaling tier's idle cost.
    "idle": Scenario(name="idle", mode="idle", users=100, ramp_per_s=20, chat_per_call=0,
                     duration_s=60, heartbeat_s=30),
    # Short calls back to back: call set-up and teardown under load.
    "churn": Scenario(name="churn", users=20, ramp_per_s=10, call_seconds=5, think_seconds=0.5,
                      chat_per_call=1, decline_share=0.1, duration_s=120),
}


def build(preset: str | None, **overrides: Any) -> Scenario:
    """The preset (default `smoke`) with the given parameters replaced (None: keep)."""
    name = preset or "smoke"
    if name not in PRESETS:
        raise ScenarioError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(PRESETS[name], **changes).check()
