"""Signaling frames (signaling/protocol.py): `Frame.parse` only ever raises InvalidArgument, a
parsed frame round-trips through `to_json`, and ids are echoed exactly as sent."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.errors import ErrorCode, InvalidArgument
from signaling.protocol import MAX_FRAME_BYTES, MAX_ID_LENGTH, Frame, ack, error

fuzz = settings.get_profile("napalmsky-fuzz")

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
frame_ids = (
    st.text(max_size=MAX_ID_LENGTH)
    | st.integers(-(10 ** (MAX_ID_LENGTH - 1)) + 1, 10**MAX_ID_LENGTH - 1)
)
frames = st.builds(
    Frame,
    type=st.text(min_size=1, max_size=64),
    data=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    id=st.none() | frame_ids,
)


def parse_or_refuse(text: str) -> Frame | None:
    try:
        return Frame.parse(text)
    except InvalidArgument:
        return None


@fuzz
@given(text=st.text(max_size=300))
@example(text="[" * 5000)  # nesting deeper than the JSON decoder's recursion limit
@example(text='{"type": "x", "data": ' + "{\"a\": " * 3000 + "1" + "}" * 3000 + "}")
@example(text="\ud800")  # a lone surrogate, as only a Python caller can pass
@example(text='{"type": "x", "id": ' + "9" * 5000 + "}")  # int() digit limit
@example(text='{"type": "x", "id": 1e400}')
def test_any_text_parses_or_is_refused(text: str) -> None:
    frame = parse_or_refuse(text)
    if frame is not None:
        assert frame.type and isinstance(frame.data, dict)
        assert Frame.parse(frame.to_json()).to_json() == frame.to_json()


@fuzz
@given(value=json_values | st.dictionaries(st.sampled_from(["type", "id", "data", "x"]),
                                           json_values, max_size=4))
def test_any_json_value_parses_or_is_refused(value: Any) -> None:
    text = json.dumps(value)
    frame = parse_or_refuse(text)
    if frame is not None:
        assert isinstance(value, dict)
        assert frame.type == value["type"]
        assert frame.id == value.get("id")
        assert frame.data == value.get("data", {})


@fuzz
@given(frame=frames)
def test_a_frame_round_trips_through_to_json(frame: Frame) -> None:
    text = frame.to_json()
    if len(text.encode()) > MAX_FRAME_BYTES:
        with pytest.raises(InvalidArgument):
            Frame.parse(text)
        return
    assert Frame.parse(text) == frame


@fuzz
@given(frame_id=frame_ids, request=st.text(min_size=1, max_size=64))
def test_ids_are_echoed_exactly_as_sent(frame_id: str | int, request: str) -> None:
    frame = Frame.parse(json.dumps({"type": request, "id": frame_id}))
    assert type(frame.id) is type(frame_id) and frame.id == frame_id
    for reply in (ack(frame.id, ok=True), error(frame.id, ErrorCode.NOT_FOUND, "gone")):
        echoed = json.loads(reply)["id"]
        assert type(echoed) is type(frame_id) and echoed == frame_id


@fuzz
@given(frame=frames, cut=st.integers(0, 1000), junk=st.text(max_size=3))
def test_a_damaged_frame_is_refused_or_parses(frame: Frame, cut: int, junk: str) -> None:
    text = frame.to_json()
    cut %= len(text) + 1
    parse_or_refuse(text[:cut] + junk + text[cut + 1 :])
