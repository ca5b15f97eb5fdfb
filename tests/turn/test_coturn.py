"""A real coturn configured by `napalmsky turn config` takes the service's credentials and
refuses expired, forged and wrong-realm ones (a raw TURN Allocate, RFC 8656 section 7.2)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from aioice import stun
from aioice.turn import UDP_TRANSPORT, create_turn_endpoint, make_integrity_key

from tests.turn.coturn import OLD_SECRET, REALM, SECRET, Coturn
from turn.credentials import mint


class TurnSession:
    """A raw TURN client over UDP with the long-term credential mechanism (RFC 8489 section
    9.2): the first request draws a 401 with REALM and NONCE, later ones are signed with
    MD5(username:realm:password)."""

    def __init__(self, port: int, username: str, password: str, *, realm: str | None = None
                 ) -> None:
        self.server = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5)
        self.username, self.password, self.realm = username, password, realm
        self.nonce = b""

    def close(self) -> None:
        self.sock.close()

    def _exchange(self, request: stun.Message) -> stun.Message:
        self.sock.sendto(bytes(request), self.server)
        answer = stun.parse_message(self.sock.recv(2048))
        assert answer.transaction_id == request.transaction_id
        return answer

    def _sign(self, message: stun.Message) -> None:
        assert self.realm is not None
        message.attributes["USERNAME"] = self.username
        message.attributes["REALM"] = self.realm
        message.attributes["NONCE"] = self.nonce
        message.add_message_integrity(make_integrity_key(self.username, self.realm,
                                                         self.password))

    def allocate(self) -> int:
        """0 on success, else the error code."""
        first = stun.Message(message_method=stun.Method.ALLOCATE,
                             message_class=stun.Class.REQUEST)
        first.attributes["REQUESTED-TRANSPORT"] = UDP_TRANSPORT
        challenge = self._exchange(first)
        assert challenge.attributes["ERROR-CODE"][0] == 401, challenge
        self.realm = self.realm or challenge.attributes["REALM"]
        self.nonce = challenge.attributes["NONCE"]
        second = stun.Message(message_method=stun.Method.ALLOCATE,
                              message_class=stun.Class.REQUEST)
        second.attributes["REQUESTED-TRANSPORT"] = UDP_TRANSPORT
        self._sign(second)
        return self._code(self._exchange(second))

    def permit(self, peer: str) -> int:
        """CreatePermission for `peer` (RFC 8656 section 9): 0, or 403 for a denied address."""
        request = stun.Message(message_method=stun.Method.CREATE_PERMISSION,
                               message_class=stun.Class.REQUEST)
        request.attributes["XOR-PEER-ADDRESS"] = (peer, 9)
        self._sign(request)
        return self._code(self._exchange(request))

    @staticmethod
    def _code(answer: stun.Message) -> int:
        if answer.message_class == stun.Class.RESPONSE:
            return 0
        return int(answer.attributes["ERROR-CODE"][0])


def allocate(port: int, username: str, password: str, *, realm: str | None = None) -> int:
    session = TurnSession(port, username, password, realm=realm)
    try:
        return session.allocate()
    finally:
        session.close()


def test_a_fresh_credential_allocates_and_so_does_one_signed_by_the_older_secret(
        coturn: Coturn) -> None:
    fresh = mint((SECRET,), "user-1", time.time(), 600)
    assert allocate(coturn.port, fresh.username, fresh.credential) == 0
    # rotation: the node signs with the first secret; coturn lists both
    older = mint((OLD_SECRET,), "user-2", time.time(), 600)
    assert allocate(coturn.port, older.username, older.credential) == 0


def test_expired_forged_and_wrong_realm_credentials_are_refused(coturn: Coturn) -> None:
    expired = mint((SECRET,), "user-1", time.time() - 7200, 3600)  # ended an hour ago
    assert allocate(coturn.port, expired.username, expired.credential) == 401
    forged = mint(("not-the-secret-0123456789",), "user-1", time.time(), 600)
    assert allocate(coturn.port, forged.username, forged.credential) == 401
    # the right password but another realm's key
    fresh = mint((SECRET,), "user-1", time.time(), 600)
    assert REALM != "other.example"
    assert allocate(coturn.port, fresh.username, fresh.credential, realm="other.example") != 0
    # a credential whose expiry was edited to last longer no longer matches its HMAC
    expiry, _, user = fresh.username.partition(":")
    stretched = f"{int(expiry) + 86400}:{user}"
    assert allocate(coturn.port, stretched, fresh.credential) == 401


async def test_aioice_allocates_over_udp_and_tcp(coturn: Coturn) -> None:
    # what aiortc's TURN client does, over both transports the ICE server list offers
    cred = mint((SECRET,), "user-1", time.time(), 600)
    for transport in ("udp", "tcp"):
        endpoint, _ = await asyncio.wait_for(create_turn_endpoint(
            asyncio.DatagramProtocol, server_addr=("127.0.0.1", coturn.port),
            username=cred.username, password=cred.credential, transport=transport), 15)
        try:
            relayed = endpoint.get_extra_info("sockname")
            assert relayed[0] == "127.0.0.1"
            assert coturn.relay_range[0] <= relayed[1] <= coturn.relay_range[1]
        finally:
            endpoint.close()


def test_the_relay_reaches_public_addresses_and_loopback_only_with_the_test_switch(
        coturn: Coturn) -> None:
    cred = mint((SECRET,), "user-1", time.time(), 600)
    session = TurnSession(coturn.port, cred.username, cred.credential)
    try:
        assert session.allocate() == 0
        for public in ("8.8.8.8", "1.1.1.1"):
            assert session.permit(public) == 0, public
        assert session.permit("127.0.0.1") == 0  # the fixture renders with --allow-loopback
        for private in ("10.1.2.3", "192.168.1.1", "172.16.5.5", "169.254.169.254",
                        "100.64.0.1"):
            assert session.permit(private) == 403, private
    finally:
        session.close()


def test_without_the_test_switch_the_relay_refuses_loopback(tmp_path: Path) -> None:
    production = Coturn(tmp_path / "production", allow_loopback=False)
    production.start()
    cred = mint((SECRET,), "user-1", time.time(), 600)
    session = TurnSession(production.port, cred.username, cred.credential)
    try:
        assert session.allocate() == 0
        assert session.permit("8.8.8.8") == 0
        assert session.permit("127.0.0.1") == 403
    finally:
        session.close()
        production.stop()
