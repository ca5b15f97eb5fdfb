"""docs/protocol.md against the server: every request, event, state field, close code and
timestamp the document states is what a real node sends, and nothing it sends is missing from
the document (issue 10, item 10)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.pytest_plugin import AiohttpClient

from signaling import protocol
from signaling.placement import MediaEvent
from tests.signaling.conftest import Client, Node, Rejected, make_node

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


def section(title: str, level: str = "###", after: str = "") -> str:
    """The text of the first section called `title` that comes after the heading `after`."""
    start = DOC.index(after) if after else 0
    begin = DOC.index(f"{level} {title}", start)
    rest = DOC[begin + len(title) + len(level) + 1:]
    ends = [i for i in (rest.find("\n## "), rest.find("\n### ")) if i >= 0]
    return rest[:min(ends)] if ends else rest


def table(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[2:]]


def names(shape: str) -> set[str]:
    """The field names of a documented shape such as `{"a", "b": {"c"}, "d": [{"e"}]}`:
    every quoted name outside list brackets, up to the text that explains it."""
    depth, end = 0, len(shape)
    for i, ch in enumerate(shape):
        depth += ch == "{"
        depth -= ch == "}"
        if depth == 0 and ch == "}":
            end = i + 1
            break
    shape = re.sub(r"\[[^\]]*\]", "", shape[:end])
    return set(re.findall(r'(?<![:|] )"(\w+)"', shape))  # names, not values ("a": "v")


def keys(data: Any) -> set[str]:
    """The field names of a frame's data at every depth of objects (not inside lists)."""
    if not isinstance(data, dict):
        return set()
    found = set(data)
    for value in data.values():
        found |= keys(value)
    return found


def types_of(cell: str) -> list[str]:
    return re.findall(r"`([\w:]+)`", cell)


class Recorder(asyncio.Queue[dict[str, Any]]):
    """A client's event queue that also keeps every frame by type (what `next` consumes
    included)."""

    def __init__(self, events: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__()
        self.seen = events

    def put_nowait(self, item: dict[str, Any]) -> None:
        self.seen.setdefault(item["type"], []).append(item["data"])
        super().put_nowait(item)


def timestamps(data: Any) -> list[str]:
    if isinstance(data, dict):
        out = [v for k, v in data.items() if k.endswith("At")]
        for value in data.values():
            out += timestamps(value)
        return out
    if isinstance(data, list):
        return [t for item in data for t in timestamps(item)]
    return []


@pytest.fixture
async def node(aiohttp_client: AiohttpClient, tmp_path: Path) -> AsyncIterator[Node]:
    """A node with STUN and TURN configured: `call:start` then shows every documented field."""
    n = await make_node(aiohttp_client, tmp_path, {
        "NAPALMSKY_ICE_SERVERS": "stun:stun.example.com,turn:turn.example.com:3478",
        "NAPALMSKY_TURN_SECRETS": "protocol-doc-secret-0123456789"})
    try:
        yield n
    finally:
        for c in n.clients:
            await c.close()


async def test_the_document_matches_what_a_node_sends(node: Node) -> None:
    requests = {t: names(row[2]) for row in table(section("Requests (client to server)"))
                for t in types_of(row[0])}
    events = {t: names(row[1]) for row in table(section("Events (server to client)"))
              for t in types_of(row[0])}
    assert set(requests) == set(node.sig.gateway._handlers)

    a, b, c = await node.user("Ada"), await node.user("Bo"), await node.user("Cy")
    acks: dict[str, dict[str, Any]] = {}
    seen: dict[str, list[dict[str, Any]]] = {}
    for client in (a, b, c):
        client.events = Recorder(seen)

    async def request(client: Client, kind: str, **data: Any) -> dict[str, Any]:
        acks[kind] = await client.request(kind, **data)
        return acks[kind]

    status, _ = await node.get("/api/v1/deck", c.token)  # Cy sees Ada and Bo: their changes
    assert status == 200
    await request(a, "presence:heartbeat")
    await request(b, "presence:set", available=False)
    await request(b, "presence:set", available=True)
    for ending, who in (("call:decline", b), ("call:cancel", a)):
        invite = await request(a, "call:invite", to=b.user_id, seconds=30)
        await b.next("call:invite")
        await request(who, ending, inviteId=invite["inviteId"])
        await a.next("call:declined" if ending == "call:decline" else "call:cancelled")
    invite = await request(a, "call:invite", to=b.user_id, seconds=30)
    await node.advance(31)
    await a.next("call:expired")
    invite = await request(a, "call:invite", to=b.user_id, seconds=30)
    room_id = (await request(b, "call:accept", inviteId=invite["inviteId"]))["roomId"]
    await a.next("call:start")
    await request(a, "room:message", roomId=room_id, text="hello")
    await request(b, "call:token", roomId=room_id)
    await request(a, "room:media", roomId=room_id, audio=False, video=True)
    await b.next("room:media")
    node.sig.calls._on_media(MediaEvent(room_id, a.user_id, "connected"))  # as the SFU would
    await node.advance(0)
    await b.next("call:media")
    await request(b, "room:leave", roomId=room_id)
    await a.next("call:ended")
    again = await node.connect(a.token, a.user_id)
    seen.setdefault("state", []).extend([a.state, again.state])
    # Coverage: every documented request and event happened.
    assert set(acks) == set(requests)
    assert set(events) <= set(seen), set(events) - set(seen)

    for kind, documented in requests.items():
        assert keys(acks[kind]) == documented, kind
    for kind, documented in events.items():
        for data in seen[kind]:
            assert keys(data) <= documented, (kind, keys(data) - documented)
        assert set().union(*(keys(d) for d in seen[kind])) == documented, kind

    state_doc = names(DOC[DOC.index('{"type": "state", "data": {'):])
    state_seen = set().union(*(keys(s) for s in seen["state"]))
    assert state_seen <= state_doc and {"protocol", "user", "presence", "invites", "call",
                                        "lastCall"} <= state_seen
    assert again.state["lastCall"]["reason"] == "left"

    # One format for time, as in REST: ISO 8601 in UTC with a Z.
    stamps = timestamps([seen, acks])
    assert stamps
    for stamp in stamps:
        assert isinstance(stamp, str) and stamp.endswith("Z"), stamp
        assert datetime.fromisoformat(stamp).utcoffset() is not None


def test_the_close_codes_are_the_ones_the_servers_use() -> None:
    from sfu import ws as sfu_ws

    signaling_doc = {int(n) for n in re.findall(r"\b(\d{4})\b", section(
        "Close codes", after="## Signaling"))}
    used = {v for k, v in vars(protocol).items() if k.startswith("CLOSE_")}
    assert signaling_doc == used | {1009, 1001}
    sfu_doc = {int(row[0]) for row in table(section("Close codes", after="## SFU join"))}
    assert sfu_doc == set(sfu_ws._CLOSE_CODES.values()) - {4503} | {1000, 1009, 4500}


@pytest.mark.parametrize(("frame", "frame_id"), [
    ('{"id": "x1", "type": 5}', "x1"),  # parses as JSON: the id comes back
    ('{"id": 9, "data": []}', 9),
    ("{not json", None),  # nothing to read it from
])
async def test_an_unparsable_frame_s_error_keeps_its_id(node: Node, frame: str,
                                                         frame_id: object) -> None:
    a = await node.user("Ada")
    await a.ws.send_str(frame)
    reply = await a.events.get()
    assert reply["type"] == "error" and reply["data"]["code"] == "invalid_argument"
    assert reply.get("id") == frame_id


async def test_a_fresh_join_token_only_for_a_participant(node: Node) -> None:
    a, b, c = await node.user("Ada"), await node.user("Bo"), await node.user("Cy")
    invite = await a.request("call:invite", to=b.user_id)
    room_id = (await b.request("call:accept", inviteId=invite["inviteId"]))["roomId"]
    grant = await a.request("call:token", roomId=room_id)
    assert grant["sfu"]["url"].endswith("/sfu/ws") and grant["sfu"]["token"].startswith("v1.")
    with pytest.raises(Rejected) as outsider:
        await c.request("call:token", roomId=room_id)
    assert outsider.value.code == "failed_precondition"
