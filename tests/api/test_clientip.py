from __future__ import annotations

import pytest

from api.clientip import client_ip, parse_networks

PROXIES = parse_networks(["10.0.0.0/8", "127.0.0.1"])


@pytest.mark.parametrize(
    ("peer", "header", "trusted", "expected"),
    [
        ("203.0.113.5", ["1.2.3.4"], (), "203.0.113.5"),  # no trusted proxies: peer
        ("203.0.113.5", ["1.2.3.4"], PROXIES, "203.0.113.5"),  # untrusted peer: header ignored
        ("127.0.0.1", ["198.51.100.7"], PROXIES, "198.51.100.7"),
        ("127.0.0.1", ["6.6.6.6, 198.51.100.7, 10.1.2.3"], PROXIES, "198.51.100.7"),
        ("127.0.0.1", ["6.6.6.6", "198.51.100.7"], PROXIES, "198.51.100.7"),  # two headers
        ("127.0.0.1", ["garbage, 10.1.2.3"], PROXIES, "10.1.2.3"),
        ("127.0.0.1", ["10.1.1.1, 10.2.2.2"], PROXIES, "10.1.1.1"),  # all proxies: leftmost
        ("127.0.0.1", [], PROXIES, "127.0.0.1"),
        (None, [], PROXIES, "unknown"),
        ("127.0.0.1", ["2001:db8::1"], PROXIES, "2001:db8::1"),
    ],
)
def test_client_ip(peer: str | None, header: list[str], trusted: tuple, expected: str) -> None:  # type: ignore[type-arg]
    assert client_ip(peer, header, trusted) == expected
