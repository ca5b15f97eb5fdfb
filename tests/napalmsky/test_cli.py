"""The `napalmsky` command as an operator runs it: real processes, real exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.services import PostgresDatabase, free_port

ROOT = Path(__file__).resolve().parents[2]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NAPALMSKY_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env["NAPALMSKY_DATA_DIR"] = str(tmp_path / "data")
    env["NAPALMSKY_ENV_FILE"] = str(tmp_path / "none.env")
    env.update(extra)
    return env


def napalmsky(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "napalmsky", *args],
        cwd=tmp_path, env=clean_env(tmp_path, **env), capture_output=True, text=True,
        timeout=120, check=False,
    )


@pytest.mark.parametrize(
    "args", [[], ["serve"], ["migrate"], ["config"], ["sfu-token"], ["admin", "create"]]
)
def test_help(tmp_path: Path, args: list[str]) -> None:
    result = napalmsky(tmp_path, *args, "--help")
    assert result.returncode == 0
    assert "usage: napalmsky" in result.stdout


def test_config_prints_effective_settings_with_secrets_masked(tmp_path: Path) -> None:
    result = napalmsky(
        tmp_path, "config",
        DATABASE_URL="postgresql://app:pg-secret@db.internal:5432/ns",
        REDIS_URL="redis://:redis-secret@cache:6379/0",
        NAPALMSKY_SECRET_KEY="s" * 40, NAPALMSKY_ROLES="sfu",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for secret in ("pg-secret", "redis-secret", "s" * 40):
        assert secret not in out + result.stderr
    assert "postgresql://app:****@db.internal:5432/ns" in out
    assert "NAPALMSKY_ROLES" in out and " sfu\n" in out
    assert "multi-node: postgresql, redis bus, local blobs" in out


def test_dotenv_is_read_and_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / "site.env"
    dotenv.write_text("NAPALMSKY_REGION=eu-west\nNAPALMSKY_PORT=9999\n")
    result = napalmsky(tmp_path, "config", NAPALMSKY_ENV_FILE=str(dotenv), NAPALMSKY_PORT="7000")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert lines["NAPALMSKY_REGION"] == "eu-west"
    assert lines["NAPALMSKY_PORT"] == "7000"


def test_unknown_role_is_refused_naming_the_variable(tmp_path: Path) -> None:
    result = napalmsky(tmp_path, "serve", NAPALMSKY_ROLES="foo")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "napalmsky: error: NAPALMSKY_ROLES: unknown role 'foo' "
        "(allowed: all, api, signaling, sfu, worker), got 'foo'"
    ]


def test_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://app:db-secret@127.0.0.1:{port}/ns"
    result = napalmsky(tmp_path, "serve", "--port", str(free_port()), DATABASE_URL=url)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("napalmsky: error: ")
    assert f"127.0.0.1:{port}" in lines[0]
    assert "db-secret" not in result.stderr and "Traceback" not in result.stderr


def test_migrate_then_serve_on_postgresql(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    fresh = f"{postgres_database.url}_cli"
    # A database that is not migrated: serve refuses and says what to run.
    import asyncio

    from tests.services import _admin

    name = fresh.rsplit("/", 1)[1]
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        refused = napalmsky(tmp_path, "serve", DATABASE_URL=fresh)
        assert refused.returncode == 2
        assert "napalmsky migrate" in refused.stderr
        migrated = napalmsky(tmp_path, "migrate", DATABASE_URL=fresh)
        assert migrated.returncode == 0, migrated.stderr
        assert "at revision" in migrated.stdout and "none" not in migrated.stdout
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_serve_on_embedded_defaults_answers_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "napalmsky", "serve", "--port", str(port)],
        cwd=tmp_path, env=clean_env(tmp_path, NAPALMSKY_LOG_FORMAT="json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                    body = json.loads(r.read())
                    break
            except OSError:
                time.sleep(0.2)
        assert body == {"status": "ready", "checks": {"database": "ok"}}
        assert (tmp_path / "data" / "napalmsky.db").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    messages = [r["message"] for r in records]
    assert any("single-node: sqlite, in-process bus, local blobs" in m for m in messages)
    assert any(m.startswith("listening on http://127.0.0.1:") for m in messages)
    start_up = [r["message"] for r in records if r["logger"] != "napalmsky.access"]
    start_up = start_up[:start_up.index("shutting down")]
    assert start_up[-1] == (
        f"ready: open http://127.0.0.1:{port}/ in a browser; press Ctrl-C to stop")
    assert not any(r["logger"].startswith("alembic") for r in records)
    assert "database migrated from revision none to " in " ".join(messages)
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)


def test_sfu_token_is_accepted_by_the_node(tmp_path: Path) -> None:
    from core.clock import SystemClock
    from sfu.token import verify_join_token

    secret = "k" * 40
    result = napalmsky(tmp_path, "sfu-token", "--room", "r1", "--user", "u1", "--ttl", "60",
                       NAPALMSKY_NODE_SECRET=secret)
    assert result.returncode == 0, result.stderr
    grant = verify_join_token(secret.encode(), result.stdout.strip(), SystemClock(), "r1")
    assert (grant.room_id, grant.user_id) == ("r1", "u1")
    bad = napalmsky(tmp_path, "sfu-token", "--room", "", "--user", "u1")
    assert bad.returncode == 1
    assert "room must be" in bad.stderr


def test_admin_create_prints_password_and_totp_uri_once(tmp_path: Path) -> None:
    result = napalmsky(tmp_path, "admin", "create", "--email", "Root@Example.com",
                       "--name", "Root", NAPALMSKY_BCRYPT_ROUNDS="4")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    password = next(line.split(": ", 1)[1] for line in lines if line.startswith("password: "))
    assert len(password) >= 20
    assert any("otpauth://totp/Napalm%20Sky:root%40example.com?secret=" in line for line in lines)
    again = napalmsky(tmp_path, "admin", "create", "--email", "root@example.com",
                      "--name", "Root", NAPALMSKY_BCRYPT_ROUNDS="4")
    assert again.returncode == 1
    assert "already exists" in again.stderr


def test_shutdown_hangs_up_open_sockets_at_once(tmp_path: Path) -> None:
    import asyncio

    import aiohttp

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "napalmsky", "serve", "--port", str(port)],
        cwd=tmp_path, env=clean_env(tmp_path, NAPALMSKY_BCRYPT_ROUNDS="4"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    async def scenario() -> tuple[int | None, float]:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"{base}/ready") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            async with session.post(f"{base}/api/v1/auth/guest",
                                    json={"name": "A", "gender": "male"}) as resp:
                token = (await resp.json())["token"]
            async with session.ws_connect(f"{base}/ws") as ws:
                await ws.send_json({"type": "auth", "data": {"token": token}})
                assert (await ws.receive_json())["type"] == "state"
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                async for _ in ws:
                    pass
                return ws.close_code, time.monotonic() - started

    try:
        code, took = asyncio.run(scenario())
    finally:
        proc.wait(timeout=30)
    assert code == 1001
    assert took < 5
    assert proc.returncode == 0


def _one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("napalmsky: error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


def test_port_in_use_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = napalmsky(tmp_path, "serve", "--port", str(port))
    line = _one_line_failure(result)
    assert f"127.0.0.1:{port}" in line and "--port" in line
    assert not (tmp_path / "data" / "napalmsky.db").exists()  # refused before migrating


def test_unwritable_data_directory_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the data directory should go")
    data_dir = blocker / "data"
    result = napalmsky(tmp_path, "serve", "--port", str(free_port()),
                       NAPALMSKY_DATA_DIR=str(data_dir))
    line = _one_line_failure(result)
    assert str(data_dir) in line and "NAPALMSKY_DATA_DIR" in line


def test_media_port_range_all_taken_is_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        udp = taken.getsockname()[1]
        result = napalmsky(tmp_path, "serve", "--port", str(free_port()),
                           NAPALMSKY_RTC_BIND="127.0.0.1", NAPALMSKY_RTC_PORT_MIN=str(udp),
                           NAPALMSKY_RTC_PORT_MAX=str(udp))
    line = _one_line_failure(result)
    assert f"127.0.0.1 in {udp}-{udp}" in line and "NAPALMSKY_RTC_PORT_MAX" in line


def test_shared_media_port_taken_is_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        udp = taken.getsockname()[1]
        result = napalmsky(tmp_path, "serve", "--port", str(free_port()),
                           NAPALMSKY_RTC_BIND="127.0.0.1", NAPALMSKY_RTC_PORT=str(udp))
    line = _one_line_failure(result)
    assert f"UDP port {udp} on 127.0.0.1 is taken" in line and "NAPALMSKY_RTC_PORT" in line


def test_media_address_not_of_this_machine_is_one_line(tmp_path: Path) -> None:
    result = napalmsky(tmp_path, "serve", "--port", str(free_port()),
                       NAPALMSKY_RTC_BIND="192.0.2.1")  # TEST-NET-1 (RFC 5737): nobody's
    line = _one_line_failure(result)
    assert "192.0.2.1" in line and "NAPALMSKY_RTC_BIND" in line


def test_config_shows_the_generated_secret_key_as_generated(tmp_path: Path) -> None:
    key_file = tmp_path / "data" / "secret_key"
    before = napalmsky(tmp_path, "config")
    assert before.returncode == 0, before.stderr
    assert f"(generated into {key_file} at first start)" in before.stdout
    key_file.parent.mkdir()
    key_file.write_text("k" * 64)
    after = napalmsky(tmp_path, "config")
    assert f"**** (generated, in {key_file})" in after.stdout
    assert "k" * 64 not in after.stdout + after.stderr
    assert "(unset)" not in [line.split(None, 1)[1] for line in after.stdout.splitlines()
                             if line.startswith("NAPALMSKY_SECRET_KEY ")]


def test_config_does_not_load_the_media_stack_or_the_servers(tmp_path: Path) -> None:
    probe = ("import sys\nfrom napalmsky.cli import main\nassert main(['config']) == 0\n"
             "heavy = {'aiortc', 'aioice', 'av', 'aiohttp', 'sqlalchemy', 'redis', 'boto3'}\n"
             "print('LOADED', sorted(heavy & set(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path,
                            env=clean_env(tmp_path, PYTHONPATH=str(ROOT)), capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout


def test_serve_raises_its_open_file_limit_to_the_hard_limit(tmp_path: Path) -> None:
    import resource

    # The child starts with a soft limit below a hard one it may rise to (lowering both is
    # allowed to any process), whatever this machine's own limits are.
    _, ours = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = 4096 if ours == resource.RLIM_INFINITY else min(ours, 4096)
    low = hard // 4

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "napalmsky", "serve", "--port", str(port)],
        cwd=tmp_path, env=clean_env(tmp_path, NAPALMSKY_RTC_BIND="127.0.0.1"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=lower,
    )
    try:
        deadline = time.monotonic() + 60
        limit = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2):
                    pass
            except OSError:
                time.sleep(0.2)
                continue
            for line in Path(f"/proc/{proc.pid}/limits").read_text().splitlines():
                if line.startswith("Max open files"):
                    limit = int(line.split()[3])
            break
        assert limit == hard
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_the_node_settles_its_garbage_collector() -> None:
    import gc

    from napalmsky.cli import GC_THRESHOLDS, settle_garbage_collector

    before = gc.get_threshold()
    try:
        settle_garbage_collector()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 1000  # the start-up heap is out of the collector's view
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
