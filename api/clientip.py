"""The client's IP address: the TCP peer, or X-Forwarded-For behind a trusted proxy only."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def _trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_ip(peer: str | None, forwarded_for: Sequence[str],
              trusted: Sequence[IPNetwork]) -> str:
    """Walk X-Forwarded-For from the right, past trusted proxies, to the first other address.

    Only when the TCP peer itself is a trusted proxy is the header read at all, so a client
    cannot pick its own address to dodge or poison a rate limit.
    """
    current = peer or "unknown"
    if not trusted or not _trusted(current, trusted):
        return current
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return current  # garbage in the chain: believe nothing further left
        if not _trusted(hop, trusted):
            return hop
        current = hop
    return current


def scopes(address: str) -> tuple[str, str]:
    """The (client, network) a rate limit counts `address` in: an IPv4 address and its /24;
    an IPv6 /64 (what one subscriber or host is given) and its /48 (one site). An IPv4-mapped
    IPv6 address counts as the IPv4 one; anything unparseable (a Unix socket) as itself."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address, address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip), str(ipaddress.ip_network(f"{ip}/24", strict=False))
    return (str(ipaddress.ip_network(f"{ip}/64", strict=False)),
            str(ipaddress.ip_network(f"{ip}/48", strict=False)))
