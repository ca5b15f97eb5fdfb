"""Coverage-guided fuzzing of signaling frames: `Frame.parse` in signaling/protocol.py
(atheris; see fuzz/README.md).

    python fuzz/fuzz_frames.py [corpus dir ...] [-max_total_time=60 ...]

`Frame.parse` must only ever raise InvalidArgument, and a frame it returns must survive
`to_json` and a second parse unchanged, its id included.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.errors import InvalidArgument
from signaling.protocol import Frame


def _text(data: bytes) -> str:
    """The frame text: the input as it is, or (first byte odd) its NUL-separated parts as the
    raw JSON of a frame's type, id and data, so that mutations get past the JSON grammar."""
    raw = data[1:].decode("utf-8", "surrogateescape")
    if not data or not data[0] & 1:
        return raw
    kind, frame_id, body = [*raw.split("\x00", 2), "", ""][:3]
    fields = [f'"type": {kind or chr(34) + "x" + chr(34)}']
    if frame_id:
        fields.append(f'"id": {frame_id}')
    if body:
        fields.append(f'"data": {body}')
    return "{" + ", ".join(fields) + "}"


def TestOneInput(data: bytes) -> None:
    text = _text(data)
    try:
        frame = Frame.parse(text)
    except InvalidArgument:
        return
    assert isinstance(frame.type, str) and frame.type
    assert isinstance(frame.data, dict)
    assert frame.id is None or (isinstance(frame.id, (str, int))
                                and not isinstance(frame.id, bool))
    again = Frame.parse(frame.to_json())
    assert again.to_json() == frame.to_json()
    assert again.id == frame.id and type(again.id) is type(frame.id)


def main() -> None:
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
