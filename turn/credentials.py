"""TURN REST credentials: short-lived TURN usernames and passwords that coturn checks with a
shared secret (coturn's `use-auth-secret`, from draft-uberti-behave-turn-rest-00 section 2.2).

    username   = "<expiry, unix seconds>:<user id>"
    credential = base64(HMAC-SHA1(secret, username))

coturn accepts the pair until the expiry in the username, with any of the secrets it is
configured with (`static-auth-secret`, repeatable). The service signs with the first secret of
its list and lists all of them in coturn's configuration, so an operator rolls a secret in three
steps without dropping a call: add the new secret second (to coturn, then the nodes), move it
first, remove the old one once every credential signed with it has expired (one lifetime).

Pure: no I/O; the time is passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

MIN_SECRET_LENGTH = 16  # characters: a guessable secret lets anyone relay through our TURN


class TurnCredentialError(ValueError):
    """A secret list or a user id that cannot make a TURN credential."""


@dataclass(frozen=True, slots=True)
class TurnCredential:
    """A TURN REST credential: `username`, `credential` (the password) and `expires_at` (unix
    seconds, the number in the username)."""

    username: str
    credential: str
    expires_at: int


def _sign(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def mint(secrets: tuple[str, ...], user_id: str, now: float, lifetime: int) -> TurnCredential:
    """A credential for `user_id` valid from `now` (unix seconds) for `lifetime` seconds, signed
    with the first of `secrets`. Raises TurnCredentialError with no secret, or for a user id
    with a colon (the username's separator) or control characters."""
    if not secrets:
        raise TurnCredentialError("no TURN secret is configured")
    if not user_id or ":" in user_id or not user_id.isprintable():
        raise TurnCredentialError("a TURN user id is printable and has no colon")
    if lifetime <= 0:
        raise TurnCredentialError("a TURN credential lives a positive number of seconds")
    expires_at = int(now) + lifetime
    username = f"{expires_at}:{user_id}"
    return TurnCredential(username, _sign(secrets[0], username), expires_at)


def verify(secrets: tuple[str, ...], username: str, credential: str, now: float) -> bool:
    """What coturn checks: the username's expiry is in the future and the credential is the
    username's HMAC under one of `secrets` (compared in constant time)."""
    expiry, sep, _user = username.partition(":")
    if not sep or not expiry.isdigit() or int(expiry) <= now:
        return False
    return any(hmac.compare_digest(_sign(secret, username), credential) for secret in secrets)


__all__ = ["MIN_SECRET_LENGTH", "TurnCredential", "TurnCredentialError", "mint", "verify"]
