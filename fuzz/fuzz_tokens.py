"""Coverage-guided fuzzing of SFU join tokens: sfu/token.py (atheris; see fuzz/README.md).

    python fuzz/fuzz_tokens.py [corpus dir ...] [-max_total_time=60 ...]

The input's first byte picks a mode: the rest is a token to verify, edits (replace, insert,
delete, cut) to apply to a valid token, or a payload signed with the secret. Verification must
only ever raise Unauthenticated or PermissionDenied, and accept no token but the minted one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.clock import FakeClock
from core.errors import PermissionDenied, Unauthenticated
from sfu.token import mint_join_token, verify_join_token

SECRET = b"fuzz-secret-" * 3
CLOCK = FakeClock(1_700_000_000.0)
VALID = mint_join_token(SECRET, "room-1", "user-1", CLOCK, ttl=60)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(payload: bytes) -> str:
    key = hmac.new(SECRET, b"napalmsky sfu join token", hashlib.sha256).digest()
    body = f"v1.{_b64(payload)}"
    return f"{body}.{_b64(hmac.new(key, body.encode(), hashlib.sha256).digest())}"


def _edited(edits: bytes) -> str:
    token = bytearray(VALID.encode())
    for i in range(0, len(edits) - 2, 3):
        operation, at, value = edits[i] % 4, edits[i + 1] % (len(token) + 1), edits[i + 2]
        if operation == 0 and at < len(token):
            token[at] = value
        elif operation == 1:
            token.insert(at, value)
        elif operation == 2:
            del token[at : at + 1 + value % 4]
        else:
            del token[at:]
    return token.decode("utf-8", "surrogateescape")


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 3, data[1:]
    if mode == 0:
        token = rest.decode("utf-8", "surrogateescape")
    elif mode == 1:
        token = _edited(rest)
    else:
        token = _signed(rest)
    try:
        grant = verify_join_token(SECRET, token, CLOCK, room_id="room-1" if data[0] & 4 else None)
    except (Unauthenticated, PermissionDenied):
        return
    if mode != 2:
        assert token == VALID, f"accepted an altered token: {token!r}"
    assert grant.expires_at > CLOCK.time()


def main() -> None:
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
