"""The `napalmsky` command: serve, migrate, config, sfu-token, admin, loadtest, bots."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from dotenv import dotenv_values

from core.errors import NapalmError
from core.settings import Settings, SettingsError, describe, load_settings, unknown_variables
from napalmsky.startup import StartupError

log = logging.getLogger("napalmsky")

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 1


def read_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment over an optional `.env` file (NAPALMSKY_ENV_FILE or ./.env)."""
    environ = dict(os.environ if environ is None else environ)
    env_file = Path(environ.get("NAPALMSKY_ENV_FILE", ".env"))
    merged: dict[str, str] = {}
    if env_file.is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(environ)
    return merged


def _settings(env: Mapping[str, str], overrides: Mapping[str, str | None]) -> Settings:
    merged = dict(env)
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return load_settings(merged, hostname=socket.gethostname())


def _fail(message: str, code: int) -> int:
    print(f"napalmsky: error: {message}", file=sys.stderr)
    return code


def prepare_database(settings: Settings) -> None:
    """Bring the embedded database to the current schema; refuse to run on an old external one.

    Runs before the event loop starts: Alembic's env.py runs its own loop.
    """
    from adapters.sql.migrate import current_revision, head_revision, upgrade

    if settings.is_sqlite:
        before = current_revision(settings.database_url)
        upgrade(settings.database_url)
        after = current_revision(settings.database_url)
        if after != before:
            log.info("database migrated from revision %s to %s", before or "none", after)
        return
    current, head = current_revision(settings.database_url), head_revision()
    if current != head:
        raise SettingsError(
            f"DATABASE_URL: the schema is at revision {current or 'none'}, this version needs "
            f"{head}: run `napalmsky migrate` first"
        )


GC_THRESHOLDS = (20_000, 20, 20)  # allocations before a young collection, then old ones


def settle_garbage_collector() -> None:
    """Once the node has started: move everything alive now (modules, the app, its ORM
    metadata) out of the collector's view (`gc.freeze`) and collect the young generation less
    often. The media path allocates a few small tuples per packet; with Python's defaults that
    ran a young collection every few dozen packets and a full one, over every object of the
    process, every few seconds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _serve(settings: Settings, listener: socket.socket) -> None:
    from aiohttp import web

    from napalmsky.composition import SERVICES, build_app
    from napalmsky.logs import AccessLogger
    from napalmsky.startup import browser_url

    app = build_app(settings)
    runner = web.AppRunner(app, access_log=logging.getLogger("napalmsky.access"),
                           access_log_class=AccessLogger,
                           keepalive_timeout=settings.http_idle_timeout)
    await runner.setup()
    try:
        await app[SERVICES].store.ping()
        site = web.SockSite(runner, listener)
        await site.start()
        settle_garbage_collector()
        log.info("listening on http://%s:%d", settings.host, settings.port)
        log.info("ready: open %s in a browser; press Ctrl-C to stop", browser_url(settings))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()


def _run(settings: Settings, listener: socket.socket) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is installed where the platform has it
        asyncio.run(_serve(settings, listener))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(settings, listener))


def cmd_serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from napalmsky.logs import configure_logging
    from napalmsky.startup import (
        bind_http,
        check_media_ports,
        check_writable_dirs,
        raise_fd_limit,
    )

    settings = _settings(
        env,
        {
            "NAPALMSKY_HOST": args.host,
            "NAPALMSKY_PORT": None if args.port is None else str(args.port),
            "NAPALMSKY_ROLES": args.roles,
        },
    )
    configure_logging(settings.log_format, settings.log_level)
    for name in unknown_variables(env):
        log.warning("ignoring unknown setting %s (a typo?)", name)
    # What the machine must give the node is checked first, in the order a person fixes it.
    check_writable_dirs(settings)
    raise_fd_limit()
    listener = bind_http(settings)
    try:
        check_media_ports(settings)
        prepare_database(settings)
        _run(settings, listener)
    finally:
        listener.close()
    return 0


def cmd_migrate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from adapters.sql.migrate import current_revision, downgrade, upgrade
    from core.settings import mask_url

    settings = _settings(env, {})
    target = args.revision
    if args.downgrade:
        downgrade(settings.database_url, target)
    else:
        upgrade(settings.database_url, target)
    revision = current_revision(settings.database_url)
    print(f"{mask_url(settings.database_url)}: at revision {revision or 'none'}")
    return 0


def cmd_config(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from napalmsky.startup import describe_mode, secret_key_path

    settings = _settings(env, {})
    rows = describe(settings)
    if settings.secret_key is None:  # the key in use is generated into the data directory
        key_file = secret_key_path(settings)
        shown = (f"**** (generated, in {key_file})" if key_file.is_file()
                 else f"(generated into {key_file} at first start)")
        rows = [(name, shown if name == "NAPALMSKY_SECRET_KEY" else value)
                for name, value in rows]
    if settings.node_secret is None:
        rows = [(name, "(unset: the secret key signs join tokens)"
                 if name == "NAPALMSKY_NODE_SECRET" else value) for name, value in rows]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    print(f"{'mode'.ljust(width)}  {describe_mode(settings)}")
    for name in unknown_variables(env):
        print(f"warning: unknown setting {name} is ignored", file=sys.stderr)
    return 0


def cmd_sfu_token(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from core.clock import SystemClock
    from napalmsky.startup import node_secret
    from sfu.token import mint_join_token

    settings = _settings(env, {})
    print(mint_join_token(node_secret(settings), args.room, args.user, SystemClock(), args.ttl))
    return 0


def cmd_turn_config(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from turn.coturn import CoturnConfig, render

    settings = _settings(env, {})
    try:
        text = render(CoturnConfig(
            secrets=settings.turn_secrets, realm=settings.turn_realm,
            listening_ips=settings.turn_listen_ips, port=settings.turn_port,
            tls_port=settings.turn_tls_port, tls_cert=settings.turn_tls_cert,
            tls_key=settings.turn_tls_key, relay_ips=settings.turn_relay_ips,
            external_ips=settings.turn_external_ips, min_port=settings.turn_relay_port_min,
            max_port=settings.turn_relay_port_max, allowed_peers=settings.turn_allowed_peers,
            allow_loopback=args.allow_loopback,
        ))
    except ValueError as exc:
        return _fail(f"turn config: {exc}", EXIT_CONFIG)
    if args.output is None:
        sys.stdout.write(text)
    else:
        # it holds the secrets: readable by its owner only (the umask is 077 already)
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        print(f"coturn configuration written to {args.output}", file=sys.stderr)
    return 0


async def _create_admin(settings: Settings, email: str, name: str) -> tuple[str, str]:
    import secrets

    from adapters.live import MemoryLiveState
    from adapters.sql import SqlStore, create_engine
    from core.clock import SystemClock
    from napalmsky.composition import make_accounts

    clock = SystemClock()
    store = SqlStore(create_engine(settings.database_url), clock)
    try:
        password = secrets.token_urlsafe(18)
        accounts = make_accounts(settings, store, MemoryLiveState(clock), clock)
        _user, uri = await accounts.create_admin(email, name, password)
        return password, uri
    finally:
        await store.close()


def cmd_admin_create(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    settings = _settings(env, {})
    prepare_database(settings)
    password, uri = asyncio.run(_create_admin(settings, args.email, args.name))
    print(f"admin {args.email} created. Shown once, keep them safe:")
    print(f"password: {password}")
    print(f"TOTP provisioning URI (scan it into an authenticator app): {uri}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="napalmsky",
        description="Napalm Sky: backend and WebRTC media server for timed one-to-one calls. "
        "Settings come from NAPALMSKY_* variables, DATABASE_URL, REDIS_URL and ./.env.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run a node", description="Run a node: HTTP server and "
                           "the chosen roles. On the embedded SQLite default the database is "
                           "migrated first.")
    serve.add_argument("--host", help="bind address (NAPALMSKY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (NAPALMSKY_PORT, default 8080)")
    serve.add_argument("--roles", help="all, or a comma list of api,signaling,sfu,worker "
                       "(NAPALMSKY_ROLES, default all)")
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations",
                             description="Bring DATABASE_URL's schema to a revision (default: "
                             "the newest).")
    migrate.add_argument("--revision", default="head", help="target revision (default head)")
    migrate.add_argument("--downgrade", action="store_true",
                         help="go down to --revision (use 'base' to drop everything)")
    migrate.set_defaults(func=cmd_migrate)

    config = sub.add_parser("config", help="print the effective settings (secrets masked)",
                            description="Print every setting's effective value; secrets and "
                            "URL passwords are masked.")
    config.set_defaults(func=cmd_config)

    token = sub.add_parser("sfu-token", help="mint an SFU join token (for tests and operators)",
                           description="Print a join token for ROOM and USER, signed with "
                           "NAPALMSKY_NODE_SECRET (or the secret key on a single node).")
    token.add_argument("--room", required=True, help="room id")
    token.add_argument("--user", required=True, help="user id")
    token.add_argument("--ttl", type=int, default=300, help="seconds the token is valid (300)")
    token.set_defaults(func=cmd_sfu_token)

    admin = sub.add_parser("admin", help="manage admin accounts",
                           description="Manage admin accounts.")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    create = admin_sub.add_parser(
        "create", help="create an admin with a generated password and a TOTP secret",
        description="Create a permanent admin account. Prints its generated password and the "
        "TOTP provisioning URI once; admin routes need the TOTP code.")
    create.add_argument("--email", required=True, help="the admin's email (their login)")
    create.add_argument("--name", required=True, help="the admin's display name")
    create.set_defaults(func=cmd_admin_create)

    turn = sub.add_parser("turn", help="TURN relay (coturn) for operators",
                          description="TURN relay (coturn) for operators.")
    turn_sub = turn.add_subparsers(dest="turn_command", required=True, metavar="ACTION")
    turn_config = turn_sub.add_parser(
        "config", help="render a coturn configuration from NAPALMSKY_TURN_* settings",
        description="Print (or write) a turnserver.conf for coturn: listeners, relay range, "
        "external IP, TURN REST secrets (use-auth-secret), realm, TLS, and denied peer ranges "
        "for every private, loopback and link-local network.")
    turn_config.add_argument("--output", help="write to this file (mode 0600) instead of stdout")
    turn_config.add_argument("--allow-loopback", action="store_true",
                             help="let the relay reach 127.0.0.1 and ::1: for tests on one "
                             "machine only, never in production")
    turn_config.set_defaults(func=cmd_turn_config)

    from loadtest.cli import add_commands  # argparse only: the bots load when they run

    add_commands(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    # What this process writes (the SQLite file, blobs, the generated key) is for its owner
    # alone: files 0600, directories 0700.
    os.umask(0o077)
    args = parser().parse_args(argv)
    env = read_environment()
    try:
        result: int = args.func(args, env)
        return result
    except SettingsError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except StartupError as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    except NapalmError as exc:
        return _fail(exc.message, EXIT_UNAVAILABLE)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
