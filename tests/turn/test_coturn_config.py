"""The coturn configuration `napalmsky turn config` renders (turn.coturn)."""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from turn.coturn import DENIED_V4, DENIED_V6, CoturnConfig, render

SECRET = "config-secret-0123456789"


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def denied(text: str) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]]:
    found = []
    for line in lines(text):
        if line.startswith("denied-peer-ip="):
            first, _, last = line.split("=", 1)[1].partition("-")
            found.append((ipaddress.ip_address(first), ipaddress.ip_address(last or first)))
    return found


def covered(ranges: list[tuple[object, ...]], address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(type(first) is type(ip) and first <= ip <= last  # type: ignore[operator]
               for first, last in ranges)


# Addresses a relay must never reach: private networks, loopback, link-local (the cloud
# metadata service), carrier-grade NAT, multicast, and IPv4 hidden in IPv6 forms.
FORBIDDEN = ["10.1.2.3", "172.16.0.1", "172.31.255.254", "192.168.1.1", "127.0.0.1",
             "127.255.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1",
             "255.255.255.255", "::1", "fe80::1", "fd00::1", "fc00::1", "::ffff:10.0.0.1",
             "::ffff:127.0.0.1", "64:ff9b::a00:1", "2002:a00:1::1", "ff02::1"]
PUBLIC = ["8.8.8.8", "1.1.1.1", "172.32.0.1", "192.169.0.1", "2606:4700::1111"]


def test_every_private_loopback_and_link_local_range_is_denied_and_public_ones_are_not() -> None:
    text = render(CoturnConfig(secrets=(SECRET,), realm="example.com"))
    ranges = denied(text)
    assert len(ranges) == len(DENIED_V4) + len(DENIED_V6)
    for address in FORBIDDEN:
        assert covered(ranges, address), address
    for address in PUBLIC:
        assert not covered(ranges, address), address
    assert "no-multicast-peers" in lines(text)
    assert "allow-loopback-peers" not in lines(text)


def test_the_loopback_switch_lets_loopback_through_and_nothing_else() -> None:
    text = render(CoturnConfig(secrets=(SECRET,), realm="r", allow_loopback=True))
    ranges = denied(text)
    assert not covered(ranges, "127.0.0.1") and not covered(ranges, "::1")
    for address in FORBIDDEN:
        if address not in ("127.0.0.1", "127.255.0.1", "::1"):
            assert covered(ranges, address), address
    assert "allow-loopback-peers" in lines(text)


def test_secrets_realm_listeners_relay_and_tls_are_rendered() -> None:
    text = render(CoturnConfig(
        secrets=(SECRET, "older-secret-0123456789"), realm="turn.example.com",
        listening_ips=("10.0.0.5",), port=3478, tls_port=443, tls_cert="/etc/ssl/c.pem",
        tls_key="/etc/ssl/k.pem", relay_ips=("10.0.0.5",), external_ips=("203.0.113.9/10.0.0.5",),
        min_port=50000, max_port=50999, allowed_peers=("10.0.0.0/24",)))
    got = lines(text)
    for expected in ["use-auth-secret", f"static-auth-secret={SECRET}",
                     "static-auth-secret=older-secret-0123456789", "realm=turn.example.com",
                     "listening-ip=10.0.0.5", "listening-port=3478", "tls-listening-port=443",
                     "cert=/etc/ssl/c.pem", "pkey=/etc/ssl/k.pem", "relay-ip=10.0.0.5",
                     "external-ip=203.0.113.9/10.0.0.5", "min-port=50000", "max-port=50999",
                     "allowed-peer-ip=10.0.0.0-10.0.0.255", "fingerprint", "no-cli"]:
        assert expected in got, expected
    assert got.index(f"static-auth-secret={SECRET}") < got.index(
        "static-auth-secret=older-secret-0123456789")
    assert "no-tls" not in got
    plain = lines(render(CoturnConfig(secrets=(SECRET,), realm="r")))
    assert "no-tls" in plain and "no-dtls" in plain


@pytest.mark.parametrize(("config", "message"), [
    (CoturnConfig(secrets=(), realm="r"), "secret"),
    (CoturnConfig(secrets=(SECRET,), realm="r", tls_cert="/c.pem"), "certificate and a key"),
    (CoturnConfig(secrets=(SECRET,), realm="r", min_port=60000, max_port=50000), "port range"),
])
def test_an_unusable_configuration_is_refused(config: CoturnConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render(config)


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("NAPALMSKY_")}
    full.update(env, NAPALMSKY_ENV_FILE=str(tmp_path / "none.env"))
    return subprocess.run([sys.executable, "-m", "napalmsky", "turn", "config", *args],
                          env=full, capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_the_cli_writes_the_file_for_its_owner_only(tmp_path: Path) -> None:
    out = tmp_path / "turnserver.conf"
    result = run_cli(tmp_path, "--output", str(out), NAPALMSKY_TURN_SECRETS=SECRET,
                     NAPALMSKY_TURN_EXTERNAL_IPS="203.0.113.9", NAPALMSKY_TURN_TLS_PORT="443")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = out.read_text()
    assert f"static-auth-secret={SECRET}" in text and "external-ip=203.0.113.9" in text
    assert SECRET not in result.stdout + result.stderr  # nothing on the terminal but the path
    printed = run_cli(tmp_path, NAPALMSKY_TURN_SECRETS=SECRET)
    assert printed.returncode == 0 and "use-auth-secret" in printed.stdout


def test_the_cli_without_a_secret_or_with_a_bad_setting_says_what_is_wrong(tmp_path: Path
                                                                          ) -> None:
    result = run_cli(tmp_path)
    assert result.returncode != 0
    assert "NAPALMSKY_TURN_SECRETS" in result.stderr and "Traceback" not in result.stderr
    bad = run_cli(tmp_path, NAPALMSKY_TURN_SECRETS=SECRET, NAPALMSKY_TURN_EXTERNAL_IPS="nope")
    assert bad.returncode != 0 and "NAPALMSKY_TURN_EXTERNAL_IPS" in bad.stderr


EXAMPLE_ENV = {
    "NAPALMSKY_TURN_SECRETS": "change-me-to-a-long-random-secret",
    "NAPALMSKY_TURN_REALM": "turn.example.com",
    "NAPALMSKY_TURN_EXTERNAL_IPS": "203.0.113.10/10.0.0.10",
    "NAPALMSKY_TURN_RELAY_IPS": "10.0.0.10", "NAPALMSKY_TURN_LISTEN_IPS": "10.0.0.10",
    "NAPALMSKY_TURN_TLS_PORT": "443",
    "NAPALMSKY_TURN_TLS_CERT": "/etc/letsencrypt/live/turn.example.com/fullchain.pem",
    "NAPALMSKY_TURN_TLS_KEY": "/etc/letsencrypt/live/turn.example.com/privkey.pem",
    "NAPALMSKY_TURN_ALLOWED_PEERS": "10.0.0.20,10.0.0.21",
}


def test_the_example_in_deploy_is_what_the_cli_renders(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "coturn" / "turnserver.conf.example"
    result = run_cli(tmp_path, **EXAMPLE_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout == example.read_text()
