from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import (
    ALL_ROLES,
    SETTINGS,
    LogFormat,
    Role,
    SettingsError,
    describe,
    load_settings,
    mask_url,
    unknown_variables,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_are_the_embedded_single_node() -> None:
    s = load_settings({}, hostname="box")
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.roles == ALL_ROLES
    assert s.database_url == "sqlite+aiosqlite:///data/napalmsky.db"
    assert s.is_sqlite
    assert s.redis_url is None and s.s3_bucket is None
    assert s.blob_dir == Path("data/blobs")
    assert s.node_id == "box-8080"
    assert s.public_url == "http://127.0.0.1:8080"
    assert s.log_format is LogFormat.TEXT
    assert s.s3_prefix == ""


def test_values_are_parsed_and_typed() -> None:
    s = load_settings({
        "NAPALMSKY_PORT": "9000", "NAPALMSKY_ROLES": "sfu, worker",
        "NAPALMSKY_DATA_DIR": "/var/lib/ns", "DATABASE_URL": "postgresql://u:p@db/ns",
        "REDIS_URL": "redis://r:6379/1", "NAPALMSKY_LOG_FORMAT": "JSON",
        "NAPALMSKY_HOST": "0.0.0.0", "NAPALMSKY_READY_TIMEOUT": "0.5",
    })
    assert s.port == 9000
    assert s.roles == frozenset({Role.SFU, Role.WORKER})
    assert s.database_url == "postgresql://u:p@db/ns" and not s.is_sqlite
    assert s.blob_dir == Path("/var/lib/ns/blobs")
    assert s.log_format is LogFormat.JSON
    assert s.public_url == "http://127.0.0.1:9000"
    assert s.ready_timeout == 0.5


def test_empty_value_counts_as_unset() -> None:
    assert load_settings({"NAPALMSKY_PORT": ""}).port == 8080


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("NAPALMSKY_ROLES", "foo", "NAPALMSKY_ROLES: unknown role 'foo'"),
        ("NAPALMSKY_ROLES", ",", "NAPALMSKY_ROLES: expected a comma-separated list"),
        ("NAPALMSKY_PORT", "eighty", "NAPALMSKY_PORT: expected an integer between 1 and 65535"),
        ("NAPALMSKY_PORT", "70000", "NAPALMSKY_PORT: expected an integer between 1 and 65535"),
        ("DATABASE_URL", "mysql://x/y", "DATABASE_URL: expected a sqlite:/// or postgresql://"),
        ("REDIS_URL", "http://r", "REDIS_URL: expected a redis://"),
        ("NAPALMSKY_LOG_FORMAT", "xml", "NAPALMSKY_LOG_FORMAT: expected 'text' or 'json'"),
        ("NAPALMSKY_LOG_LEVEL", "loud", "NAPALMSKY_LOG_LEVEL: expected one of"),
        ("NAPALMSKY_SECRET_KEY", "short", "NAPALMSKY_SECRET_KEY: expected at least 32"),
        ("NAPALMSKY_BLOB_URL_TTL", "-1", "NAPALMSKY_BLOB_URL_TTL: expected a positive integer"),
        ("NAPALMSKY_READY_TIMEOUT", "nan", "NAPALMSKY_READY_TIMEOUT: expected a positive number"),
        ("NAPALMSKY_NODE_ID", "a b", "NAPALMSKY_NODE_ID: expected 1-63 letters"),
        ("NAPALMSKY_PUBLIC_URL", "ftp://x", "NAPALMSKY_PUBLIC_URL: expected an http://"),
    ],
)
def test_an_invalid_value_is_refused_naming_the_variable(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({variable: value})
    assert str(info.value).startswith(expected)


def test_a_refused_secret_is_not_echoed() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"NAPALMSKY_SECRET_KEY": "hunter2"})
    assert "hunter2" not in str(info.value)
    assert "(secret)" in str(info.value)


def test_s3_keys_come_in_pairs() -> None:
    with pytest.raises(SettingsError, match="NAPALMSKY_S3_ACCESS_KEY_ID"):
        load_settings({"NAPALMSKY_S3_ACCESS_KEY_ID": "AKIA"})


def test_describe_masks_secrets_and_passwords() -> None:
    s = load_settings({
        "DATABASE_URL": "postgresql://app:pg-pass@db:5432/ns",
        "REDIS_URL": "redis://:redis-pass@r:6379/0",
        "NAPALMSKY_SECRET_KEY": "k" * 40,
        "NAPALMSKY_S3_ACCESS_KEY_ID": "AKIAEXAMPLE", "NAPALMSKY_S3_SECRET_ACCESS_KEY": "s3-secret",
        "NAPALMSKY_TURN_SECRETS": "turn-secret-one-0123,turn-secret-two-0123",
    })
    rows = dict(describe(s))
    text = repr(rows)
    for secret in ("pg-pass", "redis-pass", "k" * 40, "AKIAEXAMPLE", "s3-secret", "turn-secret"):
        assert secret not in text
    assert rows["NAPALMSKY_TURN_SECRETS"] == "****"
    assert rows["DATABASE_URL"] == "postgresql://app:****@db:5432/ns"
    assert rows["REDIS_URL"] == "redis://:****@r:6379/0"
    assert rows["NAPALMSKY_SECRET_KEY"] == "****"
    assert [name for name, _ in describe(s)] == [st.env for st in SETTINGS]


def test_mask_url_leaves_passwordless_urls_alone() -> None:
    assert mask_url("redis://r:6379/0") == "redis://r:6379/0"
    assert mask_url("postgresql://u:p%40ss@h/db") == "postgresql://u:****@h/db"


def test_unknown_variables_are_reported() -> None:
    env = {"NAPALMSKY_PROT": "1", "NAPALMSKY_PORT": "1", "NAPALMSKY_TEST_X": "1", "HOME": "/"}
    assert unknown_variables(env) == ["NAPALMSKY_PROT"]


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = README.read_text()
    for setting in SETTINGS:
        assert f"`{setting.env}`" in readme, f"{setting.env} is missing from README.md"


def test_mask_url_hides_passwords_even_in_malformed_urls() -> None:
    assert "s3cret" not in mask_url("not a url://u:s3cret@host")
    assert "s3cret" not in mask_url("postgresql://u:s3cret@host:notaport/db")


def test_sign_up_budgets_follow_the_per_address_one_unless_set() -> None:
    s = load_settings({})
    assert (s.rate_signup_per_hour, s.rate_signup_network_per_hour,
            s.rate_signup_ceiling_per_hour, s.rate_signup_network_ceiling_per_hour) == (
        20, 100, 300, 1000)
    assert (s.signup_challenge_bits, s.signup_challenge_max_bits) == (15, 23)
    s = load_settings({"NAPALMSKY_RATE_SIGNUP_PER_HOUR": "10",
                       "NAPALMSKY_RATE_SIGNUP_CEILING_PER_HOUR": "40"})
    assert (s.rate_signup_network_per_hour, s.rate_signup_ceiling_per_hour,
            s.rate_signup_network_ceiling_per_hour) == (50, 40, 500)
    rows = dict(describe(s))
    assert rows["NAPALMSKY_RATE_SIGNUP_NETWORK_PER_HOUR"] == "50"
    assert rows["NAPALMSKY_SIGNUP_CHALLENGE_BITS"] == "15"


@pytest.mark.parametrize(("env", "message"), [
    ({"NAPALMSKY_SIGNUP_CHALLENGE_BITS": "33"},
     "NAPALMSKY_SIGNUP_CHALLENGE_BITS: expected 1 to 32"),
    ({"NAPALMSKY_SIGNUP_CHALLENGE_BITS": "20", "NAPALMSKY_SIGNUP_CHALLENGE_MAX_BITS": "16"},
     "must not exceed NAPALMSKY_SIGNUP_CHALLENGE_MAX_BITS"),
    ({"NAPALMSKY_RATE_SIGNUP_NETWORK_PER_HOUR": "0"}, "expected a positive integer"),
])
def test_bad_sign_up_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(env)


def test_one_shared_media_port() -> None:
    assert load_settings({}).rtc_port == 0  # off: a socket per connection
    s = load_settings({"NAPALMSKY_RTC_PORT": "40000"})
    assert (s.rtc_port, s.rtc_port_min, s.rtc_port_max) == (40000, 0, 0)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"NAPALMSKY_RTC_PORT": "40000", "NAPALMSKY_RTC_PORT_MIN": "50000",
          "NAPALMSKY_RTC_PORT_MAX": "50100"},
         "NAPALMSKY_RTC_PORT: set either it (one shared port) or NAPALMSKY_RTC_PORT_MIN/MAX "
         "(a port per connection), not both"),
        ({"NAPALMSKY_RTC_PORT": "65536"},
         "NAPALMSKY_RTC_PORT: expected an integer between 1 and 65535, got '65536'"),
        ({"NAPALMSKY_RTC_PORT": "-1"},
         "NAPALMSKY_RTC_PORT: expected an integer between 1 and 65535, got '-1'"),
        ({"NAPALMSKY_RTC_PORT": "udp"},
         "NAPALMSKY_RTC_PORT: expected an integer between 1 and 65535, got 'udp'"),
    ],
)
def test_invalid_shared_media_port(env: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert str(info.value) == expected
