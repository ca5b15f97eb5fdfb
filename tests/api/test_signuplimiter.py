"""The sign-up limiter on the in-process live state and a fake clock: who pays what."""

from __future__ import annotations

import math

import pytest

from adapters.live import MemoryLiveState
from api.clientip import scopes
from api.powchallenge import Challenges, solve
from api.signuplimiter import SignupLimiter, SignupPolicy, Solution, about
from core.clock import FakeClock
from core.errors import ChallengeFailed, ChallengeRequired, RateLimited

HOUR = 3600.0


def limiter(clock: FakeClock, **policy: int) -> SignupLimiter:
    settings = {"per_hour": 2, "network_per_hour": 6, "ceiling_per_hour": 100,
                "network_ceiling_per_hour": 1000, "base_bits": 2, "max_bits": 5, **policy}
    return SignupLimiter(MemoryLiveState(clock), Challenges(b"k" * 32, clock), clock,
                         SignupPolicy(**settings))


async def sign_up(signups: SignupLimiter, ip: str) -> int:
    """One sign-up, solving a challenge when asked: the bits it cost (0 when none)."""
    try:
        await signups.admit(ip, None)
        return 0
    except ChallengeRequired as exc:
        token, bits = str(exc.challenge["token"]), int(str(exc.challenge["bits"]))
    await signups.admit(ip, Solution(token, solve(token, bits)))
    return bits


def test_scopes() -> None:
    assert scopes("198.51.100.7") == ("198.51.100.7", "198.51.100.0/24")
    assert scopes("::ffff:198.51.100.7") == ("198.51.100.7", "198.51.100.0/24")
    assert scopes("2001:db8:1:2:3:4:5:6") == ("2001:db8:1:2::/64", "2001:db8:1::/48")
    assert scopes("unknown") == ("unknown", "unknown")


@pytest.mark.parametrize(("seconds", "words"), [
    (0.2, "about a minute"), (60, "about a minute"), (61, "about 2 minutes"),
    (300, "about 5 minutes"), (3237, "about 54 minutes"), (5340, "about 89 minutes"),
    (5400, "about 2 hours"), (3 * 3600, "about 3 hours"),
])
def test_waits_in_words(seconds: float, words: str) -> None:
    assert about(seconds) == words


def test_a_policy_needs_sane_bits() -> None:
    with pytest.raises(ValueError, match="base_bits"):
        SignupPolicy(base_bits=20, max_bits=10)


async def test_difficulty_rises_a_bit_each_time_the_rate_doubles_up_to_the_maximum(
    fake_clock: FakeClock
) -> None:
    signups = limiter(fake_clock)
    paid = [await sign_up(signups, "198.51.100.1") for _ in range(20)]
    # the n-th sign-up in a row: n an hour against a budget of 2 (base 2 bits, at most 5)
    assert paid == [0, 0] + [min(5, 2 + math.floor(math.log2(n / 2))) for n in range(3, 21)]
    assert paid[2:8] == [2, 3, 3, 3, 3, 4]


async def test_asking_for_challenges_raises_only_the_askers_price(
    fake_clock: FakeClock
) -> None:
    signups = limiter(fake_clock)
    for _ in range(2):
        await signups.admit("198.51.100.1", None)
    bits = []
    for _ in range(30):
        with pytest.raises(ChallengeRequired) as caught:
            await signups.admit("198.51.100.1", None)
        bits.append(caught.value.challenge["bits"])
    assert bits[0] == 2 and bits[-1] == 5
    assert await sign_up(signups, "198.51.100.2") == 0  # the network's budget is untouched
    assert await sign_up(signups, "198.51.101.1") == 0


async def test_the_price_forgets_an_old_burst(fake_clock: FakeClock) -> None:
    signups = limiter(fake_clock)
    paid = [await sign_up(signups, "198.51.100.1") for _ in range(6)]
    assert paid == [0, 0, 2, 3, 3, 3]
    fake_clock.advance(5 * HOUR)  # the count decays as e^(-t/hour): nothing left
    assert [await sign_up(signups, "198.51.100.1") for _ in range(3)] == [0, 0, 2]


async def test_a_steady_pace_pays_a_steady_price(fake_clock: FakeClock) -> None:
    signups = limiter(fake_clock)
    paid = []
    for _ in range(8 * 10):  # ten an hour for eight hours: five times the budget
        paid.append(await sign_up(signups, "198.51.100.1"))
        fake_clock.advance(HOUR / 10)
    assert set(paid[-40:]) <= {0, 4}  # 2 + log2(10 / 2) rounded down, hour after hour


async def test_a_flooded_network_raises_the_price_for_all_its_addresses(
    fake_clock: FakeClock
) -> None:
    signups = limiter(fake_clock)
    paid = [await sign_up(signups, f"192.0.2.{i}") for i in range(1, 31)]
    assert paid[:6] == [0] * 6  # the network's budget of 6, each from a fresh address
    assert paid[6] == 2 and paid[-1] == 4  # 30 an hour against 6: 2 + log2(5)
    assert await sign_up(signups, "192.0.3.1") == 0  # the next /24 pays nothing


async def test_the_ceiling_refuses_in_words_and_a_solution_does_not_pass_it(
    fake_clock: FakeClock
) -> None:
    signups = limiter(fake_clock, ceiling_per_hour=4)
    for _ in range(3):
        await sign_up(signups, "198.51.100.1")
    with pytest.raises(ChallengeRequired) as caught:
        await signups.admit("198.51.100.1", None)
    token = str(caught.value.challenge["token"])
    await sign_up(signups, "198.51.100.1")  # the fourth (another challenge)
    with pytest.raises(RateLimited) as refused:
        await signups.admit("198.51.100.1", Solution(token, solve(token, 2)))
    assert not isinstance(refused.value, ChallengeRequired)
    assert refused.value.message == (
        "Too many sign-ups from your network right now. Try again in about 15 minutes.")
    assert 899 <= refused.value.retry_after <= 900
    fake_clock.advance(900)
    assert await sign_up(signups, "198.51.100.1") > 0  # a slower pace passes again


async def test_a_solution_passes_once(fake_clock: FakeClock) -> None:
    signups = limiter(fake_clock, per_hour=1)
    await signups.admit("198.51.100.1", None)
    with pytest.raises(ChallengeRequired) as caught:
        await signups.admit("198.51.100.1", None)
    token, bits = str(caught.value.challenge["token"]), int(str(caught.value.challenge["bits"]))
    solution = Solution(token, solve(token, bits))
    await signups.admit("198.51.100.1", solution)
    with pytest.raises(ChallengeFailed, match="already used"):
        await signups.admit("198.51.100.1", solution)
