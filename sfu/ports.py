"""UDP sockets for media in the configured port range.

Kept free of aiortc and aioice so that `napalmsky serve` can check, before it starts, that the
range can be bound at all.
"""

from __future__ import annotations

import errno
import random
import socket
from collections.abc import Sequence

from core.errors import Unavailable

UDP_SOCKET_BUFFER_SIZE = 1 << 21  # bytes of kernel receive buffer per media socket


def _bind(address: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to (address, port), with a large receive buffer.

    No SO_REUSEADDR or SO_REUSEPORT: UDP leaves no TIME_WAIT behind, and two processes bound
    to the same port would each get part of the traffic. Raises OSError.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_SOCKET_BUFFER_SIZE)
        sock.bind((address, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def bind_udp_in_range(address: str, port_min: int, port_max: int) -> socket.socket:
    """A non-blocking UDP socket bound to `address` on a port in [port_min, port_max], tried
    from a random start; any free port when both are 0.

    Raises Unavailable when every port of the range is taken or refused (EADDRINUSE, EACCES),
    and OSError when the address itself cannot be bound (EADDRNOTAVAIL: not this machine's).
    """
    ports: Sequence[int]
    if port_min == 0:
        ports = [0]
    else:
        count = port_max - port_min + 1
        start = random.randrange(count)
        ports = [port_min + (start + i) % count for i in range(count)]
    for port in ports:
        try:
            return _bind(address, port)
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
    raise Unavailable(f"no free UDP port on {address} in {port_min}-{port_max}")


def bind_udp_port(address: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to (address, port): the one shared media port
    (NAPALMSKY_RTC_PORT, 1-65535).

    Raises Unavailable when the port is taken (EADDRINUSE: another process, or another worker
    given the same port) or refused (EACCES: below 1024 without privileges), and OSError when
    the address cannot be bound (EADDRNOTAVAIL: not this machine's).
    """
    try:
        return _bind(address, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise Unavailable(f"UDP port {port} on {address} is taken") from None
        if exc.errno == errno.EACCES:
            raise Unavailable(f"UDP port {port} on {address} needs privileges") from None
        raise
