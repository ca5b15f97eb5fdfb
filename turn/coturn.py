"""A coturn configuration (turnserver.conf) for the service's TURN REST credentials.

Rendered from settings by `napalmsky turn config`. What it sets, by coturn's option names
(coturn 4.6, `man turnserver`):

- `listening-ip`, `listening-port` (3478, UDP and TCP), `tls-listening-port` with `cert` and
  `pkey` when a certificate is given (`turns:` clients; 443 gets through most firewalls),
  otherwise `no-tls` and `no-dtls`;
- `relay-ip`, `external-ip` (public, or public/private behind a 1:1 NAT), `min-port`/`max-port`
  (the relay range to open in the firewall);
- `use-auth-secret` with one `static-auth-secret` per secret (the first signs; coturn accepts
  all, for rotation), `realm`, `fingerprint`;
- `no-multicast-peers` and a `denied-peer-ip` range for every private, loopback, link-local,
  shared, reserved and documentation range (RFC 6890 special-purpose registries, both
  families, IPv4-mapped IPv6 included), so that the relay cannot reach the operator's internal
  network; `allowed-peer-ip` for addresses the relay must reach anyway (the SFU nodes on a
  private network). `allow_loopback` (tests on one machine only) lets 127.0.0.0/8 and ::1 through
  with `allow-loopback-peers`;
- `no-cli`, `no-software-attribute`, logging to stdout.

Pure: returns text.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

# RFC 6890 and the IANA special-purpose address registries: nothing a relay should reach.
DENIED_V4 = (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # private (RFC 1918)
    "100.64.0.0/10",  # shared address space, carrier-grade NAT (RFC 6598)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local (cloud metadata services live here)
    "172.16.0.0/12",  # private (RFC 1918)
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # documentation (TEST-NET-1)
    "192.88.99.0/24",  # 6to4 relay anycast
    "192.168.0.0/16",  # private (RFC 1918)
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # documentation (TEST-NET-2)
    "203.0.113.0/24",  # documentation (TEST-NET-3)
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and the broadcast address
)
# Not "::/128" (the unspecified address, never a peer): coturn 4.6 reads a range of that one
# address as matching every peer, IPv4 included, and the relay then reaches nobody.
DENIED_V6 = (
    "::1/128",  # loopback
    "::ffff:0:0/96",  # IPv4-mapped: the IPv4 ranges above, reached by another name
    "64:ff9b::/96",  # NAT64 well-known prefix: IPv4 addresses again
    "64:ff9b:1::/48",  # local-use NAT64
    "100::/64",  # discard-only
    "2001::/23",  # IETF protocol assignments
    "2001:db8::/32",  # documentation
    "2002::/16",  # 6to4: embeds IPv4 addresses
    "fc00::/7",  # unique local (the IPv6 private range)
    "fe80::/10",  # link-local
    "ff00::/8",  # multicast
)
LOOPBACK = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True, slots=True)
class CoturnConfig:
    """What the rendered file says. Ports are numbers; addresses are IP literals."""

    secrets: tuple[str, ...]
    realm: str
    listening_ips: tuple[str, ...] = ()  # empty: every address
    port: int = 3478
    tls_port: int = 5349
    tls_cert: str | None = None
    tls_key: str | None = None
    relay_ips: tuple[str, ...] = ()
    external_ips: tuple[str, ...] = ()  # "public" or "public/private"
    min_port: int = 49152
    max_port: int = 65535
    allowed_peers: tuple[str, ...] = ()  # addresses or CIDR ranges the relay may reach anyway
    allow_loopback: bool = False
    extra: tuple[str, ...] = field(default=())  # further lines, verbatim (tests: pidfile)


def _range(cidr: str) -> str:
    """coturn's form of a range: first-last (it reads CIDR only in recent releases)."""
    network = ipaddress.ip_network(cidr, strict=False)
    first, last = network[0], network[-1]
    return str(first) if first == last else f"{first}-{last}"


def denied_ranges(allow_loopback: bool = False) -> list[str]:
    """Every denied range as coturn writes it (first-last), loopback left out on request."""
    skip = set(LOOPBACK) if allow_loopback else set()
    return [_range(c) for c in (*DENIED_V4, *DENIED_V6) if c not in skip]


def render(config: CoturnConfig) -> str:
    """The turnserver.conf text for `config`. Raises ValueError without a secret, for a TLS
    port without both certificate and key, or for min_port > max_port."""
    if not config.secrets:
        raise ValueError("a TURN secret is needed (NAPALMSKY_TURN_SECRETS)")
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ValueError("TLS needs both a certificate and a key "
                         "(NAPALMSKY_TURN_TLS_CERT, NAPALMSKY_TURN_TLS_KEY)")
    if not 0 < config.min_port <= config.max_port < 65536:
        raise ValueError("the relay port range must satisfy 0 < min <= max < 65536")
    lines = [
        "# coturn configuration rendered by `napalmsky turn config`; render it again after",
        "# changing NAPALMSKY_TURN_* settings rather than editing it. It holds the TURN",
        "# secrets: keep it readable by coturn's user only.",
        "",
        "# listeners",
    ]
    lines += [f"listening-ip={ip}" for ip in config.listening_ips]
    lines.append(f"listening-port={config.port}")
    if config.tls_cert is not None:
        lines += [f"tls-listening-port={config.tls_port}", f"cert={config.tls_cert}",
                  f"pkey={config.tls_key}", "no-tlsv1", "no-tlsv1_1"]
    else:
        lines += ["no-tls", "no-dtls"]
    lines += ["", "# relay"]
    lines += [f"relay-ip={ip}" for ip in config.relay_ips]
    lines += [f"external-ip={ip}" for ip in config.external_ips]
    lines += [f"min-port={config.min_port}", f"max-port={config.max_port}"]
    lines += ["", "# credentials: TURN REST (the service mints them; the first secret signs)",
              "use-auth-secret"]
    lines += [f"static-auth-secret={secret}" for secret in config.secrets]
    lines += [f"realm={config.realm}", "fingerprint"]
    lines += ["", "# who the relay may reach: never the operator's own networks",
              "no-multicast-peers"]
    if config.allow_loopback:
        lines += ["# loopback allowed: for tests on one machine, never in production",
                  "allow-loopback-peers"]
    lines += [f"denied-peer-ip={r}" for r in denied_ranges(config.allow_loopback)]
    lines += [f"allowed-peer-ip={_range(p)}" for p in config.allowed_peers]
    lines += ["", "# operations", "no-cli", "no-software-attribute", "log-file=stdout",
              "simple-log"]
    lines += list(config.extra)
    return "\n".join(lines) + "\n"


def check_addresses(values: Iterable[str], *, ranges: bool = False) -> None:
    """Raise ValueError naming the first value that is not an IP address (or, with `ranges`,
    a CIDR range); external IPs may be `public/private` pairs."""
    for value in values:
        parts = value.split("/") if not ranges else [value]
        try:
            for part in parts:
                if ranges:
                    ipaddress.ip_network(part, strict=False)
                else:
                    ipaddress.ip_address(part)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address"
                             + (" or range" if ranges else "")) from None


__all__ = ["DENIED_V4", "DENIED_V6", "CoturnConfig", "check_addresses", "denied_ranges",
           "render"]
