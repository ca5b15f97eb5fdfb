"""Sign-up limits that slow a flood without locking out a shared address.

Each client address (IPv4, or IPv6 /64) and each network (IPv4 /24, IPv6 /48) has a token
bucket in live state (so it holds across nodes) that refills steadily. While both have a unit,
a sign-up just passes. When either is empty the sign-up is not refused: the answer is 429
`challenge_required` with a proof-of-work challenge (api/powchallenge.py); the client solves
it and sends the sign-up again with the solution, which passes once and is then spent. A
solved sign-up is taken from the buckets on credit, so the debt grows while the address keeps
signing up beyond its budget, and the challenge's difficulty grows with the debt: one more bit
(twice the work) for every budget's worth of sign-ups owed. A café pays a second or two for a
sign-up now and then; a flood pays exponentially more for each. Only beyond a hard ceiling
(far above what any shared address signs up) is a sign-up refused, 429 `rate_limited`, with
a message that says in words when to come back.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from api.clientip import scopes
from api.powchallenge import Challenges
from core.clock import Clock
from core.errors import ChallengeFailed, ChallengeRequired, RateLimited
from core.live import Bucket, LiveState

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
    """Difficulty of the first challenge once a bucket is empty."""
    max_bits: int = 23
    """Difficulty never exceeds this (about 8 million hashes)."""
    credit_hours: float = 24.0
    """At most this many hours of a bucket's refill may be owed; solved sign-ups beyond that
    still pass, at the highest difficulty, but the debt stops growing."""

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

    def _budgets(self, ip: str) -> tuple[_Budget, _Budget, _Budget, _Budget]:
        client, network = scopes(ip)
        p = self.policy
        return (_Budget(f"signup:client:{client}", p.per_hour),
                _Budget(f"signup:network:{network}", p.network_per_hour),
                _Budget(f"signup:ceiling:client:{client}", p.ceiling_per_hour),
                _Budget(f"signup:ceiling:network:{network}", p.network_ceiling_per_hour))

    async def admit(self, ip: str, solution: Solution | None) -> None:
        """Let one sign-up from `ip` through, or raise: ChallengeRequired (solve and send
        again), ChallengeFailed (the solution is no good) or RateLimited (the hard ceiling)."""
        client, network, client_ceiling, network_ceiling = self._budgets(ip)
        for ceiling in (client_ceiling, network_ceiling):
            bucket = await self.live.take(ceiling.key, ceiling.interval, ceiling.per_hour,
                                          peek=True)
            if not bucket.allowed:
                log.warning("sign-ups refused at the ceiling for %s", ceiling.key)
                raise RateLimited(
                    "Too many sign-ups from your network right now. Try again in "
                    f"{about(bucket.retry_after)}.", retry_after=bucket.retry_after)
        if solution is not None:
            await self._check(scopes(ip)[0], solution)
            credit = self.policy.credit_hours
            for budget in (client, network):  # on credit: the debt raises the next price
                await self.live.take(budget.key, budget.interval,
                                     budget.per_hour * (1 + credit))
        else:
            net = await self.live.take(network.key, network.interval, network.per_hour,
                                       peek=True)
            own = await self.live.take(client.key, client.interval, client.per_hour,
                                       peek=not net.allowed)
            if not (own.allowed and net.allowed):
                self._challenge(scopes(ip)[0], (own, client), (net, network))
            # A race with another node may have emptied the network's bucket since the
            # peek: then this sign-up passes on a little credit rather than paying twice.
            await self.live.take(network.key, network.interval, network.per_hour * 2)
        for ceiling in (client_ceiling, network_ceiling):
            await self.live.take(ceiling.key, ceiling.interval, ceiling.per_hour * 2)

    def bits(self, bucket: Bucket, per_hour: int) -> int:
        """The difficulty of a sign-up past an empty bucket: one bit more for each whole
        budget (`per_hour` sign-ups) owed, between base_bits and max_bits."""
        owed = max(0.0, bucket.used + 1 - per_hour)
        p = self.policy
        return min(p.max_bits, p.base_bits + int(owed // per_hour))

    def _challenge(self, subject: str, *found: tuple[Bucket, _Budget]) -> None:
        empty = [(bucket, budget) for bucket, budget in found if not bucket.allowed]
        bits = max(self.bits(bucket, budget.per_hour) for bucket, budget in empty)
        wait = max(bucket.retry_after for bucket, _ in empty)
        challenge = self.challenges.mint(subject, bits)
        raise ChallengeRequired(
            "Many sign-ups from your network right now: solve the challenge to continue.",
            retry_after=wait, challenge=challenge.to_json(self.clock))

    async def _check(self, subject: str, solution: Solution) -> None:
        challenge = self.challenges.verify(subject, solution.token, solution.counter)
        ttl = max(1.0, challenge.expires_at - self.clock.time() + 1)
        if not await self.live.claim(f"signup:challenge:{challenge.nonce}", "1", ttl):
            raise ChallengeFailed("the challenge was already used: ask for a new one")
