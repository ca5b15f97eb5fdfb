"""Join tokens: short-lived signed grants to join one SFU room as one user.

Signaling mints them; an SFU node checks them with the shared node secret and needs no
database. Format: `v1.<payload>.<signature>`, both base64url without padding; the payload is
JSON `{"room": ..., "user": ..., "exp": <unix seconds>}` and the signature is HMAC-SHA256 over
`v1.<payload>` with a key derived from the node secret for this purpose alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

from core.clock import Clock
from core.errors import InvalidArgument, PermissionDenied, Unauthenticated

VERSION = "v1"
DEFAULT_TTL = 300
MAX_TOKEN_LENGTH = 1024
MAX_ID_LENGTH = 128


@dataclass(frozen=True, slots=True)
class JoinGrant:
    room_id: str
    user_id: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:  # one spelling per token: no padding, stray characters, spare bits
        raise ValueError("not canonical base64url")
    return data


def _key(secret: bytes) -> bytes:
    return hmac.new(secret, b"napalmsky sfu join token", hashlib.sha256).digest()


def _check_id(name: str, value: str) -> None:
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise InvalidArgument(f"{name} must be 1-{MAX_ID_LENGTH} printable characters")


def mint_join_token(
    secret: bytes, room_id: str, user_id: str, clock: Clock, ttl: int = DEFAULT_TTL
) -> str:
    _check_id("room", room_id)
    _check_id("user", user_id)
    if ttl <= 0:
        raise InvalidArgument("ttl must be positive")
    payload = {"room": room_id, "user": user_id, "exp": int(clock.time()) + ttl}
    body = f"{VERSION}.{_b64(json.dumps(payload, separators=(',', ':')).encode())}"
    sig = hmac.new(_key(secret), body.encode(), hashlib.sha256).digest()
    token = f"{body}.{_b64(sig)}"
    if len(token) > MAX_TOKEN_LENGTH:  # non-ASCII ids take up to 12 characters each in JSON
        raise InvalidArgument("room and user ids are too long for a join token")
    return token


def verify_join_token(
    secret: bytes, token: str, clock: Clock, room_id: str | None = None
) -> JoinGrant:
    """The grant a token carries; Unauthenticated when forged or expired, PermissionDenied
    when it is valid for another room than `room_id`."""
    if (not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii()
            or token.count(".") != 2):
        raise Unauthenticated("invalid join token")
    version, payload_b64, sig_b64 = token.split(".")
    if version != VERSION:
        raise Unauthenticated("invalid join token")
    expected = hmac.new(_key(secret), f"{version}.{payload_b64}".encode(), hashlib.sha256)
    try:
        sig = _unb64(sig_b64)
        payload = json.loads(_unb64(payload_b64))
    except (binascii.Error, ValueError):
        raise Unauthenticated("invalid join token") from None
    if not hmac.compare_digest(expected.digest(), sig):
        raise Unauthenticated("invalid join token")
    try:
        grant = JoinGrant(str(payload["room"]), str(payload["user"]), int(payload["exp"]))
    except (KeyError, TypeError, ValueError, OverflowError):
        raise Unauthenticated("invalid join token") from None
    if clock.time() >= grant.expires_at:
        raise Unauthenticated("join token expired")
    if room_id is not None and grant.room_id != room_id:
        raise PermissionDenied("join token is for another room")
    return grant
