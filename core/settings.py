"""Typed settings, read from environment variables by the composition root.

Every setting is declared once in SETTINGS (variable name, parser, default, help), so the parser,
`napalmsky config` and the README's table cannot drift apart. An invalid value raises
SettingsError naming the variable; nothing starts with a half-understood configuration.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from core.iceurl import parse_ice_url


class SettingsError(ValueError):
    """A setting has a value the service cannot use. The message names the variable."""


class Role(StrEnum):
    API = "api"
    SIGNALING = "signaling"
    SFU = "sfu"
    WORKER = "worker"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


ALL_ROLES: frozenset[Role] = frozenset(Role)
_LOG_LEVELS = ("debug", "info", "warning", "error")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    roles: frozenset[Role]
    data_dir: Path
    database_url: str
    redis_url: str | None
    redis_prefix: str
    node_id: str
    region: str
    public_url: str
    secret_key: str | None
    blob_dir: Path
    blob_url_ttl: int
    s3_bucket: str | None
    s3_region: str | None
    s3_endpoint_url: str | None
    s3_access_key_id: str | None
    s3_secret_access_key: str | None
    s3_prefix: str
    log_format: LogFormat
    log_level: str
    ready_timeout: float
    node_secret: str | None
    rtc_bind: tuple[str, ...]
    rtc_announce: tuple[str, ...]
    rtc_port_min: int
    rtc_port_max: int
    rtc_port: int
    sfu_video_codec: str
    sfu_ice_servers: tuple[str, ...]
    sfu_turn_username: str | None
    sfu_turn_credential: str | None
    operator_token: str | None
    guest_session_days: int
    session_days: int
    bcrypt_rounds: int
    rate_login_per_hour: int
    rate_signup_per_hour: int
    rate_signup_network_per_hour: int
    rate_signup_ceiling_per_hour: int
    rate_signup_network_ceiling_per_hour: int
    signup_challenge_bits: int
    signup_challenge_max_bits: int
    rate_token_per_minute: int
    trusted_proxies: tuple[str, ...]
    cors_origins: tuple[str, ...]
    http_idle_timeout: float
    http_body_timeout: float
    ws_per_user: int
    ws_per_ip: int
    ws_unauthenticated: int
    call_min_seconds: int
    call_max_seconds: int
    call_default_seconds: int
    invite_ttl: int
    reconnect_grace: float
    cooldown_hours: int
    ice_servers: tuple[str, ...]
    ice_servers_by_region: tuple[tuple[str, tuple[str, ...]], ...]
    turn_secrets: tuple[str, ...]
    turn_ttl: int
    turn_realm: str
    turn_listen_ips: tuple[str, ...]
    turn_port: int
    turn_tls_port: int
    turn_tls_cert: str | None
    turn_tls_key: str | None
    turn_relay_ips: tuple[str, ...]
    turn_external_ips: tuple[str, ...]
    turn_relay_port_min: int
    turn_relay_port_max: int
    turn_allowed_peers: tuple[str, ...]
    intro_max_seconds: int
    recording: bool

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


# ---- parsers: each takes the raw text and returns the value or raises ValueError(reason) ----


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _port(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("expected an integer between 1 and 65535") from None
    if not 1 <= value <= 65535:
        raise ValueError("expected an integer between 1 and 65535")
    return value


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("expected a positive integer") from None
    if value <= 0:
        raise ValueError("expected a positive integer")
    return value


def _non_negative_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("expected a whole number, 0 or more") from None
    if value < 0:
        raise ValueError("expected a whole number, 0 or more")
    return value


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a positive number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("expected a positive number of seconds")
    return value


def parse_roles(raw: str) -> frozenset[Role]:
    parts = [p.strip().lower() for p in raw.split(",") if p.strip()]
    if not parts:
        raise ValueError("expected a comma-separated list of roles")
    if parts == ["all"]:
        return ALL_ROLES
    roles: set[Role] = set()
    for part in parts:
        try:
            roles.add(Role(part))
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise ValueError(f"unknown role {part!r} (allowed: all, {allowed})") from None
    return frozenset(roles)


def _name(raw: str) -> str:
    if not _NAME.match(raw):
        raise ValueError("expected 1-63 letters, digits, '.', '_' or '-'")
    return raw


def _database_url(raw: str) -> str:
    scheme = raw.split(":", 1)[0].lower()
    if scheme.split("+", 1)[0] not in ("sqlite", "postgresql", "postgres"):
        raise ValueError("expected a sqlite:/// or postgresql:// URL")
    return raw


def _redis_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise ValueError("expected a redis://host:port/db URL")
    return raw


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL")
    return raw.rstrip("/")


def _secret(raw: str) -> str:
    if len(raw) < 32:
        raise ValueError("expected at least 32 characters")
    return raw


def _log_format(raw: str) -> LogFormat:
    try:
        return LogFormat(raw.lower())
    except ValueError:
        raise ValueError("expected 'text' or 'json'") from None


def _log_level(raw: str) -> str:
    if raw.lower() not in _LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(_LOG_LEVELS)}")
    return raw.lower()


def _addresses(raw: str) -> tuple[str, ...]:
    found: list[str] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            found.append(str(ipaddress.ip_address(part)))
        except ValueError:
            raise ValueError(f"{part!r} is not an IPv4 or IPv6 address") from None
    return tuple(found)


def _port_or_zero(raw: str) -> int:
    return 0 if raw.strip() == "0" else _port(raw)


def _video_codec(raw: str) -> str:
    if raw.lower() not in ("vp8", "h264"):
        raise ValueError("expected 'vp8' or 'h264'")
    return raw.lower()


def _ice_urls(raw: str) -> tuple[str, ...]:
    urls = tuple(p.strip() for p in raw.split(",") if p.strip())
    for url in urls:
        parse_ice_url(url)  # raises IceUrlError (a ValueError) naming the URL
    return urls


def _ice_urls_by_region(raw: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError('expected a JSON object: {"region": ["turn:...", ...], ...}') from None
    if not isinstance(value, dict):
        raise ValueError('expected a JSON object: {"region": ["turn:...", ...], ...}')
    regions: list[tuple[str, tuple[str, ...]]] = []
    for region, urls in value.items():
        if not _NAME.match(region):
            raise ValueError(f"{region!r} is not a region name")
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ValueError(f"region {region!r}: expected a list of URL strings")
        regions.append((region, _ice_urls(",".join(urls))))
    return tuple(sorted(regions))


def _turn_secrets(raw: str) -> tuple[str, ...]:
    found = tuple(p.strip() for p in raw.split(",") if p.strip())
    for secret in found:
        if len(secret) < 16:
            raise ValueError("each secret needs at least 16 characters")
    return found


def _external_ips(raw: str) -> tuple[str, ...]:
    def one(part: str) -> str:
        pair = part.split("/")
        try:
            if len(pair) > 2:
                raise ValueError
            return "/".join(str(ipaddress.ip_address(a)) for a in pair)
        except ValueError:
            raise ValueError(f"{part!r}: expected an address or public/private") from None

    return tuple(one(p.strip()) for p in raw.split(",") if p.strip())


def _origins(raw: str) -> tuple[str, ...]:
    found: list[str] = []
    for part in (p.strip().rstrip("/") for p in raw.split(",")):
        if not part:
            continue
        if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", part):
            raise ValueError(f"{part!r} is not an origin (scheme://host[:port])")
        found.append(part.lower())
    return tuple(found)


def _networks(raw: str) -> tuple[str, ...]:
    found: list[str] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            found.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or CIDR network") from None
    return tuple(found)


def _bcrypt_rounds(raw: str) -> int:
    value = _positive_int(raw)
    if not 4 <= value <= 16:
        raise ValueError("expected 4 to 16 (12 in production)")
    return value


def _challenge_bits(raw: str) -> int:
    value = _positive_int(raw)
    if not 1 <= value <= 32:
        raise ValueError("expected 1 to 32")
    return value


def _prefix(raw: str) -> str:
    if not re.match(r"^[A-Za-z0-9:._/-]*$", raw):
        raise ValueError("expected letters, digits and ':._/-'")
    return raw


@dataclass(frozen=True)
class Setting:
    field: str
    env: str
    parse: Callable[[str], Any]
    default: str | None
    help: str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "NAPALMSKY_HOST", _text, "127.0.0.1", "Address the HTTP server binds."),
    Setting("port", "NAPALMSKY_PORT", _port, "8080", "TCP port of the HTTP server."),
    Setting("roles", "NAPALMSKY_ROLES", parse_roles, "all",
            "Roles this node runs: `all` or a comma list of api, signaling, sfu, worker."),
    Setting("data_dir", "NAPALMSKY_DATA_DIR", Path, "./data",
            "Directory for the embedded SQLite file, local blobs and the generated secret key."),
    Setting("database_url", "DATABASE_URL", _database_url, None,
            "Durable store. Default: SQLite file `<data dir>/napalmsky.db`. "
            "Production: `postgresql://user:pass@host:5432/db` (asyncpg).", secret=True),
    Setting("redis_url", "REDIS_URL", _redis_url, None,
            "Live state and bus. Unset: in-process (single node). Set: Redis, for many nodes.",
            secret=True),
    Setting("redis_prefix", "NAPALMSKY_REDIS_PREFIX", _prefix, "napalmsky:",
            "Prefix of every Redis key and channel (lets deployments share one Redis)."),
    Setting("node_id", "NAPALMSKY_NODE_ID", _name, None,
            "This node's id in the node registry. Default: `<hostname>-<port>`."),
    Setting("region", "NAPALMSKY_REGION", _name, "local",
            "Region this node serves (rooms are placed on SFU nodes of the callers' region)."),
    Setting("public_url", "NAPALMSKY_PUBLIC_URL", _http_url, None,
            "Base URL clients reach this node at (signed blob URLs). Default: `http://<host>:<port>`."),
    Setting("secret_key", "NAPALMSKY_SECRET_KEY", _secret, None,
            "HMAC key (32+ chars) for signed URLs. Default: generated once into "
            "`<data dir>/secret_key`. Nodes that share blobs must share it.", secret=True),
    Setting("blob_dir", "NAPALMSKY_BLOB_DIR", Path, None,
            "Local blob directory when no S3 bucket is set. Default: `<data dir>/blobs`."),
    Setting("blob_url_ttl", "NAPALMSKY_BLOB_URL_TTL", _positive_int, "3600",
            "Seconds a signed media URL stays valid."),
    Setting("s3_bucket", "NAPALMSKY_S3_BUCKET", _text, None,
            "Store blobs in this S3 bucket (presigned URLs) instead of the local directory."),
    Setting("s3_region", "NAPALMSKY_S3_REGION", _text, None, "Region of the S3 bucket."),
    Setting("s3_endpoint_url", "NAPALMSKY_S3_ENDPOINT_URL", _http_url, None,
            "S3-compatible endpoint (MinIO, R2, ...). Default: AWS."),
    Setting("s3_access_key_id", "NAPALMSKY_S3_ACCESS_KEY_ID", _text, None,
            "S3 access key. Default: boto3's credential chain (AWS_* variables, instance role).",
            secret=True),
    Setting("s3_secret_access_key", "NAPALMSKY_S3_SECRET_ACCESS_KEY", _text, None,
            "S3 secret key. Default: boto3's credential chain.", secret=True),
    Setting("s3_prefix", "NAPALMSKY_S3_PREFIX", _prefix, "",
            "Prefix of every object key in the bucket."),
    Setting("log_format", "NAPALMSKY_LOG_FORMAT", _log_format, "text",
            "`text` (readable lines) or `json` (one object per line)."),
    Setting("log_level", "NAPALMSKY_LOG_LEVEL", _log_level, "info",
            "debug, info, warning or error."),
    Setting("ready_timeout", "NAPALMSKY_READY_TIMEOUT", _positive_float, "2",
            "Seconds `/ready` waits for each backing service before reporting it down."),
    Setting("node_secret", "NAPALMSKY_NODE_SECRET", _secret, None,
            "HMAC key (32+ chars) of SFU join tokens, shared by every node. Default: the "
            "secret key.", secret=True),
    Setting("rtc_bind", "NAPALMSKY_RTC_BIND", _addresses, "",
            "Comma list of local IP addresses the SFU binds its UDP sockets to. Default: every "
            "non-loopback address (as aioice does). `127.0.0.1` for tests on one machine."),
    Setting("rtc_announce", "NAPALMSKY_RTC_ANNOUNCE", _addresses, "",
            "Public IPv4/IPv6 addresses announced in the SFU's host candidates instead of the "
            "bound ones (cloud 1:1 NAT). One per bind address, in the same order."),
    Setting("rtc_port_min", "NAPALMSKY_RTC_PORT_MIN", _port_or_zero, "0",
            "Lowest UDP port of the SFU's media sockets (0 with the max: any free port)."),
    Setting("rtc_port_max", "NAPALMSKY_RTC_PORT_MAX", _port_or_zero, "0",
            "Highest UDP port of the SFU's media sockets."),
    Setting("rtc_port", "NAPALMSKY_RTC_PORT", _port_or_zero, "0",
            "One fixed UDP port shared by all of this process's media connections (one socket "
            "per bind address, demultiplexed by ICE username and remote address), instead of a "
            "socket per connection from NAPALMSKY_RTC_PORT_MIN-MAX; 0: off. Open one UDP port "
            "per worker in the firewall."),
    Setting("sfu_video_codec", "NAPALMSKY_SFU_VIDEO_CODEC", _video_codec, "vp8",
            "Video codec every room negotiates: `vp8` or `h264` (audio is always Opus)."),
    Setting("sfu_ice_servers", "NAPALMSKY_SFU_ICE_SERVERS", _ice_urls, "",
            "Comma list of STUN/TURN URLs the SFU itself uses (`stun:host:3478`, "
            "`turn:host:3478?transport=udp`). Default: none: no STUN server is ever contacted."),
    Setting("sfu_turn_username", "NAPALMSKY_SFU_TURN_USERNAME", _text, None,
            "Username for the SFU's own TURN servers."),
    Setting("sfu_turn_credential", "NAPALMSKY_SFU_TURN_CREDENTIAL", _text, None,
            "Credential for the SFU's own TURN servers.", secret=True),
    Setting("operator_token", "NAPALMSKY_OPERATOR_TOKEN", _secret, None,
            "Bearer token (32+ chars) for operator endpoints such as room stats. Unset: those "
            "endpoints refuse every request.", secret=True),
    Setting("guest_session_days", "NAPALMSKY_GUEST_SESSION_DAYS", _positive_int, "7",
            "Days a guest's session token stays valid."),
    Setting("session_days", "NAPALMSKY_SESSION_DAYS", _positive_int, "30",
            "Days a permanent account's session token stays valid."),
    Setting("bcrypt_rounds", "NAPALMSKY_BCRYPT_ROUNDS", _bcrypt_rounds, "12",
            "bcrypt cost of password hashes (tests lower it for speed)."),
    Setting("rate_login_per_hour", "NAPALMSKY_RATE_LOGIN_PER_HOUR", _positive_int, "5",
            "Failed sign-ins per client address and account per hour (ten times as many per "
            "address over all accounts); successful ones cost nothing."),
    Setting("rate_signup_per_hour", "NAPALMSKY_RATE_SIGNUP_PER_HOUR", _positive_int, "20",
            "Free sign-ups (guest or registered) per client address (IPv4, IPv6 /64) per hour, "
            "refilling steadily; also how many may come at once. Beyond it a sign-up needs a "
            "proof-of-work challenge (429 `challenge_required`), never a wait."),
    Setting("rate_signup_network_per_hour", "NAPALMSKY_RATE_SIGNUP_NETWORK_PER_HOUR",
            _positive_int, None,
            "Free sign-ups per network (IPv4 /24, IPv6 /48) per hour, and its burst. Default: "
            "5 x NAPALMSKY_RATE_SIGNUP_PER_HOUR."),
    Setting("rate_signup_ceiling_per_hour", "NAPALMSKY_RATE_SIGNUP_CEILING_PER_HOUR",
            _positive_int, None,
            "Hard ceiling: sign-ups per client address per hour, challenges solved or not, "
            "beyond which they are refused (429 `rate_limited`). Default: 15 x "
            "NAPALMSKY_RATE_SIGNUP_PER_HOUR."),
    Setting("rate_signup_network_ceiling_per_hour",
            "NAPALMSKY_RATE_SIGNUP_NETWORK_CEILING_PER_HOUR", _positive_int, None,
            "Hard ceiling per network per hour. Default: 50 x NAPALMSKY_RATE_SIGNUP_PER_HOUR."),
    Setting("signup_challenge_bits", "NAPALMSKY_SIGNUP_CHALLENGE_BITS", _challenge_bits, "15",
            "Difficulty (leading zero bits of SHA-256) of a sign-up challenge once a budget is "
            "spent; one bit more (twice the work) each time the recent rate of sign-ups from "
            "the address or network doubles past its budget."),
    Setting("signup_challenge_max_bits", "NAPALMSKY_SIGNUP_CHALLENGE_MAX_BITS",
            _challenge_bits, "23", "Highest difficulty of a sign-up challenge."),
    Setting("rate_token_per_minute", "NAPALMSKY_RATE_TOKEN_PER_MINUTE", _positive_int, "600",
            "Authenticated requests per session token per minute."),
    Setting("trusted_proxies", "NAPALMSKY_TRUSTED_PROXIES", _networks, "",
            "Comma list of proxy addresses/CIDRs whose X-Forwarded-For is believed. Default: "
            "none: the client IP is the TCP peer."),
    Setting("http_idle_timeout", "NAPALMSKY_HTTP_IDLE_TIMEOUT", _positive_float, "15",
            "Seconds an HTTP connection may stay open without a complete request (idle "
            "keep-alive, or headers arriving a byte at a time) before the node closes it."),
    Setting("http_body_timeout", "NAPALMSKY_HTTP_BODY_TIMEOUT", _positive_float, "30",
            "Seconds a request body may take to arrive; a slower one is refused (400) and "
            "its connection closed."),
    Setting("ws_per_user", "NAPALMSKY_WS_PER_USER", _positive_int, "10",
            "Signaling sockets one user may hold open on a node (more are closed with 4430)."),
    Setting("ws_per_ip", "NAPALMSKY_WS_PER_IP", _positive_int, "1000",
            "Signaling sockets one client IP may hold open on a node, signed in or not (more "
            "are closed with 4430). Generous: a carrier NAT puts hundreds of people online "
            "behind one address; each user is held to NAPALMSKY_WS_PER_USER."),
    Setting("ws_unauthenticated", "NAPALMSKY_WS_UNAUTHENTICATED", _positive_int, "200",
            "Signaling sockets a node holds that have not authenticated yet (more are closed "
            "with 4430)."),
    Setting("cors_origins", "NAPALMSKY_CORS_ORIGINS", _origins, "",
            "Comma list of other origins (`https://app.example.com`) whose pages may call the "
            "REST API from a browser (CORS). Default: none: only pages this node serves."),
    Setting("call_min_seconds", "NAPALMSKY_CALL_MIN_SECONDS", _positive_int, "30",
            "Shortest call an invite may ask for, in seconds."),
    Setting("call_max_seconds", "NAPALMSKY_CALL_MAX_SECONDS", _positive_int, "1800",
            "Longest call an invite may ask for, in seconds."),
    Setting("call_default_seconds", "NAPALMSKY_CALL_DEFAULT_SECONDS", _positive_int, "300",
            "Call length when an invite does not say."),
    Setting("invite_ttl", "NAPALMSKY_INVITE_TTL", _positive_int, "30",
            "Seconds an invite waits for an answer before it expires."),
    Setting("reconnect_grace", "NAPALMSKY_RECONNECT_GRACE", _positive_float, "15",
            "Seconds a participant whose socket dropped has to come back before the call ends."),
    Setting("cooldown_hours", "NAPALMSKY_COOLDOWN_HOURS", _non_negative_int, "24",
            "Hours two people who had a call cannot be matched again (0: no cooldown, for "
            "load-test and demo targets)."),
    Setting("ice_servers", "NAPALMSKY_ICE_SERVERS", _ice_urls, "",
            "Comma list of STUN/TURN URLs (RFC 7064/7065: `stun:host:3478`, "
            "`turn:host:3478?transport=udp`, `turn:host:3478?transport=tcp`, `turns:host:443`) "
            "handed to clients of every region without a list of its own, TURN with a fresh "
            "credential. Default: none (host candidates only; no STUN server is contacted)."),
    Setting("ice_servers_by_region", "NAPALMSKY_ICE_SERVERS_BY_REGION", _ice_urls_by_region,
            None, 'ICE server URLs per region, a JSON object: `{"eu": ["turn:turn-eu.example.com'
            ':3478?transport=udp", "turns:turn-eu.example.com:443"], "us": [...]}`. A client '
            "gets the list of its node's region (NAPALMSKY_REGION), else NAPALMSKY_ICE_SERVERS."),
    Setting("turn_secrets", "NAPALMSKY_TURN_SECRETS", _turn_secrets, "",
            "Comma list of TURN REST secrets (16+ chars each) shared with coturn "
            "(`static-auth-secret`): the first signs new credentials, all are accepted. To roll "
            "one: add the new secret second, then move it first, then drop the old one after "
            "NAPALMSKY_TURN_TTL. Required when TURN URLs are configured.", secret=True),
    Setting("turn_ttl", "NAPALMSKY_TURN_TTL", _positive_int, "3600",
            "Seconds a TURN credential stays valid; with TURN URLs configured, at least the "
            "longest call plus the reconnect grace (NAPALMSKY_CALL_MAX_SECONDS + "
            "NAPALMSKY_RECONNECT_GRACE), or the node refuses to start."),
    Setting("turn_realm", "NAPALMSKY_TURN_REALM", _text, "napalmsky",
            "TURN realm (coturn's `realm`)."),
    Setting("turn_listen_ips", "NAPALMSKY_TURN_LISTEN_IPS", _addresses, "",
            "coturn (`napalmsky turn config`): addresses it listens on. Default: every address."),
    Setting("turn_port", "NAPALMSKY_TURN_PORT", _port, "3478",
            "coturn: UDP and TCP listening port (`turn:` URLs)."),
    Setting("turn_tls_port", "NAPALMSKY_TURN_TLS_PORT", _port, "5349",
            "coturn: TLS listening port (`turns:` URLs; 443 passes most firewalls), used when "
            "a certificate and key are set."),
    Setting("turn_tls_cert", "NAPALMSKY_TURN_TLS_CERT", _text, None,
            "coturn: path of the TLS certificate chain (PEM) for `turns:`."),
    Setting("turn_tls_key", "NAPALMSKY_TURN_TLS_KEY", _text, None,
            "coturn: path of the TLS private key (PEM)."),
    Setting("turn_relay_ips", "NAPALMSKY_TURN_RELAY_IPS", _addresses, "",
            "coturn: addresses relayed traffic leaves from. Default: the listening addresses."),
    Setting("turn_external_ips", "NAPALMSKY_TURN_EXTERNAL_IPS", _external_ips, "",
            "coturn behind a 1:1 NAT (cloud): `public` or `public/private` per relay address."),
    Setting("turn_relay_port_min", "NAPALMSKY_TURN_RELAY_PORT_MIN", _port, "49152",
            "coturn: lowest relay port (open the range in the firewall)."),
    Setting("turn_relay_port_max", "NAPALMSKY_TURN_RELAY_PORT_MAX", _port, "65535",
            "coturn: highest relay port."),
    Setting("turn_allowed_peers", "NAPALMSKY_TURN_ALLOWED_PEERS", _networks, "",
            "coturn: addresses or CIDR ranges the relay may reach although they are private "
            "(the SFU nodes' addresses on an internal network). Everything private, loopback "
            "and link-local is denied otherwise."),
    Setting("intro_max_seconds", "NAPALMSKY_INTRO_MAX_SECONDS", _positive_int, "60",
            "Longest intro video accepted, in seconds (uploads are also capped at 50 MB)."),
    Setting("recording", "NAPALMSKY_RECORDING", _bool, "false",
            "Offer call recording: a call is recorded (on the SFU node, without transcoding) "
            "only when this is on and both people agree in the invite and the accept."),
)

_BY_FIELD = {s.field: s for s in SETTINGS}
assert set(_BY_FIELD) == {f.name for f in fields(Settings)}, "SETTINGS and Settings disagree"


def known_variables() -> frozenset[str]:
    return frozenset(s.env for s in SETTINGS)


def load_settings(env: Mapping[str, str], *, hostname: str = "localhost") -> Settings:
    """Parse settings from `env`. Empty values count as unset."""
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = env.get(setting.env, "")
        if raw == "":
            if setting.default is None:
                values[setting.field] = None
                continue
            raw = setting.default
        try:
            values[setting.field] = setting.parse(raw)
        except ValueError as exc:
            shown = "(secret)" if setting.secret else repr(raw)
            raise SettingsError(f"{setting.env}: {exc}, got {shown}") from None
    data_dir: Path = values["data_dir"]
    if values["database_url"] is None:
        values["database_url"] = f"sqlite+aiosqlite:///{(data_dir / 'napalmsky.db').as_posix()}"
    if values["blob_dir"] is None:
        values["blob_dir"] = data_dir / "blobs"
    if values["node_id"] is None:
        values["node_id"] = _name_or_default(f"{hostname}-{values['port']}")
    if values["public_url"] is None:
        host = values["host"]
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
        if ":" in shown_host:
            shown_host = f"[{shown_host}]"
        values["public_url"] = f"http://{shown_host}:{values['port']}"
    derived = {"rate_signup_network_per_hour": 5, "rate_signup_ceiling_per_hour": 15,
               "rate_signup_network_ceiling_per_hour": 50}
    for key, times in derived.items():
        if values[key] is None:
            values[key] = times * values["rate_signup_per_hour"]
    if values["signup_challenge_bits"] > values["signup_challenge_max_bits"]:
        raise SettingsError("NAPALMSKY_SIGNUP_CHALLENGE_BITS: must not exceed "
                            "NAPALMSKY_SIGNUP_CHALLENGE_MAX_BITS")
    if values["rtc_bind"] is None:
        values["rtc_bind"] = ()
    if values["rtc_announce"] is None:
        values["rtc_announce"] = ()
    for key in ("sfu_ice_servers", "trusted_proxies", "ice_servers", "cors_origins",
                "ice_servers_by_region", "turn_secrets", "turn_listen_ips", "turn_relay_ips",
                "turn_external_ips", "turn_allowed_peers"):
        if values[key] is None:
            values[key] = ()
    if values["rtc_announce"] and len(values["rtc_announce"]) != len(values["rtc_bind"]):
        raise SettingsError(
            "NAPALMSKY_RTC_ANNOUNCE: give one address per NAPALMSKY_RTC_BIND address"
        )
    if (values["rtc_port_min"] == 0) != (values["rtc_port_max"] == 0) or (
        values["rtc_port_min"] > values["rtc_port_max"]
    ):
        raise SettingsError(
            "NAPALMSKY_RTC_PORT_MIN and NAPALMSKY_RTC_PORT_MAX: set both, min <= max"
        )
    if values["rtc_port"] and values["rtc_port_min"]:
        raise SettingsError(
            "NAPALMSKY_RTC_PORT: set either it (one shared port) or NAPALMSKY_RTC_PORT_MIN/MAX "
            "(a port per connection), not both"
        )
    if not (values["call_min_seconds"] <= values["call_default_seconds"]
            <= values["call_max_seconds"]):
        raise SettingsError("NAPALMSKY_CALL_DEFAULT_SECONDS: must lie between "
                            "NAPALMSKY_CALL_MIN_SECONDS and NAPALMSKY_CALL_MAX_SECONDS")
    turn_urls = [u for u in (*values["ice_servers"],
                             *(u for _r, us in values["ice_servers_by_region"] for u in us))
                 if u.startswith("turn")]
    if turn_urls and not values["turn_secrets"]:
        raise SettingsError(f"NAPALMSKY_TURN_SECRETS: needed for the TURN URL {turn_urls[0]!r}")
    longest = values["call_max_seconds"] + values["reconnect_grace"]
    if turn_urls and values["turn_ttl"] < longest:
        raise SettingsError(
            f"NAPALMSKY_TURN_TTL: must be at least the longest call plus the reconnect grace "
            f"({longest:g} s): a credential must outlive the call that uses it")
    if values["turn_relay_port_min"] > values["turn_relay_port_max"]:
        raise SettingsError("NAPALMSKY_TURN_RELAY_PORT_MIN: must not exceed "
                            "NAPALMSKY_TURN_RELAY_PORT_MAX")
    if (values["turn_tls_cert"] is None) != (values["turn_tls_key"] is None):
        raise SettingsError("NAPALMSKY_TURN_TLS_CERT and NAPALMSKY_TURN_TLS_KEY: set both or "
                            "neither")
    if (values["s3_access_key_id"] is None) != (values["s3_secret_access_key"] is None):
        raise SettingsError(
            "NAPALMSKY_S3_ACCESS_KEY_ID and NAPALMSKY_S3_SECRET_ACCESS_KEY: set both or neither"
        )
    return Settings(**values)


def _name_or_default(candidate: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", candidate)[:63].lstrip("._-")
    return cleaned or "node"


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """NAPALMSKY_* variables that no setting reads (probably typos)."""
    known = known_variables() | {"NAPALMSKY_ENV_FILE"}
    return sorted(k for k in env if k.startswith("NAPALMSKY_") and k not in known
                  and not k.startswith("NAPALMSKY_TEST_"))


_CREDENTIALS = re.compile(r"(//[^/@:]*):[^/@]*@")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ****, even when the URL is malformed."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        password = None
        parts = None
    if parts is None or password is None or not parts.netloc:
        return _CREDENTIALS.sub(r"\1:****@", url)
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:****@{host}"))


def describe(settings: Settings) -> list[tuple[str, str]]:
    """(variable, effective value) pairs with secrets masked, for `napalmsky config`."""
    rows: list[tuple[str, str]] = []
    for setting in SETTINGS:
        value = getattr(settings, setting.field)
        if value is None:
            shown = "(unset)"
        elif value == "":
            shown = "(empty)"
        elif setting.field in ("database_url", "redis_url"):
            shown = mask_url(str(value))
        elif setting.secret:  # before the shapes below: a list of secrets is still secret
            shown = "****" if value else "(empty)"
        elif setting.field == "roles":
            shown = ",".join(sorted(r.value for r in value))
        elif setting.field == "ice_servers_by_region":
            shown = json.dumps({region: list(urls) for region, urls in value}) if value else (
                "(empty)")
        elif isinstance(value, tuple):
            shown = ",".join(value) or "(empty)"
        else:
            shown = str(value)
        rows.append((setting.env, shown))
    return rows
