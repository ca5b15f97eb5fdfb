"""UdpMux: every media connection of one process on one UDP port (NAPALMSKY_RTC_PORT).

One shared non-blocking socket per bind address, all on the same fixed port, read by
`sfu.udp.UdpReader`. Each ICE session (an `IceGeneration` of sfu/internals.py: the first one of
a connection, or an ICE restart's) registers a `MuxSession` with its local credentials and its
connection's datagram handler. Datagrams are demultiplexed like this:

- STUN requests (RFC 8445 section 7.3, RFC 8489 section 9.1.3): the USERNAME attribute is
  "<our local ufrag>:<remote ufrag>"; the session is found by our ufrag, and MESSAGE-INTEGRITY
  must verify with that session's local password. Then the source address is mapped to the
  session (the latest authenticated request wins: a client whose NAT rebinds, or an ICE
  restart from the same address, moves the address) and the request goes to the session's
  aioice `StunProtocol.datagram_received`. An unknown ufrag, a missing USERNAME or
  MESSAGE-INTEGRITY, or a wrong password: dropped and counted, no state created.
- STUN responses, errors and indications (no USERNAME): to the session the source address
  maps to, when its StunProtocol waits for that transaction; else to the session whose
  StunProtocol's `transactions` holds the transaction id (rare: a response to a check before
  the peer's own request, or to an old session's consent check during an ICE restart).
  Otherwise dropped and counted.
- Everything else (DTLS, SRTP, SRTCP; RFC 7983): the source address's handler, one dict
  lookup; an unknown address is a stray, dropped and counted.

A session's addresses are also learned when aioice nominates a pair on it (`learn`), which
covers a remote ICE-lite agent (it sends no checks). Closing a session removes its ufrag and
every address that maps to it; those addresses pass to another live session of the same
connection if it has one (the two sessions of an ICE restart share a handler), so a restart
from the same address never leaves the connection's media without a route.

aioice internals used here (pinned with sfu/internals.py, tested by
tests/sfu/test_internals.py): `StunProtocol.transactions` (transaction id -> Transaction),
`StunProtocol.datagram_received`, `connection_made`, `connection_lost` and its `transport`
attribute (asyncio's datagram transport, played by `MuxView`); `aioice.stun.parse_message` and
`Message.check_message_integrity`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import socket
import string
from collections.abc import Sequence

from aioice import stun
from aioice.ice import StunProtocol, get_host_addresses

from sfu.ports import bind_udp_port
from sfu.udp import Address, DatagramHandler, SocketTransport, UdpReader

log = logging.getLogger(__name__)

MAX_ADDRESSES = 8  # remote addresses one session keeps; the oldest goes beyond
UFRAG_LENGTH = 8  # characters of a local ufrag on the shared port (aioice's own has 4)
_ICE_CHARS = string.ascii_letters + string.digits  # ice-char (RFC 8839 section 5.4), less +/


class MuxSession:
    """One ICE session's registration: its local credentials, its connection's datagram
    handler, its StunProtocol on each shared socket and the remote addresses mapped to it."""

    def __init__(self, mux: UdpMux, ufrag: str, pwd: str, handler: DatagramHandler) -> None:
        self.mux = mux
        self.ufrag = ufrag
        self.key = pwd.encode("utf8")  # MESSAGE-INTEGRITY key (RFC 8489 section 9.2.2)
        self.handler = handler
        self.protocols: list[StunProtocol | None] = [None] * len(mux.sockets)
        self.addresses: dict[Address, None] = {}  # an ordered set, oldest first
        self.closed = False

    def attach(self, index: int, protocol: StunProtocol) -> MuxView:
        """Make `protocol` this session's StunProtocol on shared socket `index`; returns the
        transport it was given (`protocol.transport`)."""
        view = MuxView(self, index, protocol)
        self.protocols[index] = protocol
        protocol.connection_made(view)
        return view

    def learn(self, addr: Address) -> None:
        """Map `addr` to this session (an authenticated request or a nominated pair)."""
        self.mux.learn(addr, self)

    def close(self) -> None:
        """Unregister: the ufrag and every address mapped here are forgotten (idempotent)."""
        if not self.closed:
            self.closed = True
            self.mux.forget(self)


class MuxView(SocketTransport):
    """What one StunProtocol sees of a shared socket: asyncio's datagram transport (see
    `sfu.udp.SocketTransport`). Closing it unregisters its session, never closes the shared
    socket."""

    def __init__(self, session: MuxSession, index: int, protocol: StunProtocol) -> None:
        super().__init__(session.mux.sockets[index], protocol)
        self._session = session

    def _release(self) -> None:
        self._session.close()


class UdpMux:
    """The shared media sockets of one process: one per bind address, all on `port`.

    The sockets are bound here, at once, so that a port in use fails the start
    (`sfu.ports.bind_udp_port` raises Unavailable; OSError for an address that is not this
    machine's); they are read from the first `register` on, in the running event loop.
    `addresses` empty: every host address aioice would use (non-loopback IPv4 and IPv6).
    """

    def __init__(self, addresses: Sequence[str], port: int) -> None:
        self.port = port
        self.addresses = list(addresses) or get_host_addresses(use_ipv4=True, use_ipv6=True)
        self.sockets: list[socket.socket] = []
        try:
            for address in self.addresses:
                self.sockets.append(bind_udp_port(address, port))
        except BaseException:
            for sock in self.sockets:
                sock.close()
            raise
        self._sessions: dict[str, MuxSession] = {}  # local ufrag -> session
        # a connection's sessions (its handler's), oldest first: an ICE restart's beside the
        # current one
        self._families: dict[DatagramHandler, list[MuxSession]] = {}
        self._by_address: dict[Address, MuxSession] = {}
        self._handlers: dict[Address, DatagramHandler] = {}  # the media path's one lookup
        self._readers = [UdpReader(sock, functools.partial(self._on_stun, index),
                                   self._handlers, self._on_stray)
                         for index, sock in enumerate(self.sockets)]
        self.closed = False
        # what was dropped
        self.stray_datagrams = 0  # not STUN, from an address no session has
        self.unknown_ufrag = 0  # STUN requests for no session of ours (or without USERNAME)
        self.unauthenticated = 0  # STUN requests whose MESSAGE-INTEGRITY does not verify
        self.unmatched_stun = 0  # STUN responses/indications nobody waits for, malformed STUN

    # ---- sessions ----

    def new_ufrag(self) -> str:
        """A local ufrag no session has: every session of the process shares the port, so the
        ufrag is their key (aioice's 4 random characters would collide among thousands)."""
        while True:
            ufrag = "".join(secrets.choice(_ICE_CHARS) for _ in range(UFRAG_LENGTH))
            if ufrag not in self._sessions:
                return ufrag

    def register(self, ufrag: str, pwd: str, handler: DatagramHandler) -> MuxSession:
        """A new ICE session with local credentials `ufrag`/`pwd` whose non-STUN datagrams go to
        `handler`. Raises RuntimeError once closed, ValueError for a ufrag in use."""
        if self.closed:
            raise RuntimeError("the shared media socket is closed")
        if ufrag in self._sessions:
            raise ValueError("ICE ufrag already registered")
        loop = asyncio.get_running_loop()
        for reader in self._readers:
            reader.attach(loop)
        session = MuxSession(self, ufrag, pwd, handler)
        self._sessions[ufrag] = session
        self._families.setdefault(handler, []).append(session)
        return session

    def learn(self, addr: Address, session: MuxSession) -> None:
        """Map `addr` to `session` (the latest wins); an address beyond MAX_ADDRESSES of a
        session evicts its oldest."""
        if session.closed:
            return
        previous = self._by_address.get(addr)
        if previous is session:
            return
        if previous is not None:
            previous.addresses.pop(addr, None)
        self._by_address[addr] = session
        self._handlers[addr] = session.handler
        session.addresses[addr] = None
        if len(session.addresses) > MAX_ADDRESSES:
            oldest = next(iter(session.addresses))
            self._drop_address(oldest)

    def forget(self, session: MuxSession) -> None:
        """Remove `session`: its ufrag, and its addresses, which pass to the newest other
        session of the same connection if there is one (an ICE restart from the same address:
        a late request to the old ufrag may have moved it back), else are dropped."""
        if self._sessions.get(session.ufrag) is session:
            del self._sessions[session.ufrag]
        family = self._families.get(session.handler, [])
        if session in family:
            family.remove(session)
        if not family:
            self._families.pop(session.handler, None)
        heir = family[-1] if family else None
        for addr in list(session.addresses):
            self._drop_address(addr)
            if heir is not None:
                self.learn(addr, heir)

    def _drop_address(self, addr: Address) -> None:
        session = self._by_address.pop(addr, None)
        self._handlers.pop(addr, None)
        if session is not None:
            session.addresses.pop(addr, None)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    @property
    def address_count(self) -> int:
        return len(self._by_address)

    def session_for(self, addr: Address) -> MuxSession | None:
        return self._by_address.get(addr)

    # ---- receiving ----

    def _on_stray(self, data: bytes, arrival: float, addr: Address | None) -> None:
        self.stray_datagrams += 1

    def _on_stun(self, index: int, data: bytes, addr: Address) -> None:
        try:
            message = stun.parse_message(data)
        except ValueError:
            self.unmatched_stun += 1
            return
        protocol: StunProtocol | None
        if message.message_class == stun.Class.REQUEST:
            username = message.attributes.get("USERNAME")
            session = self._sessions.get(username.split(":", 1)[0]) \
                if isinstance(username, str) else None
            if session is None:
                self.unknown_ufrag += 1
                return
            if not message.check_message_integrity(session.key):
                self.unauthenticated += 1
                return
            self.learn(addr, session)
            protocol = session.protocols[index]
        else:
            known = self._by_address.get(addr)
            protocol = known.protocols[index] if known is not None else None
            transaction = message.transaction_id
            if message.message_class != stun.Class.INDICATION and (
                    protocol is None or transaction not in protocol.transactions):
                protocol = self._waiting_for(index, transaction)
        if protocol is None:
            self.unmatched_stun += 1
            return
        protocol.datagram_received(data, addr)

    def _waiting_for(self, index: int, transaction: bytes) -> StunProtocol | None:
        """The StunProtocol on socket `index` with `transaction` under way (a scan of every
        session: only for responses from an address no session has)."""
        for session in self._sessions.values():
            protocol = session.protocols[index]
            if protocol is not None and transaction in protocol.transactions:
                return protocol
        return None

    # ---- lifecycle ----

    def close(self) -> None:
        """Stop reading and close the shared sockets (idempotent). Sessions still registered
        are forgotten; their connections should have been closed first."""
        if self.closed:
            return
        self.closed = True
        for session in list(self._sessions.values()):
            session.close()
        for reader in self._readers:
            reader.detach()
        for sock in self.sockets:
            sock.close()


__all__ = ["MAX_ADDRESSES", "UFRAG_LENGTH", "MuxSession", "MuxView", "UdpMux"]
