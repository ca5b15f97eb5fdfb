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


def bind_udp_in_range(address: str, port_min: int, port_max: int) -> socket.socket:
    """A non-blocking UDP socket bound to `address` on a port in [port_min, port_max], tried
    from a random start; any free port when both are 0.

    Raises Unavailable when every port of the range is taken or refused (EADDRINUSE, EACCES),
    and OSError when the address itself cannot be bound (EADDRNOTAVAIL: not this machine's).
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    ports: Sequence[int]
    if port_min == 0:
        ports = [0]
    else:
        count = port_max - port_min + 1
        start = random.randrange(count)
        ports = [port_min + (start + i) % count for i in range(count)]
    for port in ports:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_SOCKET_BUFFER_SIZE)
            sock.bind((address, port))
            sock.setblocking(False)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
    raise Unavailable(f"no free UDP port on {address} in {port_min}-{port_max}")
