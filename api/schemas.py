"""Request and response schemas of the REST API (pydantic): they validate input and generate
the OpenAPI document, so the two cannot disagree.

Every rule the server applies to an input is a constraint here (a length, an enum, a pattern),
checked by pydantic with the same regular-expression dialect the document states (Unicode
classes, `$` only at the very end), so the document says exactly what is accepted. Rules JSON
Schema cannot state (a password's byte length, the common-password list) are in the field's
description and enforced by the same function the domain uses. A broken rule is a 400 whose
message names the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

from api.powchallenge import COUNTER_PATTERN, TOKEN_PATTERN
from api.powchallenge import MAX_TOKEN_LENGTH as CHALLENGE_TOKEN_MAX
from core.accounts import MAX_NAME
from core.errors import ErrorCode, InvalidArgument
from core.passwords import MAX_BYTES as PASSWORD_MAX_BYTES
from core.passwords import MIN_LENGTH as PASSWORD_MIN_LENGTH
from core.passwords import check_password
from core.store import Gender

SocialPlatform = Literal["instagram", "tiktok", "x", "snapchat", "linkedin", "website"]
SOCIAL_PLATFORMS: tuple[str, ...] = get_args(SocialPlatform)
SOCIAL_MAX_LENGTH = 200
#: A handle (`@` optional) or an https URL written in printable ASCII (IRIs percent-encoded).
SOCIAL_PATTERN = (r"^(?:@?[A-Za-z0-9._]{1,30}"
                  r"|https://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[!-~]*)?)$")
#: Letters, marks, digits, punctuation, symbols and plain spaces (Python's `str.isprintable`),
#: with at least one that is not a space: no tabs, line breaks, control or format characters.
NAME_PATTERN = r"^ *[\p{L}\p{M}\p{N}\p{P}\p{S}][\p{L}\p{M}\p{N}\p{P}\p{S} ]*$"
#: An address as typed: an ASCII local part, a host name of letters, digits and hyphens.
EMAIL_PATTERN = (r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}"
                 r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                 r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
EMAIL_MAX_LENGTH = 254
#: No NUL character (a database cannot store one).
NO_NUL = r"^[^\x00]*$"
DECK_MAX_PAGE = 50
DECK_DEFAULT_PAGE = 20


def _reasons(field: str, **reason_by_error: str) -> WrapValidator:
    """Turn the constraint a value broke into a 400 that names the field in plain words:
    `reason_by_error` maps a pydantic error type (`string_too_long`, ...) to the reason."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            reason = reason_by_error.get(exc.errors()[0]["type"])
            if reason is None:
                raise
            raise InvalidArgument(f"{field} {reason}") from None

    return WrapValidator(validate)


def _rule(check: Callable[[str], object]) -> WrapValidator:
    """Apply the domain's own check (it raises InvalidArgument with its message) to a string
    before the constraints the document states, which it implies."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(value, str):
            check(value)
        return handler(value)

    return WrapValidator(validate)


def _check_login_password(password: str) -> None:
    if len(password.encode("utf-8")) > PASSWORD_MAX_BYTES:
        raise InvalidArgument(f"password must be at most {PASSWORD_MAX_BYTES} bytes")


Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_NAME, pattern=NAME_PATTERN),
    Field(description="Printable text on one line; runs of spaces are collapsed and the ends "
                      "trimmed."),
    _reasons("name", string_too_short="must not be empty",
             string_too_long=f"must be at most {MAX_NAME} characters",
             string_pattern_mismatch="must be printable text on one line, not blank"),
]
Email = Annotated[
    str,
    StringConstraints(max_length=EMAIL_MAX_LENGTH, pattern=EMAIL_PATTERN),
    Field(description="An email address (compared without regard to case)."),
    _reasons("email", string_too_long="is not a valid address",
             string_pattern_mismatch="is not a valid address"),
]
NewPassword = Annotated[
    str,
    StringConstraints(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_BYTES,
                      pattern=NO_NUL),
    Field(json_schema_extra={"format": "password"},
          description=f"{PASSWORD_MIN_LENGTH} characters or more, at most {PASSWORD_MAX_BYTES} "
                      "bytes in UTF-8, not one of the commonly used passwords."),
    _rule(check_password),
]
LoginEmail = Annotated[
    str,
    StringConstraints(min_length=3, max_length=EMAIL_MAX_LENGTH, pattern=NO_NUL),
    Field(description="The account's email address; one that is not an address is simply "
                      "not found (401)."),
]
LoginPassword = Annotated[
    str,
    StringConstraints(min_length=1, max_length=PASSWORD_MAX_BYTES, pattern=NO_NUL),
    Field(json_schema_extra={"format": "password"},
          description=f"At most {PASSWORD_MAX_BYTES} bytes in UTF-8 (no longer password can "
                      "exist)."),
    _rule(_check_login_password),
]
SocialLink = Annotated[
    str, StringConstraints(max_length=SOCIAL_MAX_LENGTH, pattern=SOCIAL_PATTERN),
    Field(description="A handle (letters, digits, `.` and `_`, `@` optional, at most 30) or an "
                      f"https URL in printable ASCII, at most {SOCIAL_MAX_LENGTH} characters."),
]


def _socials_reasons(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "literal_error" and error["loc"][-1:] == ("[key]",):
            raise InvalidArgument(f"socials: unknown platform {str(error['loc'][0])[:20]!r}; "
                                  f"one of {', '.join(SOCIAL_PLATFORMS)}") from None
        if error["type"] in ("string_pattern_mismatch", "string_too_long") and error["loc"]:
            raise InvalidArgument(f"socials.{error['loc'][0]} must be a handle or an https "
                                  f"URL of at most {SOCIAL_MAX_LENGTH} characters") from None
        raise


Socials = Annotated[dict[SocialPlatform, SocialLink], WrapValidator(_socials_reasons)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChallengeSolution(Request):
    """A solved proof-of-work challenge, from a 429 `challenge_required`."""

    token: Annotated[str, StringConstraints(max_length=CHALLENGE_TOKEN_MAX, pattern=TOKEN_PATTERN),
                     Field(description="The challenge's `token`, as given."),
                     _reasons("challenge.token", string_too_long="is not a challenge token",
                              string_pattern_mismatch="is not a challenge token")]
    counter: Annotated[str, StringConstraints(pattern=COUNTER_PATTERN),
                       Field(description="Decimal digits such that SHA-256(token + counter) "
                                         "starts with the challenge's `bits` zero bits."),
                       _reasons("challenge.counter", string_pattern_mismatch="must be 1 to 20 "
                                "digits")]


_SOLUTION = Field(default=None, description=(
    "Only when the previous answer was 429 `challenge_required`: its challenge, solved. "
    "A solution is good once, from the address it was given to, until it expires; a bad one "
    "is a 403 `challenge_failed`."))


class GuestRequest(Request):
    name: Name
    gender: Gender
    challenge: ChallengeSolution | None = _SOLUTION


class RegisterRequest(Request):
    email: Email
    password: NewPassword
    name: Name
    gender: Gender
    challenge: ChallengeSolution | None = _SOLUTION


class LoginRequest(Request):
    email: LoginEmail
    password: LoginPassword


class UpgradeRequest(Request):
    email: Email
    password: NewPassword


class TotpRequest(Request):
    code: Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$"),
                    Field(description="The 6-digit code of the admin's authenticator."),
                    _reasons("code", string_pattern_mismatch="must be 6 digits")]


class ProfilePatch(Request):
    name: Name | None = None
    gender: Gender | None = None
    socials: Socials | None = Field(
        default=None, description="Replaces all my socials: platform -> handle or https URL.")


# ---- path and query parameters (one field per parameter; path ones are named in the path) ----


def _query_integer(field: str) -> BeforeValidator:
    """A query integer as written: ASCII digits with an optional sign (what the document's
    `integer` means on the wire), nothing that Python's int() would also read (` 5`, `5_0`)."""

    def parse(value: Any) -> Any:
        if isinstance(value, str):
            if not re.fullmatch(r"[+-]?[0-9]+", value):
                raise InvalidArgument(f"{field} must be an integer")
            return int(value)
        return value

    return BeforeValidator(parse)


class Parameters(BaseModel):
    model_config = ConfigDict(extra="ignore")


class UserPath(Parameters):
    user_id: Annotated[str, Field(json_schema_extra={"format": "uuid"},
                                  description="A user's id; any other text finds no one (404).")]


class DeckQuery(Parameters):
    limit: Annotated[
        int, Field(ge=1, le=DECK_MAX_PAGE, description="People per page."),
        _query_integer("limit"),
        _reasons("limit", greater_than_equal=f"must be between 1 and {DECK_MAX_PAGE}",
                 less_than_equal=f"must be between 1 and {DECK_MAX_PAGE}"),
    ] = DECK_DEFAULT_PAGE
    cursor: Annotated[
        str, StringConstraints(max_length=36, pattern=r"^[0-9a-f-]*$"),
        Field(description="`nextCursor` of the previous page; empty or absent for the first."),
        _reasons("cursor", string_too_long="must be a nextCursor from a previous page",
                 string_pattern_mismatch="must be a nextCursor from a previous page"),
    ] = ""


# ---- responses ----


class PublicUser(BaseModel):
    """What anyone signed in may see of a user."""

    id: str
    name: str
    gender: Gender
    selfieUrl: str | None = None
    videoUrl: str | None = None  # the intro video (H.264 + AAC in MP4), signed, expiring
    posterUrl: str | None = None  # its poster JPEG
    socials: dict[str, str] = Field(default_factory=dict)


class IntroVideoState(BaseModel):
    """My intro video's processing: `status` queued, running (with `progress` percent), done
    (with the signed `videoUrl` and `posterUrl`) or failed (with `error`, a reason to show)."""

    jobId: str
    status: str
    progress: int
    error: str | None = None
    videoUrl: str | None = None
    posterUrl: str | None = None
    durationSeconds: float | None = None
    width: int | None = None
    height: int | None = None
    updatedAt: datetime


class Me(PublicUser):
    """What a user sees of themself."""

    accountType: str
    email: str | None
    isAdmin: bool
    createdAt: datetime


class AuthResponse(BaseModel):
    token: str
    user: Me


class CallSummaryOut(BaseModel):
    partnerId: str
    partnerName: str
    roomId: str
    durationSeconds: int
    endedAt: datetime


class MetricsResponse(BaseModel):
    timerTotalSeconds: int
    sessionCount: int
    lastSessions: list[CallSummaryOut]


class SelfieResponse(BaseModel):
    url: str
    expiresAt: datetime


class AdminUser(Me):
    """An admin's view: adds the fields the public never sees."""

    banStatus: str
    paidStatus: str


class Challenge(BaseModel):
    """A proof-of-work challenge: find a decimal `counter` such that SHA-256(token + counter),
    as UTF-8, starts with `bits` zero bits (about 2^bits tries), then send the request again
    with `"challenge": {"token", "counter"}` in its body."""

    token: str
    algorithm: Literal["sha256-leading-zero-bits"]
    bits: int = Field(ge=1, le=32)
    expiresIn: int = Field(ge=1, description="Seconds the challenge stays valid.")


class ErrorBody(BaseModel):
    code: ErrorCode
    message: str
    challenge: Challenge | None = Field(
        default=None, description="With code `challenge_required` only: what to solve.")


class ErrorResponse(BaseModel):
    error: ErrorBody
