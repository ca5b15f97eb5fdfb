"""The public protocol as a client speaks it (docs/protocol.md): REST under /api/v1 and the
signaling socket `/ws`, timed into `Measurements`.

Nothing here imports the server's packages: bots know the node only through the wire. Every
failure becomes a `WireError` with a stable code: the node's own (`rate_limited`,
`failed_precondition`, ...), or one of ours for what the network did (`unreachable`,
`timeout`, `ws_closed_<code>`, `bad_response`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from loadtest.measure import Measurements

PREFIX = "/api/v1"
SESSION_REFUSED = ("unauthenticated", "ws_closed_4401")  # no point in trying again


class WireError(Exception):
    """A request that failed, with the code to count it under."""

    def __init__(self, code: str, message: str = "", status: int | None = None,
                 challenge: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status
        self.challenge = challenge  # with `challenge_required`: the proof-of-work to solve


def ws_url(base: str, path: str) -> str:
    """`http://h:p` + `/ws` -> `ws://h:p/ws` (https -> wss)."""
    base = base.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://"):] + path
    if base.startswith("http://"):
        return "ws://" + base[len("http://"):] + path
    return base + path


async def _error_of(response: aiohttp.ClientResponse) -> WireError:
    try:
        body = await response.json(content_type=None)
        error = body["error"]
        challenge = error.get("challenge")
        return WireError(str(error["code"]), str(error.get("message", "")), response.status,
                         challenge if isinstance(challenge, dict) else None)
    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
        return WireError(f"http_{response.status}", response.reason or "", response.status)


class Rest:
    """REST calls to one node, each timed under its route template (`GET /api/v1/deck`)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, measurements: Measurements,
                 timeout: float = 30.0) -> None:
        self.session = session
        self.base = base.rstrip("/")
        self.m = measurements
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def call(self, method: str, route: str, *, token: str | None = None,
                   body: Mapping[str, Any] | None = None, path: str | None = None,
                   record: bool = True) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        started = time.perf_counter()
        try:
            async with self.session.request(
                method, self.base + (path or route), json=body, headers=headers,
                timeout=self.timeout,
            ) as response:
                if response.status >= 400:
                    raise await _error_of(response)
                result = None if response.status == 204 else await response.json(
                    content_type=None)
        except TimeoutError as exc:
            raise WireError("timeout", f"{method} {route}") from exc
        except aiohttp.ClientConnectionError as exc:
            raise WireError("unreachable", str(exc)) from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise WireError("bad_response", f"{method} {route}: {exc}") from exc
        if record:
            self.m.latency(f"http {method} {route}", 1000 * (time.perf_counter() - started))
        return result


class Signaling:
    """One signaling socket: `connect()` authenticates and returns the `state` frame; requests
    are acked by id; server events queue up in `events`."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str,
                 measurements: Measurements) -> None:
        self.session = session
        self.url = ws_url(base, "/ws")
        self.token = token
        self.m = measurements
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, wait: float = 15.0) -> dict[str, Any]:
        try:
            self._ws = await self.session.ws_connect(self.url, timeout=aiohttp.ClientWSTimeout(
                ws_close=5.0), heartbeat=None, max_msg_size=1 << 20)
            await self._ws.send_json({"type": "auth", "data": {"token": self.token}})
            msg = await self._ws.receive(timeout=wait)
        except TimeoutError as exc:
            raise WireError("timeout", "no state frame after auth") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise WireError("unreachable", f"/ws: {exc}") from exc
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise WireError(f"ws_closed_{self._ws.close_code or 1006}", "closed before state")
        frame = json.loads(msg.data)
        if frame.get("type") != "state":
            code = str(frame.get("data", {}).get("code", "bad_response"))
            raise WireError(code, str(frame.get("data", {}).get("message", "")))
        self._reader = asyncio.ensure_future(self._read())
        state: dict[str, Any] = frame["data"]
        return state

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                frame = json.loads(msg.data)
                kind = frame.get("type")
                if kind in ("ack", "error") and isinstance(frame.get("id"), int):
                    future = self._pending.pop(frame["id"], None)
                    if future is not None and not future.done():
                        future.set_result(frame)
                        continue
                if kind == "error":
                    self.m.error(str(frame.get("data", {}).get("code", "unknown")), "ws event")
                    continue
                self.events.put_nowait(frame)
        except (aiohttp.ClientError, ValueError, OSError):
            pass
        finally:
            self.close_code = self._ws.close_code
            self.closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(WireError(f"ws_closed_{self.close_code or 1006}"))
            self._pending.clear()

    async def request(self, kind: str, data: Mapping[str, Any] | None = None,
                      wait: float = 15.0) -> dict[str, Any]:
        """Send a request and wait for its ack: the ack's data, or `WireError` with the code."""
        if self._ws is None or self._ws.closed or self.closed.is_set():
            raise WireError(f"ws_closed_{self.close_code or 1006}", kind)
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        started = time.perf_counter()
        try:
            await self._ws.send_json({"type": kind, "id": request_id, "data": dict(data or {})})
            frame = await asyncio.wait_for(future, wait)
        except TimeoutError as exc:
            raise WireError("timeout", f"no ack for {kind}") from exc
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            raise WireError(f"ws_closed_{self.close_code or 1006}", kind) from exc
        finally:
            self._pending.pop(request_id, None)
        if frame["type"] == "error":
            error = frame.get("data", {})
            raise WireError(str(error.get("code", "unknown")), str(error.get("message", "")))
        self.m.latency(f"ws {kind}", 1000 * (time.perf_counter() - started))
        ack: dict[str, Any] = frame.get("data") or {}
        return ack

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self.closed.set()


async def connect_with_backoff(
    session: aiohttp.ClientSession, base: str, token: str, measurements: Measurements,
    stop: asyncio.Event, *, previous: Signaling | None = None, max_delay: float = 10.0,
    on_error: Callable[[WireError, float], None] = lambda error, delay: None,
) -> Signaling | None:
    """Open `/ws` (again, closing `previous`), retrying with exponential backoff: the socket,
    or None when the session is refused or `stop` is set. `on_error(error, delay)` hears of
    each failure before the wait."""
    delay = 1.0
    while not stop.is_set():
        if previous is not None:
            await previous.close()
        previous = Signaling(session, base, token, measurements)
        try:
            await previous.connect()
        except WireError as exc:
            on_error(exc, delay)
            if exc.code in SESSION_REFUSED:
                await previous.close()
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(max_delay, delay * 2)
            continue
        return previous
    if previous is not None:
        await previous.close()
    return None


POW_ALGORITHM = "sha256-leading-zero-bits"
MAX_POW_BITS = 32  # a node asks at most 23; more is not a challenge a bot should take on


def solve_pow(token: str, bits: int) -> str:
    """The counter (decimal, as the web client sends it) for which SHA-256(token + counter)
    starts with `bits` zero bits: about 2^bits hashes (15 bits: ~30 ms on one core)."""
    counter = 0
    while True:
        digest = hashlib.sha256(f"{token}{counter}".encode()).digest()
        if int.from_bytes(digest, "big") >> (256 - bits) == 0:
            return str(counter)
        counter += 1


async def sign_up_guest(rest: Rest, name: str, gender: str) -> tuple[Any, int]:
    """`POST /api/v1/auth/guest` as the web client does it: a `challenge_required` answer is
    solved (in a thread, off the bots' loop) and the sign-up sent again with the solution.
    Returns (the auth response, challenges solved); raises WireError as `Rest.call`."""
    body: dict[str, Any] = {"name": name, "gender": gender}
    solved = 0
    for _ in range(3):
        try:
            return await rest.call("POST", "/api/v1/auth/guest", body=body), solved
        except WireError as exc:
            challenge = exc.challenge
            if exc.code != "challenge_required" or challenge is None or challenge.get(
                    "algorithm") != POW_ALGORITHM or not 0 < int(challenge.get("bits", 0)) \
                    <= MAX_POW_BITS:
                raise
            token = str(challenge["token"])
            counter = await asyncio.to_thread(solve_pow, token, int(challenge["bits"]))
            body = {"name": name, "gender": gender,
                    "challenge": {"token": token, "counter": counter}}
            solved += 1
    return await rest.call("POST", "/api/v1/auth/guest", body=body), solved
