"""Sign-up limits over HTTP (issue 11): a burst passes, an empty bucket asks for a
proof-of-work, a solved one passes once, a shared address is slowed but never locked out."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from api.powchallenge import solve
from tests.api.test_v1 import Api, error, make_api

# Signed-up clients reach the node through the test's trusted proxy, so each test picks
# client addresses with X-Forwarded-For.
PROXY = {"NAPALMSKY_TRUSTED_PROXIES": "127.0.0.1", "NAPALMSKY_SIGNUP_CHALLENGE_BITS": "4",
         "NAPALMSKY_SIGNUP_CHALLENGE_MAX_BITS": "10"}
HOUR = 3600


def limits(per_hour: int, **more: str) -> dict[str, str]:
    return {**PROXY, "NAPALMSKY_RATE_SIGNUP_PER_HOUR": str(per_hour), **more}


async def sign_up(api: Api, ip: str, challenge: dict[str, str] | None = None,
                  path: str = "/auth/guest") -> tuple[int, Any, dict[str, str]]:
    body: dict[str, Any] = {"name": "Ada", "gender": "female"}
    if path == "/auth/register":
        body |= {"email": f"{uuid.uuid4().hex[:12]}@example.com",
                 "password": "correct horse battery staple"}
    if challenge is not None:
        body["challenge"] = challenge
    resp = await api.client.post(f"/api/v1{path}", json=body,
                                 headers={"X-Forwarded-For": ip})
    return resp.status, await resp.json(), dict(resp.headers)


def solved(body: Any) -> dict[str, str]:
    challenge = body["error"]["challenge"]
    return {"token": challenge["token"], "counter": solve(challenge["token"], challenge["bits"])}


async def sign_up_paying(api: Api, ip: str, path: str = "/auth/guest") -> int:
    """Sign up, solving a challenge when asked: the bits paid (0 when none was asked)."""
    status, body, _ = await sign_up(api, ip, path=path)
    if status == 201:
        return 0
    assert (status, error(body)) == (429, "challenge_required"), body
    status, again, _ = await sign_up(api, ip, solved(body), path=path)
    assert status == 201, again
    return int(body["error"]["challenge"]["bits"])


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_database").url)
    return None


async def test_a_burst_passes_then_a_challenge_then_its_solution_once(
    aiohttp_client: AiohttpClient, tmp_path: Path, database_url: str | None
) -> None:
    api = await make_api(aiohttp_client, tmp_path, limits(3), database_url)
    for _ in range(3):
        assert (await sign_up(api, "198.51.100.7"))[0] == 201
    status, body, headers = await sign_up(api, "198.51.100.7")
    assert (status, error(body)) == (429, "challenge_required")
    challenge = body["error"]["challenge"]
    assert challenge["algorithm"] == "sha256-leading-zero-bits"
    assert challenge["bits"] == 4 and challenge["expiresIn"] == 300
    assert "challenge" in body["error"]["message"]
    assert 1 <= int(headers["Retry-After"]) <= HOUR // 3
    solution = solved(body)
    status, user, _ = await sign_up(api, "198.51.100.7", solution)
    assert status == 201 and user["user"]["name"] == "Ada"
    status, body, _ = await sign_up(api, "198.51.100.7", solution)  # replayed
    assert (status, error(body)) == (403, "challenge_failed")
    assert body["error"]["message"] == "the challenge was already used: ask for a new one"


async def test_register_shares_the_budget_and_the_challenge(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    api = await make_api(aiohttp_client, tmp_path, limits(2))
    assert (await sign_up(api, "198.51.100.8"))[0] == 201
    assert (await sign_up(api, "198.51.100.8", path="/auth/register"))[0] == 201
    status, body, _ = await sign_up(api, "198.51.100.8", path="/auth/register")
    assert (status, error(body)) == (429, "challenge_required")
    assert (await sign_up(api, "198.51.100.8", solved(body), path="/auth/register"))[0] == 201


async def test_bad_solutions_are_a_403_challenge_failed(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    api = await make_api(aiohttp_client, tmp_path, limits(1))
    await sign_up(api, "198.51.100.9")
    _, body, _ = await sign_up(api, "198.51.100.9")
    good = solved(body)
    token = good["token"]
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    wrong = next(str(c) for c in range(10_000)
                 if str(c) != good["counter"] and not _solves(token, str(c), 4))
    cases = [
        ({"token": forged, "counter": good["counter"]}, "198.51.100.9",
         "the challenge is not valid here: ask for a new one"),
        (good, "198.51.100.10", "the challenge is not valid here: ask for a new one"),
        ({"token": token, "counter": wrong}, "198.51.100.9",
         "the counter does not solve the challenge"),
    ]
    for solution, ip, message in cases:
        status, answer, _ = await sign_up(api, ip, solution)
        assert (status, error(answer), answer["error"]["message"]) == (
            403, "challenge_failed", message)
    api.clock.advance(301)
    status, answer, _ = await sign_up(api, "198.51.100.9", good)
    assert (status, error(answer)) == (403, "challenge_failed")
    assert answer["error"]["message"] == "the challenge has expired: ask for a new one"


def _solves(token: str, counter: str, bits: int) -> bool:
    from api.powchallenge import solves

    return solves(token, counter, bits)


@pytest.mark.parametrize("solution", [
    {"token": "v1.x.y", "counter": "12a"},
    {"token": "not a token", "counter": "1"},
    {"token": "v1.x.y"},
    "v1.x.y:1",
])
async def test_malformed_solutions_are_a_400_naming_the_field(
    aiohttp_client: AiohttpClient, tmp_path: Path, solution: Any
) -> None:
    api = await make_api(aiohttp_client, tmp_path, limits(5))
    status, body, _ = await sign_up(api, "198.51.100.11", solution)
    assert (status, error(body)) == (400, "invalid_argument")
    assert body["error"]["message"].startswith("challenge")


async def test_a_network_shares_one_budget(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    api = await make_api(aiohttp_client, tmp_path,
                         limits(3, NAPALMSKY_RATE_SIGNUP_NETWORK_PER_HOUR="4"))
    for _ in range(3):
        assert (await sign_up(api, "192.0.2.1"))[0] == 201
    assert (await sign_up(api, "192.0.2.2"))[0] == 201  # its own budget, the network's last
    status, body, _ = await sign_up(api, "192.0.2.3")  # same /24: the network's is spent
    assert (status, error(body)) == (429, "challenge_required")
    assert (await sign_up(api, "192.0.2.3", solved(body)))[0] == 201
    assert (await sign_up(api, "192.0.3.1"))[0] == 201  # another /24 is not touched
    # IPv6: one /64 is one client, one /48 one network
    for suffix in ("1", "2", "3"):
        assert (await sign_up(api, f"2001:db8:1:1::{suffix}"))[0] == 201
    status, body, _ = await sign_up(api, "2001:db8:1:1::99")
    assert (status, error(body)) == (429, "challenge_required")
    assert (await sign_up(api, "2001:db8:1:2::1"))[0] == 201  # the /48's fourth


async def test_a_shared_address_with_100_sign_ups_an_hour_is_slowed_never_locked_out(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    api = await make_api(aiohttp_client, tmp_path,
                         {**PROXY, "NAPALMSKY_RATE_SIGNUP_PER_HOUR": "20",
                          "NAPALMSKY_SIGNUP_CHALLENGE_BITS": "",
                          "NAPALMSKY_SIGNUP_CHALLENGE_MAX_BITS": ""})
    paid = []
    for _ in range(100):  # the defaults: 20 an hour, a café behind one address
        paid.append(await sign_up_paying(api, "203.0.113.50"))
        api.clock.advance(HOUR / 100)
    free = paid.count(0)
    assert 20 < free < 45  # the burst, the hour's refill, and some the network allowed
    # five times the budget: 2^15 to 2^16 hashes, a tenth of a second in a browser (bench/)
    assert set(paid) - {0} == {15, 16}


async def test_a_flood_from_one_address_hits_the_ceiling_with_a_human_message(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    api = await make_api(aiohttp_client, tmp_path,
                         limits(2, NAPALMSKY_RATE_SIGNUP_CEILING_PER_HOUR="6"))
    paid = [await sign_up_paying(api, "198.51.100.20") for _ in range(6)]
    assert paid == [0, 0, 4, 5, 5, 5]  # one bit more each time the rate doubles
    status, body, headers = await sign_up(api, "198.51.100.20")
    assert (status, error(body)) == (429, "rate_limited")
    assert body["error"]["message"] == (
        "Too many sign-ups from your network right now. Try again in about 10 minutes.")
    assert 590 <= int(headers["Retry-After"]) <= 600
    assert (await sign_up(api, "198.51.100.21"))[0] == 201  # a neighbour is not locked out
    api.clock.advance(600)
    status, body, _ = await sign_up(api, "198.51.100.20")
    assert (status, error(body)) == (429, "challenge_required")


async def test_challenges_work_across_nodes_sharing_redis_and_are_used_once(
    aiohttp_client: AiohttpClient, tmp_path: Path, redis_url: str
) -> None:
    shared = {**limits(2), "REDIS_URL": redis_url,
              "NAPALMSKY_REDIS_PREFIX": f"test-{uuid.uuid4().hex}:",
              "NAPALMSKY_NODE_SECRET": "n" * 32}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    node_a = await make_api(aiohttp_client, tmp_path / "a", shared)
    node_b = await make_api(aiohttp_client, tmp_path / "b", shared)
    assert (await sign_up(node_a, "198.51.100.30"))[0] == 201
    assert (await sign_up(node_b, "198.51.100.30"))[0] == 201
    status, body, _ = await sign_up(node_a, "198.51.100.30")  # the budget is one, shared
    assert (status, error(body)) == (429, "challenge_required")
    solution = solved(body)
    assert (await sign_up(node_b, "198.51.100.30", solution))[0] == 201  # minted on a
    status, body, _ = await sign_up(node_a, "198.51.100.30", solution)
    assert (status, error(body)) == (403, "challenge_failed")
