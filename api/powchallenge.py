"""Proof-of-work challenges: a cheap price a client pays instead of being refused.

A challenge is a token `v1.<payload>.<signature>` (base64url, no padding). The payload is JSON
`{"n": <random nonce>, "b": <bits>, "exp": <unix seconds>}`; the signature is HMAC-SHA256 over
`v1.<payload>` and the client's address, with a key derived from the node secret for this
purpose alone, so any node can check a challenge another minted, and a challenge is good only
from the address it was given to. The client solves it by finding a decimal `counter` such
that SHA-256(token + counter), as UTF-8, starts with `bits` zero bits: about 2^bits hashes for
the client, one hash and one HMAC for the server. That a solution is used once is the caller's
business (claim the nonce in live state): this module is pure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass

from core.clock import Clock
from core.errors import ChallengeFailed

VERSION = "v1"
ALGORITHM = "sha256-leading-zero-bits"
MAX_TOKEN_LENGTH = 256
MAX_BITS = 32
COUNTER_PATTERN = r"^[0-9]{1,20}$"
_COUNTER = re.compile(COUNTER_PATTERN)
TOKEN_PATTERN = r"^v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"  # noqa: S105 - a pattern
_TOKEN = re.compile(TOKEN_PATTERN)


@dataclass(frozen=True, slots=True)
class Challenge:
    token: str
    nonce: str
    bits: int
    expires_at: int

    def to_json(self, clock: Clock) -> dict[str, object]:
        """The challenge as the 429 body carries it."""
        return {"token": self.token, "algorithm": ALGORITHM, "bits": self.bits,
                "expiresIn": max(1, self.expires_at - int(clock.time()))}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not canonical base64url")
    return data


def _key(secret: bytes) -> bytes:
    return hmac.new(secret, b"napalmsky sign-up challenge", hashlib.sha256).digest()


def _sign(secret: bytes, body: str, subject: str) -> bytes:
    return hmac.new(_key(secret), f"{body}\n{subject}".encode(), hashlib.sha256).digest()


def leading_zero_bits(digest: bytes) -> int:
    """How many zero bits `digest` starts with."""
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def solves(token: str, counter: str, bits: int) -> bool:
    """True when SHA-256(token + counter) starts with `bits` zero bits."""
    return leading_zero_bits(hashlib.sha256(f"{token}{counter}".encode()).digest()) >= bits


def solve(token: str, bits: int) -> str:
    """The first counter that solves a challenge (for tests, benchmarks and CLI clients)."""
    counter = 0
    while not solves(token, str(counter), bits):
        counter += 1
    return str(counter)


class Challenges:
    """Mints and checks challenges bound to a client address, valid for `ttl` seconds."""

    def __init__(self, secret: bytes, clock: Clock, ttl: int = 300) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._secret = secret
        self._clock = clock
        self.ttl = ttl

    def mint(self, subject: str, bits: int) -> Challenge:
        if not 0 < bits <= MAX_BITS:
            raise ValueError(f"bits must be between 1 and {MAX_BITS}")
        nonce = secrets.token_hex(16)
        expires_at = int(self._clock.time()) + self.ttl
        payload = {"n": nonce, "b": bits, "exp": expires_at}
        body = f"{VERSION}.{_b64(json.dumps(payload, separators=(',', ':')).encode())}"
        token = f"{body}.{_b64(_sign(self._secret, body, subject))}"
        return Challenge(token, nonce, bits, expires_at)

    def verify(self, subject: str, token: str, counter: str) -> Challenge:
        """The challenge `counter` solves; ChallengeFailed, with a reason a client can act
        on, when the token is not one of ours for `subject`, has expired or is not solved."""
        invalid = ChallengeFailed("the challenge is not valid here: ask for a new one")
        if len(token) > MAX_TOKEN_LENGTH or not _TOKEN.fullmatch(token):
            raise invalid
        if not _COUNTER.fullmatch(counter):
            raise ChallengeFailed("the challenge's counter must be 1 to 20 digits")
        body, _, sig_b64 = token.rpartition(".")
        try:
            sig = _unb64(sig_b64)
            payload = json.loads(_unb64(body.partition(".")[2]))
        except (binascii.Error, ValueError):
            raise invalid from None
        if not hmac.compare_digest(_sign(self._secret, body, subject), sig):
            raise invalid
        try:
            challenge = Challenge(token, str(payload["n"]), int(payload["b"]),
                                  int(payload["exp"]))
        except (KeyError, TypeError, ValueError, OverflowError):
            raise invalid from None
        if self._clock.time() >= challenge.expires_at:
            raise ChallengeFailed("the challenge has expired: ask for a new one")
        if not solves(token, counter, challenge.bits):
            raise ChallengeFailed("the counter does not solve the challenge")
        return challenge
