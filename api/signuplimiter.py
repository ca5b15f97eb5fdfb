"""Sign-up limits that slow a flood without locking out a shared address.

Each client address (IPv4, or IPv6 /64) and each network (IPv4 /24, IPv6 /48) has a token
bucket of free sign-ups in live state (so it holds across nodes) that refills steadily. While
both have a unit, a sign-up just passes. When either is empty the sign-up is not refused: the
answer is 429 `challenge_required` with a proof-of-work challenge (api/powchallenge.py); the
client solves it and sends the sign-up again with the solution, which passes once and is then
spent. The challenge's difficulty follows the recent rate (a count decaying over an hour) of
sign-ups asked for from the address and from its network, refused ones included: one bit
more, twice the work, each time that rate doubles past the budget. So the price depends on
how fast, not on how long: a café or a campus at five times its budget pays a fraction of a
second per sign-up for as long as it keeps that pace; a flood at hundreds of times it pays
the maximum. Only beyond a hard ceiling (far above what any shared address signs up) is a
sign-up refused, 429 `rate_limited`, with a message that says in words when to come back.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from api.clientip import scopes
from api.powchallenge import Challenges
from core.clock import Clock
from core.errors import ChallengeFailed, ChallengeRequired, RateLimited
from core.live import LiveState

log = logging.getLogger(__name__)

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class SignupPolicy:
    per_hour: int = 20
    """Free sign-ups per client address an hour; also how many it may make at once."""
    network_per_hour: int = 100
    """Free sign-ups per network an hour; also its burst."""
    ceiling_per_hour: int = 300
    """Sign-ups per client address an hour, challenges solved or not, beyond which they are
    refused."""
    network_ceiling_per_hour: int = 1000
    """The same per network."""
    base_bits: int = 15
    """Difficulty of a challenge while the recent rate is within the budget; one bit more
    each time it doubles past it."""
    max_bits: int = 23
    """Difficulty never exceeds this (about 8 million hashes)."""

    def __post_init__(self) -> None:
        if not 0 < self.base_bits <= self.max_bits <= 32:
            raise ValueError("need 0 < base_bits <= max_bits <= 32")


@dataclass(frozen=True, slots=True)
class Solution:
    token: str
    counter: str


@dataclass(frozen=True, slots=True)
class _Budget:
    key: str
    per_hour: int

    @property
    def interval(self) -> float:
        return HOUR / self.per_hour


def about(seconds: float) -> str:
    """A wait in words: `about a minute`, `about 5 minutes`, `about 2 hours`."""
    minutes = max(1, math.ceil(seconds / 60))
    if minutes == 1:
        return "about a minute"
    if minutes < 90:
        return f"about {minutes} minutes"
    hours = round(minutes / 60)
    return "about an hour" if hours == 1 else f"about {hours} hours"


class SignupLimiter:
    def __init__(self, live: LiveState, challenges: Challenges, clock: Clock,
                 policy: SignupPolicy | None = None) -> None:
        self.live = live
        self.challenges = challenges
        self.clock = clock
        self.policy = policy or SignupPolicy()

    def _scopes(self, ip: str) -> _Scopes:
        client, network = scopes(ip)
        p = self.policy
        return _Scopes(
            client=client,
            free=_Budget(f"signup:free:client:{client}", p.per_hour),
            network_free=_Budget(f"signup:free:network:{network}", p.network_per_hour),
            ceiling=_Budget(f"signup:ceiling:client:{client}", p.ceiling_per_hour),
            network_ceiling=_Budget(f"signup:ceiling:network:{network}",
                                    p.network_ceiling_per_hour),
            asked=f"signup:asked:client:{client}",
            network_asked=f"signup:asked:network:{network}",
        )

    async def admit(self, ip: str, solution: Solution | None) -> None:
        """Let one sign-up from `ip` through, or raise: ChallengeRequired (solve and send
        again), ChallengeFailed (the solution is no good) or RateLimited (the hard ceiling)."""
        s = self._scopes(ip)
        if solution is None:
            # Every sign-up asked for without a solution, refused ones included, counts
            # towards the price of its address and of its network.
            asked = await self.live.rate(s.asked, HOUR)
            network_asked = await self.live.rate(s.network_asked, HOUR)
        for ceiling in (s.ceiling, s.network_ceiling):
            bucket = await self.live.take(ceiling.key, ceiling.interval, ceiling.per_hour,
                                          peek=True)
            if not bucket.allowed:
                log.debug("sign-up refused at the ceiling of %s", ceiling.key)
                raise RateLimited(
                    "Too many sign-ups from your network right now. Try again in "
                    f"{about(bucket.retry_after)}.", retry_after=bucket.retry_after)
        if solution is not None:
            await self._check(s.client, solution)
        else:
            net = await self.live.take(s.network_free.key, s.network_free.interval,
                                       s.network_free.per_hour, peek=True)
            own = await self.live.take(s.free.key, s.free.interval, s.free.per_hour,
                                       peek=not net.allowed)
            if not (own.allowed and net.allowed):
                bits = max(self.bits(asked, s.free.per_hour),
                           self.bits(network_asked, s.network_free.per_hour))
                wait = max(b.retry_after for b in (own, net) if not b.allowed)
                challenge = self.challenges.mint(s.client, bits)
                raise ChallengeRequired(
                    "Many sign-ups from your network right now: solve the challenge to "
                    "continue.", retry_after=wait, challenge=challenge.to_json(self.clock))
            # A race with another node may have emptied the network's bucket since the
            # peek: this sign-up then passes on a little credit rather than paying twice.
            await self.live.take(s.network_free.key, s.network_free.interval,
                                 s.network_free.per_hour * 2)
        # Admitted: it counts towards the ceilings.
        for ceiling in (s.ceiling, s.network_ceiling):
            await self.live.take(ceiling.key, ceiling.interval, ceiling.per_hour * 2)

    def bits(self, rate: float, per_hour: int) -> int:
        """The difficulty for a recent `rate` of sign-ups an hour against a budget of
        `per_hour`: one bit more (twice the work) each time the rate doubles past the
        budget, between base_bits and max_bits."""
        p = self.policy
        over = math.floor(math.log2(rate / per_hour)) if rate > per_hour else 0
        return min(p.max_bits, p.base_bits + over)

    async def _check(self, subject: str, solution: Solution) -> None:
        challenge = self.challenges.verify(subject, solution.token, solution.counter)
        ttl = max(1.0, challenge.expires_at - self.clock.time() + 1)
        if not await self.live.claim(f"signup:challenge:{challenge.nonce}", "1", ttl):
            raise ChallengeFailed("the challenge was already used: ask for a new one")


@dataclass(frozen=True, slots=True)
class _Scopes:
    client: str
    free: _Budget
    network_free: _Budget
    ceiling: _Budget
    network_ceiling: _Budget
    asked: str
    """Decaying count of the sign-ups this address asked for (the address's price)."""
    network_asked: str
    """The same for its network (the network's price)."""
