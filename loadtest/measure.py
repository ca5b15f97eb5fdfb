"""What one bot process measures: timed samples, counters, errors by code and per-call records.

Plain data that crosses the process boundary as JSON: each worker fills one `Measurements`, the
runner merges them (`merge`) and the report reads the result. Times are seconds since the start
of the run (`t_s`, from the wall clock every process shares); latencies are milliseconds.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_ERROR_SAMPLES = 50


@dataclass
class Measurements:
    started_at: float = field(default_factory=time.time)  # the run's start (epoch seconds)
    # name -> [(t_s, ms)]: "signup", "invite_to_call_start", "call_start_to_ice_connected",
    # "call_start_to_first_keyframe"; "http <METHOD> <route>"; "ws <type>"
    latencies: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    # (t_s, +1 | -1): a call's media connected / that call ended, for calls-connected-over-time
    call_edges: list[tuple[float, int]] = field(default_factory=list)

    def now(self) -> float:
        return time.time() - self.started_at

    def latency(self, name: str, ms: float) -> None:
        self.latencies.setdefault(name, []).append((round(self.now(), 3), round(ms, 3)))

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def error(self, code: str, where: str, message: str = "") -> None:
        self.errors[code] += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append({"t_s": round(self.now(), 3), "code": code,
                                       "where": where, "message": message[:200]})

    def to_json(self) -> dict[str, Any]:
        return {"started_at": self.started_at, "latencies": self.latencies,
                "counters": dict(self.counters), "errors": dict(self.errors),
                "error_samples": self.error_samples, "calls": self.calls,
                "call_edges": self.call_edges}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measurements:
        return cls(
            started_at=float(data["started_at"]),
            latencies={k: [(float(t), float(v)) for t, v in vs]
                       for k, vs in data["latencies"].items()},
            counters=Counter({k: int(v) for k, v in data["counters"].items()}),
            errors=Counter({k: int(v) for k, v in data["errors"].items()}),
            error_samples=list(data["error_samples"]), calls=list(data["calls"]),
            call_edges=[(float(t), int(d)) for t, d in data["call_edges"]],
        )

    def merge(self, other: Measurements) -> None:
        for name, samples in other.latencies.items():
            self.latencies.setdefault(name, []).extend(samples)
        self.counters.update(other.counters)
        self.errors.update(other.errors)
        room = MAX_ERROR_SAMPLES - len(self.error_samples)
        self.error_samples.extend(other.error_samples[:max(0, room)])
        self.calls.extend(other.calls)
        self.call_edges.extend(other.call_edges)
