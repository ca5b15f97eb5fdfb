"""libsrtp called in place (sfu/srtp.py) interoperates with pylibsrtp's own Session API."""

from __future__ import annotations

import os
import struct

import pylibsrtp
import pytest
from pylibsrtp import Policy, Session

from sfu.srtp import MAX_PACKET, SEND_VIEW, SrtpSession, check_version


def sessions() -> tuple[Session, Session]:
    key = os.urandom(30)
    outbound = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND)
    inbound = Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND)
    return Session(policy=outbound), Session(policy=inbound)


def rtp(seq: int, payload: bytes = b"\x10" * 1000, ssrc: int = 0x1234) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, ssrc) + payload


def test_the_pinned_pylibsrtp_is_installed() -> None:
    check_version()
    assert isinstance(Session()._srtp[0], object)  # the private context the module relies on


def test_in_place_protect_is_read_by_pylibsrtp() -> None:
    tx, rx = sessions()
    ours = SrtpSession(tx)
    for seq in range(5):
        packet = rtp(seq)
        SEND_VIEW[: len(packet)] = packet
        protected = ours.protect_in_place(len(packet))
        assert len(protected) == len(packet) + 10  # AES_CM_128_HMAC_SHA1_80's tag
        assert bytes(protected[12:]) != packet[12:]
        assert rx.unprotect(bytes(protected)) == packet


def test_unprotect_reads_pylibsrtp_and_refuses_what_libsrtp_refuses() -> None:
    tx, rx = sessions()
    ours = SrtpSession(rx)
    protected = tx.protect(rtp(1))
    assert ours.unprotect(protected) == rtp(1)
    with pytest.raises(pylibsrtp.Error):
        ours.unprotect(protected)  # a replay
    tampered = bytearray(tx.protect(rtp(2)))
    tampered[20] ^= 1
    with pytest.raises(pylibsrtp.Error):
        ours.unprotect(bytes(tampered))
    assert ours.unprotect(tx.protect(rtp(3))) == rtp(3)  # the context survives refusals


def test_the_trailer_always_fits_behind_the_send_view() -> None:
    tx, _ = sessions()
    ours = SrtpSession(tx)
    assert len(SEND_VIEW) == MAX_PACKET
    with pytest.raises(pylibsrtp.Error):
        ours.protect_in_place(MAX_PACKET + 1)
