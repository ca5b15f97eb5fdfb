"""ICE servers per region (turn.servers) and the URL syntax settings accept (core.iceurl)."""

from __future__ import annotations

import re

import pytest

from core.iceurl import IceUrlError, parse_ice_url
from core.settings import SettingsError, load_settings
from turn.credentials import verify
from turn.servers import IceServers

SECRET = "region-secret-0123456789"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def directory(now: float = 1_000.0) -> IceServers:
    return IceServers(
        ("stun:stun.example.com:3478",),
        {"eu": ("stun:eu.example.com", "turn:eu.example.com:3478?transport=udp",
                "turn:eu.example.com:3478?transport=tcp", "turns:eu.example.com:443"),
         "us": ("turn:us.example.com",)},
        secrets=(SECRET,), lifetime=3600, clock=Clock(now))


def test_a_region_gets_its_own_list_stun_apart_and_turn_with_a_fresh_credential() -> None:
    found = directory().for_user("user-1", "eu")
    assert found.servers[0] == {"urls": ["stun:eu.example.com"]}
    turn = found.servers[1]
    assert turn["urls"] == ["turn:eu.example.com:3478?transport=udp",
                            "turn:eu.example.com:3478?transport=tcp",
                            "turns:eu.example.com:443"]
    assert turn["username"] == "4600:user-1"
    assert verify((SECRET,), turn["username"], turn["credential"], now=1_000)
    assert found.expires_at == 4600


def test_a_region_without_a_list_gets_the_default_and_stun_alone_has_no_credential() -> None:
    found = directory().for_user("user-1", "ap")
    assert found.servers == [{"urls": ["stun:stun.example.com:3478"]}]
    assert found.expires_at is None


def test_nothing_configured_means_an_empty_list() -> None:
    empty = IceServers((), {}, secrets=(), lifetime=3600, clock=Clock(0))
    assert empty.for_user("u", "local").servers == []


def test_turn_without_a_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="no TURN secret"):
        IceServers(("turn:x.example.com",), {}, secrets=(), lifetime=60, clock=Clock(0))


@pytest.mark.parametrize("url", [
    "stun:1.2.3.4", "stun:host.example.com:19302", "stuns:host.example.com",
    "turn:[2001:db8::1]:3478?transport=tcp", "turns:turn.example.com:443?transport=tcp",
])
def test_urls_of_rfc_7064_and_7065_are_accepted(url: str) -> None:
    assert parse_ice_url(url).url == url


@pytest.mark.parametrize("url", [
    "http://turn.example.com", "turn:", "turn:host:0", "turn:host:65536",
    "turn:host?transport=sctp", "stun:host?transport=udp", "turn:user@host", "turn:host:3478/x",
    "turn:-bad-.example.com",
])
def test_malformed_urls_are_refused_with_the_url_named(url: str) -> None:
    with pytest.raises(IceUrlError, match=re.escape(repr(url))):
        parse_ice_url(url)


def test_a_malformed_url_in_settings_stops_start_up_naming_the_variable_and_url() -> None:
    with pytest.raises(SettingsError, match=r"NAPALMSKY_ICE_SERVERS: 'turn:host:99999'"):
        load_settings({"NAPALMSKY_ICE_SERVERS": "stun:ok.example.com,turn:host:99999"})
    with pytest.raises(SettingsError, match=r"NAPALMSKY_ICE_SERVERS_BY_REGION: 'bad'"):
        load_settings({"NAPALMSKY_ICE_SERVERS_BY_REGION": '{"eu": ["bad"]}'})
    with pytest.raises(SettingsError, match="NAPALMSKY_ICE_SERVERS_BY_REGION: expected a JSON"):
        load_settings({"NAPALMSKY_ICE_SERVERS_BY_REGION": '["turn:x"]'})


def test_turn_urls_need_a_secret_and_a_lifetime_longer_than_any_call() -> None:
    with pytest.raises(SettingsError, match="NAPALMSKY_TURN_SECRETS: needed for the TURN URL"):
        load_settings({"NAPALMSKY_ICE_SERVERS": "turn:t.example.com"})
    with pytest.raises(SettingsError, match="NAPALMSKY_TURN_TTL: must be at least"):
        load_settings({"NAPALMSKY_ICE_SERVERS": "turn:t.example.com",
                       "NAPALMSKY_TURN_SECRETS": SECRET, "NAPALMSKY_TURN_TTL": "1800"})
    with pytest.raises(SettingsError, match="NAPALMSKY_TURN_SECRETS: each secret needs at least"):
        load_settings({"NAPALMSKY_TURN_SECRETS": "short"})
    settings = load_settings({"NAPALMSKY_ICE_SERVERS_BY_REGION": '{"eu": ["turn:t.example.com"]}',
                              "NAPALMSKY_TURN_SECRETS": f"{SECRET},old-{SECRET}"})
    assert settings.turn_secrets == (SECRET, f"old-{SECRET}")
    assert settings.ice_servers_by_region == (("eu", ("turn:t.example.com",)),)
