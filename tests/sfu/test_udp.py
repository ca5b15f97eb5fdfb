"""The SFU's socket reader stamps each datagram with the kernel's receive time."""

from __future__ import annotations

import asyncio
import socket
import time

from sfu.udp import MAX_DATAGRAM, UdpReader
from tests.sfu.conftest import wait_for


async def test_arrival_is_the_kernels_receive_time() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    got: list[tuple[float, float]] = []
    reader = UdpReader(server, lambda data, addr: None, {},
                       lambda data, arrival, source: got.append((arrival, time.monotonic())))
    try:
        assert reader.timestamps  # SO_TIMESTAMPNS is on (Linux)
        sent = time.monotonic()
        client.sendto(b"\x80datagram", server.getsockname())
        time.sleep(0.05)  # the datagram waits in the socket buffer while the loop is "busy"
        reader.attach(asyncio.get_running_loop())
        await wait_for(lambda: bool(got))
        arrival, handled = got[0]
        # stamped when the kernel queued it, not when it was read 50 ms later
        assert sent - 0.005 <= arrival <= sent + 0.02
        assert handled - arrival >= 0.045
    finally:
        reader.detach()
        server.close()
        client.close()


async def test_an_oversized_datagram_is_dropped_and_counted() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    got: list[bytes] = []
    reader = UdpReader(server, lambda data, addr: None, {},
                       lambda data, arrival, source: got.append(data))
    try:
        reader.attach(asyncio.get_running_loop())
        client.sendto(b"\x80" * (MAX_DATAGRAM + 1), server.getsockname())
        client.sendto(b"\x80" * MAX_DATAGRAM, server.getsockname())
        await wait_for(lambda: bool(got))
        assert got == [b"\x80" * MAX_DATAGRAM]
        assert reader.truncated == 1
    finally:
        reader.detach()
        server.close()
        client.close()
