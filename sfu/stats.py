"""SFU statistics: node totals for /metrics (no per-user or per-room labels) and a
per-participant snapshot for the operator's room-stats endpoint."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sfu.server import SfuServer
    from sfu.transport import Transport


@dataclass(slots=True)
class Totals:
    packets_received: int = 0
    bytes_received: int = 0
    packets_forwarded: int = 0
    packets_not_forwarded: int = 0
    bytes_forwarded: int = 0
    packets_lost_upstream: int = 0
    retransmitted: int = 0
    rtx_received: int = 0
    nacks_sent: int = 0
    keyframe_requests: int = 0
    malformed: int = 0
    malformed_rtcp: int = 0
    rejected_sources: int = 0
    srtp_errors: int = 0

    def add(self, other: Totals) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)
LATENCY_SAMPLE_EVERY = 8  # one RTP packet in this many is timed


class ForwardLatency:
    """Server-added forwarding latency of RTP packets, in seconds: from the kernel's receive
    timestamp of a publisher's datagram (SO_TIMESTAMPNS, so time waiting in the socket buffer
    while the loop is busy counts) to the moment the last forwarded copy was handed to the
    kernel. One packet in `LATENCY_SAMPLE_EVERY` is timed; exported as the Prometheus histogram
    `napalmsky_sfu_forward_latency_seconds` with `LATENCY_BUCKETS` as upper bounds."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative (upper bound, count) pairs as Prometheus histograms give them."""
        out, running = [], 0
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


def transport_totals(transport: Transport) -> Totals:
    totals = Totals()
    for producer in transport.producers.values():
        totals.packets_received += producer.packets
        totals.bytes_received += producer.octets
        totals.rtx_received += producer.rtx_received
        totals.nacks_sent += producer.nacks_sent
        totals.keyframe_requests += producer.keyframe_requests
        totals.malformed += producer.malformed
        if producer.stats is not None:
            totals.packets_lost_upstream += max(0, producer.stats.cumulative_lost)
    totals.malformed_rtcp += transport.malformed_rtcp
    totals.rejected_sources += transport.sources.rejected
    totals.srtp_errors += transport.srtp_errors
    for consumer in transport.consumers.values():
        totals.packets_forwarded += consumer.packets
        totals.packets_not_forwarded += consumer.dropped
        totals.bytes_forwarded += consumer.octets
        totals.retransmitted += consumer.retransmitted
    return totals


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def participant_stats(transport: Transport) -> dict[str, Any]:
    """What an operator sees of one participant: no addresses, no tokens."""
    incoming: dict[str, Any] = {}
    for kind, producer in transport.producers.items():
        stats = producer.stats
        incoming[kind] = {
            "packets": producer.packets,
            "bytes": producer.octets,
            "bitrateBps": round(producer.meter.bitrate),
            "packetsLost": max(0, stats.cumulative_lost) if stats is not None else 0,
            "jitterMs": _round(stats.jitter * 1000 / stats.clock_rate) if stats else None,
            "keyframeRequests": producer.keyframe_requests,
            "nacksSent": producer.nacks_sent,
            "rtxReceived": producer.rtx_received,
            "estimateBps": producer.estimate,
            "transportCc": producer.transport_cc,
            "sources": producer.sources,
        }
    outgoing: dict[str, Any] = {}
    for kind, consumer in transport.consumers.items():
        clock_rate = consumer.counters.clock_rate
        outgoing[kind] = {
            "packets": consumer.packets,
            "bytes": consumer.octets,
            "bitrateBps": round(consumer.meter.bitrate),
            "retransmitted": consumer.retransmitted,
            "nacksReceived": consumer.nacks_received,
            "keyframeRequests": consumer.keyframe_requests,
            "fractionLost": round(consumer.fraction_lost / 256, 4),
            "packetsLost": consumer.packets_lost,
            "jitterMs": _round(consumer.jitter * 1000 / clock_rate),
            "rttMs": _round(consumer.rtt * 1000 if consumer.rtt is not None else None),
            "rembBps": consumer.remb,
            "sending": consumer.section is not None,
        }
    return {
        "userId": transport.user_id,
        "connected": transport.connected,
        "iceRestarts": transport.ice.restarts,
        "malformedRtcp": transport.malformed_rtcp,
        "rejectedSourcePackets": transport.sources.rejected,
        "in": incoming,
        "out": outgoing,
    }


class SfuCollector(Collector):
    """Reads the SFU's counters when Prometheus scrapes: nothing is counted per packet here."""

    def __init__(self, server: SfuServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        totals = self.server.totals()
        yield GaugeMetricFamily("napalmsky_sfu_rooms", "Rooms on this SFU node.",
                                value=len(self.server.rooms))
        yield GaugeMetricFamily("napalmsky_sfu_participants",
                                "Participants with a media connection on this node.",
                                value=self.server.participant_count())
        for name, help_text, value in (
            ("packets_received", "RTP packets received from publishers.",
             totals.packets_received),
            ("bytes_received", "RTP bytes received from publishers.", totals.bytes_received),
            ("packets_forwarded", "RTP packets forwarded to subscribers.",
             totals.packets_forwarded),
            ("bytes_forwarded", "RTP bytes forwarded to subscribers.", totals.bytes_forwarded),
            ("packets_not_forwarded",
             "Copies of RTP packets a subscriber did not get: its connection not up yet, video "
             "held back until a keyframe, a packet too old or too late to map.",
             totals.packets_not_forwarded),
            ("packets_lost_upstream", "Packets publishers sent that never reached the SFU.",
             totals.packets_lost_upstream),
            ("retransmitted_packets", "Packets resent to subscribers answering their NACKs.",
             totals.retransmitted),
            ("rtx_packets_received", "Retransmissions received from publishers.",
             totals.rtx_received),
            ("nacks_sent", "NACKs the SFU sent to publishers.", totals.nacks_sent),
            ("keyframe_requests", "Keyframe requests passed up to publishers.",
             totals.keyframe_requests),
            ("malformed_packets", "Malformed RTP packets dropped.", totals.malformed),
            ("malformed_rtcp_packets", "Malformed or refused RTCP packets dropped.",
             totals.malformed_rtcp),
            ("rejected_source_packets",
             "RTP packets of SSRCs a transport does not accept, dropped before decryption.",
             totals.rejected_sources),
            ("srtp_errors", "Datagrams that failed SRTP authentication.", totals.srtp_errors),
        ):
            yield CounterMetricFamily(f"napalmsky_sfu_{name}", help_text, value=value)
        latency = self.server.latency
        yield HistogramMetricFamily(
            "napalmsky_sfu_forward_latency_seconds",
            "Server-added forwarding latency: kernel receive timestamp to the last copy sent "
            f"(one RTP packet in {LATENCY_SAMPLE_EVERY} timed).",
            buckets=latency.buckets(), sum_value=latency.total,
        )
        mux = self.server.mux
        if mux is not None:
            dropped = CounterMetricFamily(
                "napalmsky_sfu_shared_port_dropped",
                "Datagrams the shared media port (NAPALMSKY_RTC_PORT) dropped: media from an "
                "address no connection authenticated (stray), STUN requests for no ufrag of "
                "ours (unknown_ufrag) or failing MESSAGE-INTEGRITY (unauthenticated), STUN "
                "nobody waits for (unmatched_stun).",
                labels=["reason"])
            for reason, value in (("stray", mux.stray_datagrams),
                                  ("unknown_ufrag", mux.unknown_ufrag),
                                  ("unauthenticated", mux.unauthenticated),
                                  ("unmatched_stun", mux.unmatched_stun)):
                dropped.add_metric([reason], value)
            yield dropped
