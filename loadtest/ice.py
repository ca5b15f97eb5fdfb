"""Client-side ICE binding for aiortc peers on loopback (bots, benchmarks, tests).

aioice never gathers loopback candidates and binds every address it finds, so an aiortc peer
that must reach an SFU on 127.0.0.1 needs its host candidates bound where we say. This replaces
the gathering of each ICE transport of an `RTCPeerConnection` (private aiortc/aioice attributes:
`RTCPeerConnection.__iceTransports`, `RTCIceGatherer._connection`, aioice's
`get_component_candidates`, `_local_candidates`, `_local_candidates_start/_end`), for the exact
aiortc and aioice versions pinned in pyproject.toml. Only the wire protocol is shared with the
SFU: nothing here imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiortc import RTCPeerConnection


@dataclass(frozen=True, slots=True)
class ClientNetwork:
    """Where a client peer binds its host candidates (empty: aioice's own choice)."""

    bind: tuple[str, ...] = ("127.0.0.1",)


LOOPBACK = ClientNetwork()


def bind_peer_connection(pc: RTCPeerConnection, net: ClientNetwork | Sequence[str] = LOOPBACK
                         ) -> None:
    """Make every ICE gatherer of `pc` bind its host candidates to `net`'s addresses.

    Call after the transceivers exist and before the first local description is set.
    """
    addresses = list(net.bind if isinstance(net, ClientNetwork) else net)
    if not addresses:
        return
    transports = pc._RTCPeerConnection__iceTransports  # type: ignore[attr-defined]
    for ice_transport in transports:
        connection = ice_transport.iceGatherer._connection

        async def gather(connection: object = connection) -> None:
            conn = connection
            if conn._local_candidates_start:  # type: ignore[attr-defined]
                return
            conn._local_candidates_start = True  # type: ignore[attr-defined]
            for component in sorted(conn._components):  # type: ignore[attr-defined]
                found = await conn.get_component_candidates(  # type: ignore[attr-defined]
                    component, addresses=addresses)
                conn._local_candidates += found  # type: ignore[attr-defined]
            conn._local_candidates_end = True  # type: ignore[attr-defined]

        connection.gather_candidates = gather
