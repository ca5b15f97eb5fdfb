"""The exception tree shared by every package: each error carries a stable code.

A code names what went wrong in terms a client can act on; the HTTP layer maps it to a status
and the WebSocket layer to an error frame. Messages are safe to show to a client: they never
carry secrets, SQL or stack traces.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_ARGUMENT = "invalid_argument"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    FAILED_PRECONDITION = "failed_precondition"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    CHALLENGE_REQUIRED = "challenge_required"
    CHALLENGE_FAILED = "challenge_failed"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class NapalmError(Exception):
    """Base of every error the service raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(NapalmError):
    code = ErrorCode.INVALID_ARGUMENT


class Unauthenticated(NapalmError):
    code = ErrorCode.UNAUTHENTICATED


class PermissionDenied(NapalmError):
    code = ErrorCode.PERMISSION_DENIED


class NotFound(NapalmError):
    code = ErrorCode.NOT_FOUND


class AlreadyExists(NapalmError):
    code = ErrorCode.ALREADY_EXISTS


class FailedPrecondition(NapalmError):
    code = ErrorCode.FAILED_PRECONDITION


class PayloadTooLarge(NapalmError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(NapalmError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class RateLimited(NapalmError):
    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ChallengeRequired(RateLimited):
    """A budget is spent, but the request may still pass with a solved proof-of-work
    challenge: `challenge` is what the client must solve (its wire form)."""

    code = ErrorCode.CHALLENGE_REQUIRED

    def __init__(self, message: str, retry_after: float, challenge: dict[str, object]) -> None:
        super().__init__(message, retry_after)
        self.challenge = challenge


class ChallengeFailed(NapalmError):
    """A challenge solution that is forged, expired, already used or wrong (403: the request
    is well formed, the proof is refused)."""

    code = ErrorCode.CHALLENGE_FAILED


class Unavailable(NapalmError):
    """A backing service (database, Redis, object store) did not answer."""

    code = ErrorCode.UNAVAILABLE
