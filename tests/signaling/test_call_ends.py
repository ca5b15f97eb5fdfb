"""Calls ended by faults are recorded truthfully (issue 10, item 7), and live state lost with
Redis is rebuilt (item 6): the sweeper's verdicts, a database outage at a call's end time, a
Redis restart mid-call. Node restarts are in tests/napalmsky/test_node_restart.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from core.clock import utc_from_timestamp, utcnow
from core.ids import RoomId, UserId
from core.store import Call, CallEndReason, Store
from napalmsky.composition import SFU
from signaling.calls import DEAD_AFTER, RECORD_RETRY_MAX
from tests.services import (
    PrivateRedis,
    create_postgres_database,
    drop_postgres_database,
    postgres_outage,
)
from tests.signaling.conftest import Client, Node, Rejected, make_node
from tests.signaling.test_flow import start_call

TRIES = 200  # bounded polling: each try advances the fake clock or yields to the loop


async def until(check: Callable[[], Awaitable[bool]], step: Callable[[], Awaitable[None]],
                what: str) -> None:
    """Run `step` until `check` holds; fail after TRIES steps (never a wall-clock wait)."""
    for _ in range(TRIES):
        if await check():
            return
        await step()
        await asyncio.sleep(0.05)  # let sockets and the live-state client do their work
    pytest.fail(f"{what} did not happen")


def sweep_by_hand(node: Node) -> None:
    """Stop the node's periodic sweep, so that the test's own sweeps see the calls it set up
    exactly as it set them up."""
    node.sig.timers.cancel("sweeper")


async def other_nodes_call(store: Store, a: Client, b: Client, node_id: str, *,
                           started: float, seconds: int) -> Call:
    room = RoomId(str(uuid.uuid4()))
    return await store.calls.create(
        room_id=room, caller_id=UserId(a.user_id), callee_id=UserId(b.user_id),
        node_id=node_id, started_at=utc_from_timestamp(started),
        ends_at=utc_from_timestamp(started + seconds))


async def is_ended(store: Store, call: Call) -> bool:
    stored = await store.calls.get(call.room_id)
    return stored is not None and stored.ended_at is not None


async def history_seconds(store: Store, user: Client) -> list[int]:
    return [h.duration_seconds for h in await store.chat_history.list_for_user(
        UserId(user.user_id))]


async def test_a_lost_node_s_call_ends_when_the_node_last_vouched_for_it(node: Node) -> None:
    sweep_by_hand(node)
    a, b = await node.user("Ada"), await node.user("Bo")
    store = node.sig.api.store
    now = node.clock.time()
    call = await other_nodes_call(store, a, b, "gone-node", started=now - 60, seconds=300)
    await store.calls.touch([call.room_id], utc_from_timestamp(now - 40))  # its last vouch
    # This node has just started: it cannot tell a dead node from its own database trouble.
    assert await node.sig.calls.sweep() == 0
    # Once this node has reached the database for DEAD_AFTER, a sweep decides.
    await node.advance(DEAD_AFTER + 1)
    await until(lambda: is_ended(store, call), lambda: node.sig.calls.sweep(), "the sweep")
    stored = await store.calls.get(call.room_id)
    assert stored is not None and stored.end_reason is CallEndReason.NODE_LOST
    assert stored.ended_at == utc_from_timestamp(now - 40)  # not now, not its scheduled end
    for client in (a, b):
        ended = await client.next("call:ended")
        assert ended == {"roomId": call.room_id, "reason": "node_lost", "durationSeconds": 20}
        assert await history_seconds(store, client) == [20]
    await node.sig.calls.sweep()
    assert await history_seconds(store, a) == [20]  # swept once, recorded once


async def test_an_overdue_call_whose_node_still_vouches_ran_to_its_end(node: Node) -> None:
    sweep_by_hand(node)
    a, b = await node.user("Ada"), await node.user("Bo")
    store = node.sig.api.store
    now = node.clock.time()
    await node.advance(DEAD_AFTER + 1)
    call = await other_nodes_call(store, a, b, "busy-node", started=now - 100, seconds=60)
    await store.calls.touch([call.room_id], utcnow(node.clock))  # that node is alive
    await until(lambda: is_ended(store, call), lambda: node.sig.calls.sweep(), "the sweep")
    stored = await store.calls.get(call.room_id)
    assert stored is not None and stored.end_reason is CallEndReason.COMPLETED
    assert (await a.next("call:ended"))["durationSeconds"] == 60
    assert await history_seconds(store, b) == [60]


async def test_a_call_still_running_elsewhere_is_left_alone(node: Node) -> None:
    sweep_by_hand(node)
    a, b = await node.user("Ada"), await node.user("Bo")
    store = node.sig.api.store
    await node.advance(DEAD_AFTER + 1)
    call = await other_nodes_call(store, a, b, "live-node", started=node.clock.time() - 5,
                                  seconds=60)
    await node.sig.calls.sweep()
    assert not await is_ended(store, call)


async def test_a_disconnected_call_lasted_until_the_connection_was_lost(node: Node) -> None:
    a, b = await node.user("Ada"), await node.user("Bo")
    room_id = await start_call(node, a, b, seconds=60)
    await node.advance(12)
    await a.close()
    node.clients.remove(a)
    await until(lambda: _offline(node, a.user_id), lambda: asyncio.sleep(0), "Ada offline")
    await node.advance(node.sig.calls.rules.reconnect_grace + 1)
    ended = await b.next("call:ended")
    assert ended == {"roomId": room_id, "reason": "disconnected", "durationSeconds": 12}


async def _offline(node: Node, user_id: str) -> bool:
    return not await node.sig.presence.is_online(user_id)


async def test_a_call_that_ends_while_the_database_is_down_is_recorded_completed(
        aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    db = await asyncio.to_thread(create_postgres_database)
    node = await make_node(aiohttp_client, tmp_path, {"DATABASE_URL": db.url})
    try:
        a, b = await node.user("Ada"), await node.user("Bo")
        store = node.sig.api.store
        room_id = await start_call(node, a, b, seconds=30)
        await node.advance(10)
        await a.request("room:message", roomId=room_id, text="before the outage")
        async with postgres_outage(db):
            await node.advance(21)  # the end timer fires while the database is down
            for client in (a, b):  # the end is announced on time all the same
                assert await client.next("call:ended") == {
                    "roomId": room_id, "reason": "completed", "durationSeconds": 30}
            assert room_id not in node.client.app[SFU].rooms
            await node.advance(90)  # retries, beats and sweeps fail meanwhile
        # The database is back: a retry writes the end as it was decided, not as node_lost.

        async def recorded() -> bool:
            call = await store.calls.get(RoomId(room_id))
            return call is not None and call.ended_at is not None

        await until(recorded, lambda: node.advance(RECORD_RETRY_MAX), "the end's record")
        call = await store.calls.get(RoomId(room_id))
        assert call is not None and call.end_reason is CallEndReason.COMPLETED
        assert call.ended_at == call.ends_at
        for client in (a, b):
            assert await history_seconds(store, client) == [30]
        record = (await store.chat_history.list_for_user(UserId(b.user_id)))[0]
        assert [m.text for m in record.messages] == ["before the outage"]
        metrics = await store.users.get(UserId(a.user_id))
        assert metrics is not None and metrics.timer_total_seconds == 30
    finally:
        for client in node.clients:
            await client.close()
        await node.client.close()
        await asyncio.to_thread(drop_postgres_database, db)


async def test_live_state_lost_with_redis_is_rebuilt_mid_call(
        aiohttp_client: AiohttpClient, tmp_path: Path, own_redis: PrivateRedis) -> None:
    node = await make_node(aiohttp_client, tmp_path, {"REDIS_URL": own_redis.url})
    try:
        a, b, c = await node.user("Ada"), await node.user("Bo"), await node.user("Cy")
        await c.request("presence:set", available=False)
        room_id = await start_call(node, a, b, seconds=120)
        await a.request("room:message", roomId=room_id, text="before")
        restores = node.sig.keeper.restores
        await asyncio.to_thread(own_redis.stop)
        await asyncio.to_thread(own_redis.start)  # back, and empty
        assert await node.sig.presence.current_call(a.user_id) is None

        async def rebuilt() -> bool:
            return node.sig.keeper.restores > restores

        await until(rebuilt, lambda: node.advance(node.sig.keeper.interval), "the rebuild")
        for user in (a, b):
            assert await node.sig.presence.current_call(user.user_id) == room_id
            state = await node.sig.presence.state(user.user_id)
            assert state.online and state.in_call == room_id
        cy = await node.sig.presence.state(c.user_id)
        assert cy.online and cy.available is False  # as Cy set it
        await b.request("room:message", roomId=room_id, text="after")
        assert [(await a.next("room:message"))["text"] for _ in range(2)] == ["before", "after"]
        again = await node.connect(a.token, a.user_id)  # a reconnect resumes the call
        assert again.state["call"] is not None and again.state["call"]["roomId"] == room_id
        assert again.state["call"]["sfu"]["url"].endswith("/sfu/ws")
        await node.advance(10)
        await a.request("room:leave", roomId=room_id)
        assert (await b.next("call:ended"))["reason"] == "left"
        with pytest.raises(Rejected):
            await a.request("room:message", roomId=room_id, text="too late")
        history = await node.sig.api.store.chat_history.list_for_user(UserId(a.user_id))
        assert [m.text for m in history[0].messages] == ["before", "after"]
    finally:
        for client in node.clients:
            await client.close()
        await node.client.close()


def test_dead_after_leaves_room_for_several_beats() -> None:
    from signaling.calls import BEAT

    assert DEAD_AFTER >= 5 * BEAT  # one slow beat on a busy machine is not a death
    assert timedelta(seconds=DEAD_AFTER) < timedelta(minutes=1)
