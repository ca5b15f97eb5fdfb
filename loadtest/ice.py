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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    sdp,
)


@dataclass(frozen=True, slots=True)
class ClientNetwork:
    """Where a client peer binds its host candidates (empty: aioice's own choice)."""

    bind: tuple[str, ...] = ("127.0.0.1",)


LOOPBACK = ClientNetwork()


def rtc_configuration(ice_servers: Sequence[Mapping[str, Any]] = (), *,
                      relay_only: bool = False) -> RTCConfiguration:
    """The peer connection's configuration: the ICE servers `call:start` handed out (W3C
    RTCIceServer dicts: `urls`, `username`, `credential`), never aiortc's default public STUN
    server, bundled, and with `relay_only` every candidate a TURN relay
    (iceTransportPolicy "relay"). aiortc uses the first STUN and the first TURN URL only."""
    servers = [RTCIceServer(urls=list(s["urls"]) if not isinstance(s["urls"], str)
                            else s["urls"], username=s.get("username"),
                            credential=s.get("credential"))
               for s in ice_servers]
    return RTCConfiguration(
        iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        iceTransportPolicy=RTCIceTransportPolicy.RELAY if relay_only
        else RTCIceTransportPolicy.ALL)


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


async def add_bundled_candidates(pc: RTCPeerConnection, answer: str) -> None:
    """Give a bundled ICE transport the remote candidates of the answer's BUNDLE-tagged section.

    An answerer lists candidates only in the m= section of the BUNDLE tag (RFC 8843 section
    7.3.1; the SFU, Chrome and Firefox all do), but aiortc 1.16 takes a bundled transport's
    remote candidates from the last m= section it visits (`RTCPeerConnection.
    setRemoteDescription`, `iceCandidates[iceTransport] = media`), so it gets none. A host
    client still connects (it learns the SFU as peer-reflexive from the SFU's own checks); a
    relay-only client never does: nothing leaves it, so its TURN server has no permission for
    the SFU's address and drops the SFU's checks. Call after setRemoteDescription.
    """
    description = sdp.SessionDescription.parse(answer)
    if not description.media:
        return
    tagged = description.media[0]
    transports = pc._RTCPeerConnection__iceTransports  # type: ignore[attr-defined]
    for transport in transports:
        if transport.getRemoteCandidates() or not tagged.ice_candidates:
            continue
        for candidate in tagged.ice_candidates:
            await transport.addRemoteCandidate(candidate)
        if tagged.ice_candidates_complete:
            await transport.addRemoteCandidate(None)
