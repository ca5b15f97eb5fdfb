"""Request and response schemas of the REST API (pydantic): they validate input and generate
the OpenAPI document, so the two cannot disagree."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from core.store import Gender

SOCIAL_PLATFORMS = ("instagram", "tiktok", "x", "snapchat", "linkedin", "website")
_HANDLE = re.compile(r"^@?[A-Za-z0-9._]{1,30}$")
_HTTPS = re.compile(r"^https://[A-Za-z0-9.-]+(?::\d{1,5})?(?:/[^\s]*)?$")

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
Email = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=254)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GuestRequest(Request):
    name: Name
    gender: Gender


class RegisterRequest(Request):
    email: Email
    password: Password
    name: Name
    gender: Gender


class LoginRequest(Request):
    email: Email
    password: Password


class UpgradeRequest(Request):
    email: Email
    password: Password


class TotpRequest(Request):
    code: Annotated[str, StringConstraints(pattern=r"^\d{6}$")]


def check_socials(value: dict[str, str]) -> dict[str, str]:
    for platform, handle in value.items():
        if platform not in SOCIAL_PLATFORMS:
            raise ValueError(f"unknown platform {platform[:20]!r}")
        if len(handle) > 200 or not (_HANDLE.match(handle) or _HTTPS.match(handle)):
            raise ValueError(f"{platform} must be a handle or an https URL")
    return value


class ProfilePatch(Request):
    name: Name | None = None
    gender: Gender | None = None
    socials: dict[str, str] | None = Field(
        default=None, description=f"platform -> handle or https URL; platforms: "
        f"{', '.join(SOCIAL_PLATFORMS)}")

    @field_validator("socials")
    @classmethod
    def _socials(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else check_socials(value)


class PublicUser(BaseModel):
    """What anyone signed in may see of a user."""

    id: str
    name: str
    gender: Gender
    selfieUrl: str | None = None
    socials: dict[str, str] = Field(default_factory=dict)


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


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
