"""What the sign-up limits cost: a café, a campus, floods from one address and one /24.

    python -m bench.signup_cost [--js-rate 600000]

Each scenario runs the real SignupLimiter (default policy, or the settings' defaults) on the
in-process live state and a fake clock, sign-ups spread evenly over the scenario's time. The
client is assumed to solve every challenge it is given (the worst case for the service), so
solutions are accepted without the work being done here; the figures say what that work
costs: 2^bits hashes per challenge on average, in seconds at a browser's rate (pow.js in V8,
about 600k hashes a second on a desktop; phones are 3-5 times slower) and at this machine's
native rate (hashlib, one core). It prints figures; it is not a test, and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from unittest import mock

from adapters.live import MemoryLiveState
from api.powchallenge import Challenges
from api.signuplimiter import SignupLimiter, SignupPolicy, Solution
from core.clock import FakeClock
from core.errors import ChallengeRequired, RateLimited

HOUR = 3600.0


@dataclass
class Tally:
    free: int = 0
    solved: int = 0
    refused: int = 0
    bits: Counter[int] = field(default_factory=Counter)

    @property
    def hashes(self) -> float:
        return float(sum(2 ** b * n for b, n in self.bits.items()))


@contextmanager
def work_assumed_done() -> Iterator[None]:
    with mock.patch("api.powchallenge.solves", lambda token, counter, bits: True):
        yield


async def sign_up(signups: SignupLimiter, ip: str, tally: Tally) -> None:
    try:
        await signups.admit(ip, None)
        tally.free += 1
        return
    except ChallengeRequired as exc:
        token, bits = str(exc.challenge["token"]), int(str(exc.challenge["bits"]))
    except RateLimited:
        tally.refused += 1
        return
    try:
        await signups.admit(ip, Solution(token, "0"))
    except RateLimited:
        tally.refused += 1
        return
    tally.solved += 1
    tally.bits[bits] += 1


async def scenario(count: int, hours: float, ip_of: Callable[[int], str],
                   watch: str | None = None, watch_every: float = 600.0
                   ) -> tuple[Tally, Tally | None]:
    """`count` sign-ups over `hours`, the i-th from `ip_of(i)`; with `watch`, also one sign-up
    from that address every `watch_every` seconds (a bystander), tallied apart."""
    clock = FakeClock()
    live = MemoryLiveState(clock)
    signups = SignupLimiter(live, Challenges(b"bench" * 8, clock), clock, SignupPolicy())
    tally, bystander = Tally(), Tally() if watch else None
    step = hours * HOUR / count
    next_watch = watch_every
    with work_assumed_done():
        for i in range(count):
            await sign_up(signups, ip_of(i), tally)
            clock.advance(step)
            if watch and bystander is not None and (i + 1) * step >= next_watch:
                await sign_up(signups, watch, bystander)
                next_watch += watch_every
    await live.close()
    return tally, bystander


def native_rate() -> float:
    token = "v1." + "x" * 120 + "."
    n = 200_000
    start = time.perf_counter()
    for i in range(n):
        hashlib.sha256(f"{token}{i}".encode()).digest()
    return n / (time.perf_counter() - start)


def report(name: str, tally: Tally, js_rate: float, native: float) -> None:
    total = tally.free + tally.solved + tally.refused
    spread = ", ".join(f"{b} bits x{n}" for b, n in sorted(tally.bits.items())) or "none"
    per = tally.hashes / tally.solved if tally.solved else 0.0
    print(f"{name}\n  attempts {total}: free {tally.free}, with a challenge {tally.solved}, "
          f"refused {tally.refused}\n  challenges: {spread}\n"
          f"  work: {tally.hashes:.3g} hashes in all, {per:.3g} per challenged sign-up; "
          f"browser {tally.hashes / js_rate:.1f} s in all ({per / js_rate:.2f} s each), "
          f"native one core {tally.hashes / native:.1f} s")


async def _main(js_rate: float) -> None:
    native = native_rate()
    print(f"policy: {SignupPolicy()}\nrates: browser {js_rate:.3g} hashes/s (given), "
          f"native {native:.3g} hashes/s (measured)\n")
    cafe, _ = await scenario(100, 1, lambda i: "203.0.113.50")
    report("café: 100 sign-ups in an hour from one address", cafe, js_rate, native)
    campus, _ = await scenario(800, 8, lambda i: "203.0.113.50")
    report("campus NAT: 100 sign-ups an hour for 8 hours from one address", campus, js_rate,
           native)
    flood, _ = await scenario(10_000, 1, lambda i: "198.51.100.7")
    report("flood: 10,000 sign-ups in an hour from one address", flood, js_rate, native)
    net, bystander = await scenario(10_000, 1, lambda i: f"198.51.100.{1 + i % 254}",
                                    watch="198.51.100.255")
    report("flood: 10,000 sign-ups in an hour from one /24 (254 addresses)", net, js_rate,
           native)
    assert bystander is not None
    report("  a bystander in that /24 signing up every 10 minutes", bystander, js_rate, native)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.signup_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--js-rate", type=float, default=600_000.0,
                        help="browser hashes a second to price challenges at (pow.js)")
    args = parser.parse_args(argv)
    asyncio.run(_main(args.js_rate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
