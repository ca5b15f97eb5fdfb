"""The ICE servers a client gets: STUN and TURN URLs per region, TURN with a fresh credential.

URLs follow RFC 7064 (`stun:`, `stuns:`) and RFC 7065 (`turn:`, `turns:`, with an optional
`?transport=udp|tcp`); the list handed out is the W3C `RTCIceServer` shape
(`{"urls": [...], "username": ..., "credential": ...}`, WebRTC 1.0 section 4.2.1). STUN URLs
share one entry without credentials; TURN URLs share one entry with the user's TURN REST
credential (turn.credentials). Nothing is contacted unless configured: with no URLs the list is
empty and clients gather host candidates only.

Pure: no I/O, no framework; the time comes from the clock passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from core.iceurl import IceUrl, parse_ice_url
from turn.credentials import TurnCredential, mint


class Clock(Protocol):
    def time(self) -> float: ...


@dataclass(frozen=True, slots=True)
class IceServerList:
    """What a client is handed: `servers` in the RTCIceServer shape, and when its TURN
    credential expires (unix seconds; None without TURN)."""

    servers: list[dict[str, Any]]
    expires_at: int | None


class IceServers:
    """The ICE servers of each region, with TURN credentials minted per user.

    `default` serves every region without a list of its own in `by_region`. TURN URLs need
    `secrets` (ValueError otherwise: a TURN server without credentials would refuse every
    allocation); `lifetime` is the credential's validity in seconds.
    """

    def __init__(self, default: tuple[str, ...], by_region: Mapping[str, tuple[str, ...]],
                 *, secrets: tuple[str, ...], lifetime: int, clock: Clock) -> None:
        self._default = tuple(parse_ice_url(u) for u in default)
        self._by_region = {region: tuple(parse_ice_url(u) for u in urls)
                           for region, urls in by_region.items()}
        self._secrets = secrets
        self.lifetime = lifetime
        self._clock = clock
        if not secrets and any(u.is_turn for urls in (self._default, *self._by_region.values())
                               for u in urls):
            raise ValueError("TURN URLs are configured but no TURN secret")

    def urls(self, region: str) -> tuple[IceUrl, ...]:
        """The URLs of `region` (the default list when it has none of its own)."""
        return self._by_region.get(region, self._default)

    def for_user(self, user_id: str, region: str) -> IceServerList:
        """The list for `user_id` in `region`: a STUN entry and a TURN entry with a credential
        valid for `lifetime` seconds from now, each only when such URLs are configured."""
        urls = self.urls(region)
        stun = [u.url for u in urls if not u.is_turn]
        turn = [u.url for u in urls if u.is_turn]
        servers: list[dict[str, Any]] = []
        if stun:
            servers.append({"urls": stun})
        expires_at = None
        if turn:
            credential: TurnCredential = mint(self._secrets, user_id, self._clock.time(),
                                              self.lifetime)
            servers.append({"urls": turn, "username": credential.username,
                            "credential": credential.credential})
            expires_at = credential.expires_at
        return IceServerList(servers, expires_at)


__all__ = ["IceServerList", "IceServers"]
