"""The embedded SQLite store under concurrent writers: sign-ups, invites, chat, call ends and
history from many users at once, as a load test drives a node on its defaults.

SQLite allows one writer at a time. The store must queue writers rather than answer
`unavailable` ("database is locked"): every request below must succeed.
"""

from __future__ import annotations

import asyncio

from tests.signaling.conftest import Client, Node

PAIRS = 30


async def _call(node: Node, index: int) -> tuple[Client, Client, str]:
    a, b = await asyncio.gather(node.user(f"Caller {index}"), node.user(f"Callee {index}"))
    invite = await a.request("call:invite", to=b.user_id, seconds=60)
    room_id = (await b.request("call:accept", inviteId=invite["inviteId"]))["roomId"]
    for n in range(3):
        await a.request("room:message", roomId=room_id, text=f"hello {n} from {index}")
        await b.request("room:message", roomId=room_id, text=f"hi {n} from {index}")
    await a.request("room:leave", roomId=room_id)
    return a, b, room_id


async def test_thirty_calls_at_once_never_lock_the_database(node: Node) -> None:
    results = await asyncio.gather(*(_call(node, i) for i in range(PAIRS)),
                                   return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    histories = await asyncio.gather(*(node.get("/api/v1/me/calls", a.token)
                                       for a, _, _ in results))  # type: ignore[misc]
    for (status, body), (_, _, room_id) in zip(histories, results, strict=True):  # type: ignore[misc]
        assert status == 200, body
        assert room_id in {call.get("roomId") for call in body["calls"]}
