"""What a node needs from its machine, checked before it starts, and the files it keeps there.

Kept light (no aiohttp, aiortc or database driver) so that `napalmsky config` answers at once
and `napalmsky serve` refuses a machine it cannot run on in one line, before the slow part of
start-up. Each check raises StartupError with the address or path at fault and what to do.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import secrets
import socket
import tempfile
from pathlib import Path

from core.errors import Unavailable
from core.settings import Role, Settings

log = logging.getLogger("napalmsky.startup")

SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name, not a secret
HTTP_BACKLOG = 512  # pending TCP connections, as aiohttp's own default (128) is short for bursts


FDS_PER_CONNECTION = 1  # a /ws socket; a call participant holds one more (its UDP socket,
# unless NAPALMSKY_RTC_PORT shares one)
FD_LIMIT_WARNING = 4096  # below this many descriptors a node holds only a few thousand sockets


class StartupError(Exception):
    """This machine cannot run the node as configured; the message is one line for a person."""


def describe_mode(settings: Settings) -> str:
    """One line naming the adapters these settings choose."""
    database = "sqlite" if settings.is_sqlite else "postgresql"
    bus = "redis bus" if settings.redis_url else "in-process bus"
    blobs = "s3 blobs" if settings.s3_bucket else "local blobs"
    shape = "multi-node" if settings.redis_url else "single-node"
    return f"{shape}: {database}, {bus}, {blobs}"


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) for this process's owner alone, and make an existing one
    so (0700): it holds the database, the secret key and the blobs."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except PermissionError:
        log.warning("%s is readable by others and not ours to change", path)


def secret_key_path(settings: Settings) -> Path:
    return settings.data_dir / SECRET_KEY_FILE


def secret_key(settings: Settings) -> bytes:
    """The HMAC key for signed URLs: from settings, else generated once into the data dir."""
    if settings.secret_key is not None:
        return settings.secret_key.encode()
    path = secret_key_path(settings)
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    ensure_private_dir(settings.data_dir)
    key = secrets.token_urlsafe(48).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    log.info("generated a secret key in %s", path)
    return key


def node_secret(settings: Settings) -> bytes:
    """The key of SFU join tokens: shared by every node; the secret key on a single node."""
    if settings.node_secret is not None:
        return settings.node_secret.encode()
    return secret_key(settings)


def browser_url(settings: Settings) -> str:
    """Where a person opens the node in a browser: its public URL (by default the bind
    address, loopback for a wildcard bind)."""
    return settings.public_url.rstrip("/") + "/"


def check_writable_dirs(settings: Settings) -> None:
    """The directories this node writes (the data directory for SQLite and a generated key,
    the blob directory for local blobs) exist, are ours, and take a file."""
    needed: list[tuple[Path, str]] = []
    if settings.is_sqlite or settings.secret_key is None:
        needed.append((settings.data_dir, "NAPALMSKY_DATA_DIR"))
    if not settings.s3_bucket:
        needed.append((Path(settings.blob_dir), "NAPALMSKY_BLOB_DIR"))
    for path, variable in needed:
        try:
            ensure_private_dir(path)
            with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
                pass
        except OSError as exc:
            raise StartupError(
                f"cannot write to {path} ({exc.strerror or exc}): set {variable} to a directory "
                "this user can write, or fix its owner and permissions") from None


def bind_http(settings: Settings) -> socket.socket:
    """The listening TCP socket of the HTTP server, bound now so that a port in use is known
    before anything else starts."""
    host, port = settings.host, settings.port
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {where}: {exc.strerror}: set NAPALMSKY_HOST (or "
                           "--host) to an address of this machine") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(HTTP_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            hint = ("another process is listening there: stop it, or choose another port with "
                    "--port or NAPALMSKY_PORT")
        elif exc.errno == errno.EACCES:
            hint = "ports below 1024 need privileges: choose a port above 1024 with --port"
        elif exc.errno == errno.EADDRNOTAVAIL:
            hint = "that address is not this machine's: set NAPALMSKY_HOST (or --host)"
        else:
            hint = str(exc.strerror or exc)
        raise StartupError(f"cannot listen on {where}: {hint}") from None
    return sock


def check_media_ports(settings: Settings) -> None:
    """On an SFU node, each media bind address takes a UDP socket in the configured range, or,
    with one shared port (NAPALMSKY_RTC_PORT), on exactly that port."""
    from sfu.ports import bind_udp_in_range, bind_udp_port

    if Role.SFU not in settings.roles:
        return
    low, high, shared = settings.rtc_port_min, settings.rtc_port_max, settings.rtc_port
    if shared:
        span = f"UDP port {shared}"
    else:
        span = f"UDP ports {low}-{high}" if low else "a UDP port"
    for address in settings.rtc_bind or ("0.0.0.0",):  # noqa: S104 - aioice's default binds all
        try:
            if shared:
                bind_udp_port(address, shared).close()
            else:
                bind_udp_in_range(address, low, high).close()
        except Unavailable as exc:
            if shared:
                raise StartupError(
                    f"{exc} for media: stop the process holding it (each worker needs a port "
                    "of its own), or choose another with NAPALMSKY_RTC_PORT") from None
            raise StartupError(
                f"no free UDP port on {address} in {low}-{high} for media: free some, or widen "
                "NAPALMSKY_RTC_PORT_MIN/NAPALMSKY_RTC_PORT_MAX") from None
        except OSError as exc:
            raise StartupError(
                f"cannot bind {span} on {address} for media ({exc.strerror or exc}): set "
                "NAPALMSKY_RTC_BIND to addresses of this machine") from None


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files (RLIMIT_NOFILE) to its hard limit, as
    servers do: each WebSocket and each media socket is a descriptor, and Debian's soft default
    (1024) would cap a node near a thousand connections. Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a container may forbid it: keep what we have
            pass
    if soft < FD_LIMIT_WARNING:
        log.warning("open files limited to %d: this node holds at most about %d connections; "
                    "raise `ulimit -n` (LimitNOFILE= under systemd)", soft,
                    soft // (FDS_PER_CONNECTION + 1))
    return soft
