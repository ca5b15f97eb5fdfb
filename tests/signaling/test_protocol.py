"""The signaling frame format (docs/protocol.md, "Signaling"): parsing and id echo."""

from __future__ import annotations

import json

import pytest

from core.errors import ErrorCode, InvalidArgument
from signaling.protocol import MAX_ID_LENGTH, Frame, ack, error


@pytest.mark.parametrize("frame_id", ["r1", 7, 0, "0", -3])
def test_an_id_is_echoed_exactly_as_sent(frame_id: str | int) -> None:
    frame = Frame.parse(json.dumps({"type": "presence:heartbeat", "id": frame_id}))
    assert json.loads(ack(frame.id))["id"] == frame_id
    assert json.loads(error(frame.id, ErrorCode.NOT_FOUND, "x"))["id"] == frame_id


@pytest.mark.parametrize("frame_id", [True, 1.5, [1], {"a": 1}, "x" * (MAX_ID_LENGTH + 1),
                                      10 ** (MAX_ID_LENGTH + 1)])
def test_an_id_that_is_not_a_short_string_or_integer_is_refused(frame_id: object) -> None:
    with pytest.raises(InvalidArgument, match="'id'"):
        Frame.parse(json.dumps({"type": "presence:heartbeat", "id": frame_id}))


def test_a_frame_without_an_id_gets_none_back() -> None:
    frame = Frame.parse('{"type": "presence:heartbeat"}')
    assert frame.id is None and "id" not in json.loads(ack(frame.id))
