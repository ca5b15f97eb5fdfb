"""Slow and idle HTTP clients (slowloris) against `napalmsky serve` as operators run it: a
connection that sends nothing, one whose headers arrive a byte at a time, and one whose body
dawdles are all let go, while a prompt client on the same node is served."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.napalmsky.served import start_server

IDLE_TIMEOUT = "1"
BODY_TIMEOUT = "1"
GIVE_UP = 60.0  # seconds: far past both timeouts, so a busy machine cannot fail the test


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    tmp = tmp_path_factory.mktemp("slow")
    proc, url, _ = start_server(tmp, NAPALMSKY_HTTP_IDLE_TIMEOUT=IDLE_TIMEOUT,
                                NAPALMSKY_HTTP_BODY_TIMEOUT=BODY_TIMEOUT)
    host, port = url.removeprefix("http://").split(":")
    try:
        yield host, int(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def connect(server: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(server, timeout=GIVE_UP)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (EOF or reset)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed its end: a read sees EOF or a reset, at once."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


def test_an_idle_connection_is_closed(server: tuple[str, int]) -> None:
    with connect(server) as sock:
        assert read_until_closed(sock) == b""  # no request, no reply: just closed


def test_headers_a_byte_at_a_time_are_cut_off(server: tuple[str, int]) -> None:
    request = (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 4000 + b"\r\n\r\n")
    sent, cut_off = 0, False
    deadline = time.monotonic() + GIVE_UP
    with connect(server) as sock:
        while sent < len(request) and time.monotonic() < deadline:
            if closed_by_server(sock):
                cut_off = True
                break
            try:
                sock.sendall(request[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                cut_off = True
                break
            sent += 1
            time.sleep(0.05)  # the drip itself, not a wait for the server
        assert cut_off, f"the server still listened after {sent} dripped bytes"
        assert sent < len(request)
        assert b"HTTP/1.1" not in read_until_closed(sock)


def test_a_slow_body_gets_a_400_and_the_connection_is_let_go(server: tuple[str, int]) -> None:
    body = json.dumps({"email": "slow@example.com", "password": "x" * 40}).encode()
    head = (b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    with connect(server) as sock:
        sock.sendall(head + body[:5])  # then nothing more: the body never completes
        reply = read_until_closed(sock)
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 400"), reply[:200]
    payload = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert payload["error"]["code"] == "invalid_argument"
    assert "too long" in payload["error"]["message"]


def test_a_prompt_client_is_served_meanwhile(server: tuple[str, int]) -> None:
    with connect(server) as idle, connect(server) as prompt:
        prompt.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_until_closed(prompt).startswith(b"HTTP/1.1 200")
        assert read_until_closed(idle) == b""


async def test_a_quiet_websocket_outlives_the_idle_timeout(server: tuple[str, int]) -> None:
    """The idle timer is for connections waiting on a request; an open signaling socket is a
    request being served and must not be cut by it."""
    import aiohttp

    url = f"http://{server[0]}:{server[1]}"
    email = f"quiet-{time.monotonic_ns()}@example.com"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/api/v1/auth/register", json={
                "email": email, "password": "quiet-socket-pass-1", "name": "Quinn",
                "gender": "female"}) as resp:
            assert resp.status == 201, await resp.text()
        async with http.post(f"{url}/api/v1/auth/login", json={
                "email": email, "password": "quiet-socket-pass-1"}) as resp:
            token = (await resp.json())["token"]
        ws = await http.ws_connect(f"ws://{server[0]}:{server[1]}/ws", autoping=False,
                                   heartbeat=None)
        await ws.send_json({"type": "auth", "data": {"token": token}})
        assert (await ws.receive_json(timeout=GIVE_UP))["type"] == "state"
        with connect(server) as idle:  # a witness: once it is cut, the idle timeout has passed
            assert read_until_closed(idle) == b""
        await ws.send_json({"type": "presence:heartbeat", "id": 1, "data": {}})
        reply = await ws.receive_json(timeout=GIVE_UP)
        assert reply["type"] == "ack" and reply["id"] == 1
        await ws.close()
