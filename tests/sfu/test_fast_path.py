"""RTP never passes through aiortc's or aioice's media objects, nor pylibsrtp's Session
methods, on the SFU's side: counters on those old seams stay at zero while media flows both
ways (the aiortc peers on the other side use them, and are told apart by identity)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pylibsrtp
import pytest
from aioice.ice import StunProtocol
from aiortc.rtcdtlstransport import RTCDtlsTransport

from loadtest.bot import BLUE, RED
from tests.sfu.conftest import SfuHarness, wait_for


def counting(calls: Counter[int], original: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[id(self)] += 1
        return original(self, *args, **kwargs)
    return wrapper


async def test_rtp_bypasses_the_old_seams(sfu: SfuHarness, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    calls: dict[str, Counter[int]] = {}
    for owner, name in ((RTCDtlsTransport, "_handle_rtp_data"),
                        (RTCDtlsTransport, "_handle_rtcp_data"),
                        (RTCDtlsTransport, "_send_rtp"),
                        (pylibsrtp.Session, "protect"),
                        (pylibsrtp.Session, "unprotect")):
        calls[name] = Counter()
        monkeypatch.setattr(owner, name, counting(calls[name], getattr(owner, name)))
    stun_first_bytes: dict[int, list[int]] = {}
    original_datagram = StunProtocol.datagram_received

    def datagram_received(self: StunProtocol, data: bytes, addr: Any) -> None:
        stun_first_bytes.setdefault(id(self), []).append(data[0])
        original_datagram(self, data, addr)

    monkeypatch.setattr(StunProtocol, "datagram_received", datagram_received)

    sfu.server.create_room("fast")
    alice, bob = sfu.bot("fast", "alice", RED), sfu.bot("fast", "bob", BLUE)
    await alice.join()
    await bob.join()
    await wait_for(lambda: alice.received.video_frames >= 30 and bob.received.video_frames >= 30
                   and alice.received.audio_frames >= 50 and bob.received.audio_frames >= 50)

    transports = list(sfu.server.rooms["fast"].transports.values())
    assert len(transports) == 2
    for transport in transports:
        assert transport.producers["video"].packets >= 30
        assert transport.consumers["video"].packets >= 30
        assert transport._rx is not None and transport._tx is not None
        ours = {id(transport.dtls.transport), id(transport._rx.session),
                id(transport._tx.session)}
        for name, counter in calls.items():
            assert not ours & set(counter), f"SFU media went through {name}"
        generation = transport.ice.current
        assert generation is not None
        for protocol in generation.connection._protocols:
            # aioice's socket protocol saw STUN only (RFC 7983: first byte 0..3).
            assert all(b < 4 for b in stun_first_bytes.get(id(protocol), []))
    # The peers themselves did use those seams: the counters are live.
    assert sum(calls["_send_rtp"].values()) > 100
    assert sum(calls["unprotect"].values()) > 100
