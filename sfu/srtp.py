"""SRTP (RFC 3711) on the forwarding path: libsrtp called in place on reusable buffers.

pylibsrtp's `Session.protect`/`unprotect` allocate a length cell, copy the packet into the
session's buffer and copy the result out, every call. Here libsrtp (`srtp_protect`,
`srtp_unprotect`, libsrtp 2 signatures: context, buffer, in/out length) works on two buffers
per process: `RECEIVE` (a datagram is copied in, decrypted in place and copied out once, as
the immutable packet every consumer reads) and `SEND` (a consumer writes its rewritten packet
straight into it, it is encrypted in place and handed to the socket as a memoryview: no copy
at all). The event loop is single-threaded and the forwarding path never awaits, so one pair
of buffers serves every transport.

This relies on pylibsrtp's private `Session._srtp` (the `srtp_t *`) and its cffi binding
(`pylibsrtp._binding`); pylibsrtp is pinned exactly in pyproject.toml and
tests/sfu/test_srtp.py checks the reliance. SRTCP stays on pylibsrtp's public methods (a few
packets a second).
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import pylibsrtp
from pylibsrtp import Error, Session
from pylibsrtp._binding import ffi, lib  # type: ignore[import-not-found]

PYLIBSRTP_VERSION = "1.0.0"
MAX_PACKET = 65536  # bytes: any UDP payload
MAX_TRAILER = 16 + 128  # auth tag and MKI libsrtp may append (pylibsrtp's SRTP_MAX_TRAILER_LEN)
_OK = lib.srtp_err_status_ok
_ERRORS: list[str] = list(pylibsrtp.ERRORS)


class _Buffer:
    __slots__ = ("cdata", "length", "view")

    def __init__(self) -> None:
        self.cdata = ffi.new("unsigned char[]", MAX_PACKET + MAX_TRAILER)
        self.view = memoryview(ffi.buffer(self.cdata))
        self.length = ffi.new("int *")


RECEIVE = _Buffer()
SEND = _Buffer()
# Where a consumer writes the packet `protect_in_place` sends: MAX_PACKET bytes, so that the
# trailer libsrtp appends always fits the buffer behind it.
SEND_VIEW: memoryview = SEND.view[:MAX_PACKET]


def check_version() -> None:
    """Refuse to run on a pylibsrtp other than the one this module was written for."""
    found = version("pylibsrtp")
    if found != PYLIBSRTP_VERSION:
        raise RuntimeError(f"sfu.srtp relies on pylibsrtp {PYLIBSRTP_VERSION} private "
                           f"internals, found {found}")


def _error(rc: int) -> Error:
    return Error(_ERRORS[rc] if 0 <= rc < len(_ERRORS) else f"libsrtp error {rc}")


class SrtpSession:
    """One direction's SRTP context, as the DTLS handshake keyed it (a pylibsrtp Session)."""

    __slots__ = ("_ctx", "session")

    def __init__(self, session: Session) -> None:
        self.session = session  # keeps the context alive; SRTCP and stream removal use it
        self._ctx: Any = session._srtp[0]

    def unprotect(self, data: bytes) -> bytes:
        """The RTP packet inside SRTP datagram `data`; raises pylibsrtp.Error when it does not
        authenticate, is replayed or is of an SSRC the context refuses."""
        n = len(data)
        if n > MAX_PACKET:
            raise Error("packet is too long")
        buf = RECEIVE
        buf.view[:n] = data
        buf.length[0] = n
        rc = lib.srtp_unprotect(self._ctx, buf.cdata, buf.length)
        if rc != _OK:
            raise _error(rc)
        return bytes(buf.view[: buf.length[0]])

    def protect_in_place(self, length: int) -> memoryview:
        """Encrypt the `length`-byte RTP packet at the start of `SEND_VIEW`; returns the SRTP
        datagram (a view of the send buffer, valid until the next call). Raises
        pylibsrtp.Error (e.g. a sequence number libsrtp will not send twice)."""
        if not 0 < length <= MAX_PACKET:
            raise Error("packet is too long")
        buf = SEND
        buf.length[0] = length
        rc = lib.srtp_protect(self._ctx, buf.cdata, buf.length)
        if rc != _OK:
            raise _error(rc)
        return buf.view[: buf.length[0]]
