"""The signaling wire format (docs/protocol.md): JSON frames `{type, id?, data}`.

Requests carry an `id` and get `{"type": "ack", "id", "data"}` or
`{"type": "error", "id", "data": {"code", "message"}}`. Server events have no id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from core.errors import ErrorCode, InvalidArgument

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 16 * 1024
MAX_ID_LENGTH = 64

# WebSocket close codes this gateway uses.
CLOSE_AUTH_TIMEOUT = 4001
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FLOOD = 4429
CLOSE_TOO_MANY_SOCKETS = 4430


#: A request's `id`, echoed in its ack or error exactly as sent: a string stays a string, a
#: number stays a number.
FrameId = str | int


@dataclass(frozen=True, slots=True)
class Frame:
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    id: FrameId | None = None

    @classmethod
    def parse(cls, text: str) -> Frame:
        if len(text.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
            raise InvalidArgument(f"frame is larger than {MAX_FRAME_BYTES} bytes")
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested past the decoder's limit
            raise InvalidArgument("frame is not valid JSON") from None
        if not isinstance(raw, dict):
            raise InvalidArgument("frame must be a JSON object")
        kind = raw.get("type")
        if not isinstance(kind, str) or not kind or len(kind) > 64:
            raise InvalidArgument("frame needs a string 'type'")
        frame_id = raw.get("id")
        if frame_id is not None and (not isinstance(frame_id, (str, int))
                                     or isinstance(frame_id, bool)
                                     or len(str(frame_id)) > MAX_ID_LENGTH):
            raise InvalidArgument("frame 'id' must be a short string or an integer")
        data = raw.get("data", {})
        if not isinstance(data, dict):
            raise InvalidArgument("frame 'data' must be an object")
        return cls(kind, data, frame_id)

    def to_json(self) -> str:
        out: dict[str, Any] = {"type": self.type}
        if self.id is not None:
            out["id"] = self.id
        out["data"] = self.data
        return json.dumps(out, separators=(",", ":"))


def request_id(text: object) -> FrameId | None:
    """The `id` of a frame that failed to parse, when one can still be read from it, so its
    error still reaches the request it answers; None otherwise (not JSON, or no usable id)."""
    if not isinstance(text, str) or len(text) > MAX_FRAME_BYTES:
        return None
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        return None
    frame_id = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(frame_id, bool) or not isinstance(frame_id, (str, int)) \
            or len(str(frame_id)) > MAX_ID_LENGTH:
        return None
    return frame_id


def event(kind: str, **data: Any) -> str:
    return Frame(kind, data).to_json()


def ack(frame_id: FrameId | None, **data: Any) -> str:
    return Frame("ack", data, frame_id).to_json()


def error(frame_id: FrameId | None, code: ErrorCode, message: str) -> str:
    return Frame("error", {"code": code.value, "message": message}, frame_id).to_json()


def field_str(data: dict[str, Any], name: str, *, max_length: int = 200) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise InvalidArgument(f"'{name}' must be a non-empty string")
    return value
