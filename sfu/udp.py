"""Reading the SFU's UDP sockets: recvmsg with kernel receive timestamps, in batches.

One reader serves both ways of holding media sockets: a socket per connection
(`sfu.internals.DatagramSocket`: every non-STUN datagram goes to that connection's handler) and
one socket per process shared by every connection (`sfu.mux.UdpMux`: the handler is looked up by
the datagram's source address). Either way the media path costs one dict lookup and the call.
Kept free of aiortc and aioice.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

# Python's socket module does not export SO_TIMESTAMPNS; Linux's value on the architectures
# that share asm-generic/socket.h (x86, arm, arm64, riscv, ...) is 35, and SCM_TIMESTAMPNS is
# the same number (socket(7)); only that message is asked for. Elsewhere the arrival time is
# the time of reading.
_LINUX_GENERIC = sys.platform == "linux" and platform.machine() in (
    "x86_64", "i686", "aarch64", "armv7l", "armv8l", "riscv64")
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if _LINUX_GENERIC else None)
_TIMESPEC = struct.Struct("@qq")  # struct timespec on Linux: seconds, nanoseconds
_TIMESPEC_SIZE = _TIMESPEC.size
READ_BATCH = 64  # datagrams read per wake-up before the loop gets a turn
# Bytes asked of recvmsg: more than any datagram WebRTC sends (RTP/RTCP/DTLS/STUN fit a path MTU
# of 1500; browsers keep RTP near 1200). A 64 KiB request made glibc grow and trim its heap on
# every datagram (page faults on each read); a larger datagram is dropped and counted.
MAX_DATAGRAM = 4096
_MSG_TRUNC = int(socket.MSG_TRUNC)  # a plain int: IntFlag.__and__ is Python code

Address = tuple[str, int]
# (datagram, arrival on the monotonic clock in seconds, source address or None when relayed
# by TURN)
DatagramHandler = Callable[[bytes, float, "Address | None"], None]
# (a STUN datagram, its source address)
StunHandler = Callable[[bytes, Address], None]


class UdpReader:
    """Reads one non-blocking UDP socket when the event loop finds it readable.

    Each wake-up reads up to READ_BATCH datagrams. A datagram's arrival time is the kernel's
    receive timestamp (SO_TIMESTAMPNS, CLOCK_REALTIME) mapped onto time.monotonic(): a busy
    event loop delays the handling of a packet but not its timestamp, which is what congestion
    control feedback reports (transport-cc). Where the kernel gives no timestamp, the time of
    reading stands in.

    Demultiplexing by first byte (RFC 7983 section 7): 0-3 is STUN (RFC 8489 section 5: the
    two top bits zero) and goes to `on_stun(data, source)`; anything else (DTLS 20-63, RTP and
    RTCP 128-191, garbage, empty datagrams) to `routes.get(source, default)(data, arrival,
    source)`. `routes` is read on every datagram, so its owner may change it at any time; an
    empty mapping sends everything to `default`. Sources are (host, port) pairs (an IPv6
    four-tuple is cut to two).
    """

    def __init__(self, sock: socket.socket, on_stun: StunHandler,
                 routes: Mapping[Address, DatagramHandler], default: DatagramHandler) -> None:
        self.sock = sock
        self._on_stun = on_stun
        self._routes = routes
        self._default = default
        self._loop: asyncio.AbstractEventLoop | None = None
        self.truncated = 0  # datagrams over MAX_DATAGRAM, dropped
        self.timestamps = False
        if _SO_TIMESTAMPNS is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                self.timestamps = True
            except OSError:
                pass
        self._ancillary = socket.CMSG_SPACE(_TIMESPEC.size) if self.timestamps else 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start reading on `loop` (idempotent)."""
        if self._loop is None:
            self._loop = loop
            loop.add_reader(self.sock.fileno(), self._read)

    def detach(self) -> None:
        """Stop reading (idempotent); the socket stays open."""
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._loop = None

    def _read(self) -> None:
        sock, ancillary_size = self.sock, self._ancillary
        on_stun, routes, default = self._on_stun, self._routes, self._default
        offset = time.monotonic() - time.time()  # kernel stamps are CLOCK_REALTIME
        for _ in range(READ_BATCH):
            try:
                data, ancillary, flags, addr = sock.recvmsg(MAX_DATAGRAM, ancillary_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error queued on the socket, say
                log.debug("recvmsg failed: %s", exc)
                return
            if flags & _MSG_TRUNC:
                self.truncated += 1  # larger than any WebRTC datagram: not ours
                continue
            # The one control message asked for (SO_TIMESTAMPNS), if the kernel gave it.
            if ancillary and len(ancillary[0][2]) >= _TIMESPEC_SIZE:
                seconds, nanoseconds = _TIMESPEC.unpack_from(ancillary[0][2])
                arrival = seconds + nanoseconds * 1e-9 + offset
            else:
                arrival = time.monotonic()
            source = (addr[0], addr[1])
            if data and data[0] < 4:
                try:
                    on_stun(data, source)
                except Exception:  # a malformed message a STUN parser does not expect
                    log.debug("STUN datagram from %s dropped", source, exc_info=True)
            else:
                routes.get(source, default)(data, arrival, source)


class SocketTransport(asyncio.DatagramTransport):
    """asyncio's datagram transport over a UDP socket the SFU reads itself, as a datagram
    protocol (aioice's StunProtocol) uses it: `sendto`, `close`, `get_extra_info("sockname")`,
    `is_closing`. Sends after closing are dropped. What closing releases is the subclass's
    `_release()`; the protocol's `connection_lost(None)` follows on the next loop turn."""

    def __init__(self, sock: socket.socket, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self._sock = sock
        self._sockname = sock.getsockname()
        self._protocol = protocol
        self._closing = False

    @property
    def sock(self) -> socket.socket:
        """The UDP socket (shared by every view of the shared port)."""
        return self._sock

    def sendto(self, data: Any, addr: Any = None) -> None:
        if not self._closing:
            send_datagram(self._sock, data, addr)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._sockname
        if name == "socket":
            return self._sock
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._release()
        asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def _release(self) -> None:
        raise NotImplementedError


def send_datagram(sock: socket.socket, data: bytes | memoryview, addr: Address) -> None:
    """Send one datagram; UDP semantics: a full send buffer or an error drops it."""
    try:
        sock.sendto(data, addr)
    except (BlockingIOError, InterruptedError):
        pass  # the send buffer is full: UDP drops it
    except OSError as exc:
        log.debug("sendto %s failed: %s", addr, exc)


__all__ = ["READ_BATCH", "Address", "DatagramHandler", "SocketTransport", "StunHandler",
           "UdpReader", "send_datagram"]
