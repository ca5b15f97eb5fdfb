"""ICE server URLs: `stun:`/`stuns:` (RFC 7064 section 3.1) and `turn:`/`turns:` (RFC 7065
section 3.1), as settings list them and clients receive them. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 7064 section 3.1 / RFC 7065 section 3.1: scheme ":" host [":" port] ["?transport=" t];
# host is a name, an IPv4 address or a bracketed IPv6 address.
_ICE_URL = re.compile(
    r"^(?P<scheme>stuns?|turns?):"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?$"
)


class IceUrlError(ValueError):
    """A string that is not a STUN or TURN URL (RFC 7064, RFC 7065)."""


@dataclass(frozen=True, slots=True)
class IceUrl:
    """One parsed ICE server URL. `port` is None when the URL names none (3478 for stun/turn,
    5349 for stuns/turns); `transport` is None when unstated (UDP for turn:, TCP for turns:)."""

    url: str
    scheme: str
    host: str
    port: int | None
    transport: str | None

    @property
    def is_turn(self) -> bool:
        return self.scheme in ("turn", "turns")


def parse_ice_url(url: str) -> IceUrl:
    """Parse `url`; raises IceUrlError naming it when it is not a STUN/TURN URL, has a port
    outside 1-65535, or has a transport on a STUN URL (RFC 7064 has none)."""
    match = _ICE_URL.match(url)
    if match is None:
        raise IceUrlError(f"{url!r} is not a stun:, stuns:, turn: or turns: URL "
                          "(scheme:host[:port][?transport=udp|tcp])")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise IceUrlError(f"{url!r}: the port must be 1-65535")
    scheme, transport = match["scheme"], match["transport"]
    if transport is not None and scheme.startswith("stun"):
        raise IceUrlError(f"{url!r}: a STUN URL has no transport (RFC 7064)")
    return IceUrl(url, scheme, match["host"], port, transport)


__all__ = ["IceUrl", "IceUrlError", "parse_ice_url"]
