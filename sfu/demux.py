"""Which incoming SSRCs a transport accepts: a small, bounded table (RFC 8843 section 9.2).

Every accepted section that the peer publishes on has two slots, its media stream and its RTX
stream (RFC 4588). A slot holds one SSRC at a time: the one the offer signalled (a=ssrc,
a=ssrc-group:FID), or else the first seen with the slot's payload type (and the section's
MID header extension, when the packet carries one). A publisher that restarts its stream
under a new SSRC (an encoder restart, a camera switch in some stacks) replaces the slot's SSRC,
at most once per `switch_interval` seconds; every other unknown SSRC is dropped before
decryption, so it costs one dict lookup and creates no state here or in libsrtp. SSRCs the offer
signalled for sections the SFU rejected, and the extra SSRCs of a simulcast group, are dropped
the same way.

RTCP is accepted from the peer's media SSRCs and from at most `max_rtcp_senders` other sender
SSRCs (a receive-only browser reports from an SSRC of its own).

Pure: no I/O, no clock of its own (callers pass `now`, seconds).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sfu.negotiation import Negotiation
from sfu.rtp import MID_URI, header_extensions


@dataclass(frozen=True, slots=True)
class Route:
    """Where packets of one SSRC go: the producer of `kind`, as media or as RTX."""

    kind: str
    rtx: bool


@dataclass(slots=True)
class _Slot:
    route: Route
    ssrc: int | None
    switched_at: float | None = None


class SourceTable:
    __slots__ = ("_by_mid", "_by_pt", "_dropped", "_known", "_mid_id", "_rtcp", "_slots",
                 "max_rtcp_senders", "rejected", "switch_interval", "switches")

    def __init__(self, *, switch_interval: float = 1.0, max_rtcp_senders: int = 4) -> None:
        self.switch_interval = switch_interval
        self.max_rtcp_senders = max_rtcp_senders
        self._slots: dict[Route, _Slot] = {}
        self._known: dict[int, Route] = {}  # ssrc -> route (the fast path)
        self._dropped: set[int] = set()  # signalled SSRCs we never accept
        self._by_pt: dict[int, Route] = {}
        self._by_mid: dict[str, str] = {}  # mid -> kind, receiving sections only
        self._mid_id: int | None = None
        self._rtcp: set[int] = set()
        self.rejected = 0  # packets dropped before decryption
        self.switches = 0

    def configure(self, negotiation: Negotiation) -> None:
        """(Re)build the table from a negotiation; learned SSRCs stay where still valid."""
        old_slots = self._slots
        self._slots, self._by_pt, self._by_mid, self._known = {}, {}, {}, {}
        self._dropped = set(negotiation.allowed_ssrc_sections)
        self._mid_id = None
        for section in negotiation.sections:
            if not section.receives or section.codec is None:
                continue
            media, rtx = Route(section.kind, False), Route(section.kind, True)
            self._by_pt[section.codec.payload_type] = media
            if section.rtx is not None:
                self._by_pt[section.rtx.payload_type] = rtx
            if section.mid is not None:
                self._by_mid[section.mid] = section.kind
            mid_id = section.extensions.get(MID_URI)
            if mid_id is not None:
                self._mid_id = mid_id
            primary = section.remote_ssrcs[0] if section.remote_ssrcs else None
            rtx_ssrc = next((r for r, p in section.remote_rtx.items() if p == primary), None)
            for route, signalled in ((media, primary), (rtx, rtx_ssrc)):
                previous = old_slots.get(route)
                slot = _Slot(route, signalled)
                if signalled is None and previous is not None:
                    slot.ssrc, slot.switched_at = previous.ssrc, previous.switched_at
                self._slots[route] = slot
                if slot.ssrc is not None:
                    self._known[slot.ssrc] = route
                    self._dropped.discard(slot.ssrc)

    def lookup(self, ssrc: int) -> Route | None:
        """The route of an SSRC this transport accepts (the hot path: one dict lookup)."""
        return self._known.get(ssrc)

    def classify(self, packet: bytes, ssrc: int, now: float) -> Route | None:
        """For an SSRC `lookup` does not know: the route it may take, or None (drop it).

        Changes nothing: call `learn` once the packet is authenticated.
        """
        if ssrc in self._dropped or len(packet) < 12:
            self.rejected += 1
            return None
        route = self._by_pt.get(packet[1] & 0x7F)
        if route is None:
            self.rejected += 1
            return None
        if self._mid_id is not None and packet[0] & 0x10:
            try:
                elements = header_extensions(packet)
            except ValueError:
                elements = []
            for xid, value in elements:
                if xid == self._mid_id:
                    kind = self._by_mid.get(value.decode("ascii", "replace"))
                    if kind != route.kind:
                        self.rejected += 1
                        return None
                    break
        slot = self._slots.get(route)
        if slot is None or (
            slot.ssrc is not None and slot.switched_at is not None
            and now - slot.switched_at < self.switch_interval
        ):
            self.rejected += 1
            return None
        return route

    def learn(self, ssrc: int, route: Route, now: float) -> int | None:
        """Give `route`'s slot the (authenticated) SSRC; returns the SSRC it replaced."""
        slot = self._slots.get(route)
        if slot is None:
            return None
        old = slot.ssrc
        if old is not None:
            self._known.pop(old, None)
            self.switches += 1
        slot.ssrc = ssrc
        slot.switched_at = now
        self._known[ssrc] = route
        self._dropped.discard(ssrc)
        return old

    def ssrc_of(self, kind: str, rtx: bool = False) -> int | None:
        slot = self._slots.get(Route(kind, rtx))
        return slot.ssrc if slot is not None else None

    def media_ssrcs(self) -> Iterable[int]:
        return self._known.keys()

    # ---- RTCP ----

    def rtcp_allowed(self, sender_ssrc: int) -> bool:
        """May RTCP from `sender_ssrc` be decrypted? (Changes nothing.)"""
        return (sender_ssrc in self._rtcp or sender_ssrc in self._known
                or len(self._rtcp) < self.max_rtcp_senders)

    def rtcp_seen(self, sender_ssrc: int) -> None:
        """An authenticated RTCP packet came from `sender_ssrc`."""
        if sender_ssrc not in self._known:
            self._rtcp.add(sender_ssrc)
