"""RTP parsing and rewriting (sfu/rtp.py, sfu/twcc.py, sfu/forwarding.py), property-based.

- Whatever the bytes, parsers and rewriters raise ValueError with one of the fixed messages,
  and the detectors that must never raise do not.
- A well-formed packet parses to what it was built from, and a rewrite changes exactly the
  fields asked for: payload, padding, marker and CSRCs survive byte for byte, extensions are
  remapped as the plan says, whichever path (verbatim, in place, rebuilt) `rewrite` takes.
- RTX wrapping is undone by unwrapping.
- The sequence rewriter keeps the outgoing stream continuous modulo 2^16 and 2^32 across
  wraparound, loss, reordering and source switches, with a timestamp offset that matches
  what it applied.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sfu import rtp
from sfu.forwarding import SequenceRewriter
from sfu.rtp import (
    ABS_SEND_TIME_URI,
    MID_URI,
    ExtensionPlan,
    RtpHeader,
    abs_send_time,
    header_extensions,
    is_h264_keyframe,
    is_rtcp,
    is_vp8_keyframe,
    payload_bounds,
    rewrite,
    unwrap_rtx,
    wrap_rtx,
)
from sfu.twcc import transport_sequence_number
from tests.fuzz.strategies import URIS, Rtp, damaged, raw_packets, rtp_packets, u16, u32

fuzz = settings.get_profile("napalmsky-fuzz")

RTP_MESSAGES = {
    rtp.RTP_TOO_SHORT,
    rtp.RTP_WRONG_VERSION,
    rtp.RTP_CSRC_TRUNCATED,
    rtp.RTP_EXTENSION_TRUNCATED,
    rtp.RTP_PADDING_INVALID,
}
RTX_MESSAGES = RTP_MESSAGES | {rtp.RTX_TOO_SHORT}

any_packet = (
    raw_packets
    | rtp_packets().map(lambda p: p.data)
    | damaged(rtp_packets().map(lambda p: p.data))
)


@st.composite
def plans(draw: st.DrawFn) -> tuple[dict[str, int], dict[str, int], tuple[str, ...], str | None]:
    """(publisher ids, subscriber ids, drop list, mid) for ExtensionPlan.build."""
    def id_maps(limit: int, min_size: int = 0) -> st.SearchStrategy[dict[str, int]]:
        return st.lists(
            st.sampled_from(URIS), unique=True, min_size=min_size, max_size=len(URIS)
        ).flatmap(
            lambda uris: st.lists(
                st.integers(1, limit), min_size=len(uris), max_size=len(uris), unique=True
            ).map(lambda ids: dict(zip(uris, ids, strict=True)))
        )

    publisher = draw(id_maps(draw(st.sampled_from([14, 14, 14, 255])), min_size=2))
    if draw(st.integers(0, 3)) == 0:
        subscriber = dict(publisher)  # the same ids both sides: the fast paths
    else:  # mostly the same extensions, at ids of the subscriber's own
        uris = [u for u in URIS if (u in publisher) != (draw(st.integers(0, 4)) == 0)]
        limit = draw(st.sampled_from([14, 255]))
        ids = draw(st.lists(st.integers(1, limit), min_size=len(uris), max_size=len(uris),
                            unique=True))
        subscriber = dict(zip(uris, ids, strict=True))
    drop = (draw(st.sampled_from(URIS)),) if draw(st.integers(0, 3)) == 0 else ()
    mid = draw(st.none() | st.text(st.characters(codec="ascii"), min_size=1, max_size=20))
    return publisher, subscriber, drop, mid


def expected_extensions(
    packet: Rtp, publisher: dict[str, int], subscriber: dict[str, int], drop: tuple[str, ...],
    mid: str | None, abs_send_time: int | None,
) -> list[tuple[int, bytes]]:
    """What the subscriber should read: the plan's documented semantics, spelled out."""
    uri_of = {xid: uri for uri, xid in publisher.items()}
    out = []
    for xid, value in packet.extensions:
        uri = uri_of.get(xid)
        if uri is None or uri not in subscriber or uri in drop:
            continue
        if uri == MID_URI:
            if mid is None:
                continue
            value = mid.encode()
        elif uri == ABS_SEND_TIME_URI and abs_send_time is not None:
            value = abs_send_time.to_bytes(3, "big")
        out.append((subscriber[uri], value))
    return out


def check_value_error(error: ValueError, messages: set[str]) -> None:
    assert str(error) in messages, f"unexpected message {error!r}"


# --------------------------------------------------------------------------------------------
# Nothing but the documented errors


@fuzz
@given(data=any_packet)
@example(data=bytes.fromhex("b0000000000000000000000000000000"))  # X, zero-length block, P
@example(data=bytes.fromhex("a0000000000000000000000000"))  # P bit, padding count 0
@example(data=bytes.fromhex("9000000000000000000000001000ffff"))  # extension past the end
@example(data=bytes.fromhex("900000000000000000000000bede0001" "1f000000"))  # one-byte, cut
@example(data=bytes.fromhex("9000000000000000000000001000000101ff0000"))  # two-byte, cut
def test_parsers_raise_only_the_fixed_errors(data: bytes) -> None:
    for parse in (RtpHeader.parse, payload_bounds, header_extensions):
        try:
            parse(data)
        except ValueError as exc:
            check_value_error(exc, RTP_MESSAGES)
    for xid in (1, 3, 14, 15, 200):
        value = transport_sequence_number(data, xid)
        assert value is None or 0 <= value <= 0xFFFF
        sent = abs_send_time(data, xid)
        assert sent is None or 0 <= sent <= 0xFFFFFF
    assert is_rtcp(data) in (True, False)
    assert is_vp8_keyframe(data) in (True, False)
    assert is_h264_keyframe(data) in (True, False)


@fuzz
@given(data=any_packet, plan=plans(), abs_send_time=st.none() | st.integers(0, 0xFFFFFF))
# One-byte element id 0 with length bits set, cut by the block's end: the fast path forwards it.
@example(data=bytes.fromhex("936000020000000300000001" + "00" * 12 + "bede0001" + "00000001"),
         plan=({}, {}, (), None), abs_send_time=None)
def test_rewriters_raise_only_the_fixed_errors(
    data: bytes, plan: tuple[dict[str, int], dict[str, int], tuple[str, ...], str | None],
    abs_send_time: int | None,
) -> None:
    publisher, subscriber, drop, mid = plan
    built = ExtensionPlan.build(publisher, subscriber, drop=drop, mid=mid)
    try:
        RtpHeader.parse(data)
        well_formed = True
    except ValueError:
        well_formed = False
    for extension_plan in (None, built):
        try:
            out = rewrite(data, ssrc=1, payload_type=96, sequence_number=2, timestamp=3,
                          plan=extension_plan, abs_send_time=abs_send_time)
        except ValueError as exc:
            check_value_error(exc, RTP_MESSAGES)
            assert not well_formed
        else:
            # The fast paths check the framing, not the extension elements (documented): only
            # what came in well formed must go out well formed.
            if well_formed:
                RtpHeader.parse(out)
    for operation in (
        lambda: wrap_rtx(data, rtx_ssrc=5, rtx_payload_type=97, rtx_sequence_number=6),
        lambda: unwrap_rtx(data, ssrc=5, payload_type=96),
    ):
        try:
            operation()
        except ValueError as exc:
            check_value_error(exc, RTX_MESSAGES)


# --------------------------------------------------------------------------------------------
# Well-formed packets


@fuzz
@given(packet=rtp_packets())
def test_a_packet_parses_to_what_it_was_built_from(packet: Rtp) -> None:
    header = RtpHeader.parse(packet.data)
    assert (header.padding, header.marker, header.payload_type) == (
        packet.padding, packet.marker, packet.payload_type)
    assert (header.sequence_number, header.timestamp, header.ssrc, header.csrcs) == (
        packet.sequence_number, packet.timestamp, packet.ssrc, packet.csrcs)
    assert header.extension_profile == packet.profile
    assert header.extensions == packet.extensions
    assert list(header.extensions) == header_extensions(packet.data)
    assert header.header_length == packet.header_length
    assert header.padding_length == len(packet.padding_bytes)
    start, end = payload_bounds(packet.data)
    assert packet.data[start:end] == packet.payload
    assert (start, end - start) == (header.payload_offset, header.payload_length)


@fuzz
@given(packet=rtp_packets(ids=[1, 2, 3, 4, 14, 100]), ext_id=st.sampled_from([1, 2, 3, 14, 100]))
def test_transport_sequence_number_agrees_with_the_parser(packet: Rtp, ext_id: int) -> None:
    found = next((value for xid, value in packet.extensions if xid == ext_id), None)
    if packet.profile == rtp.ONE_BYTE_PROFILE and ext_id > 14:
        found = None
    expected = int.from_bytes(found[:2], "big") if found and len(found) in (2, 4) else None
    assert transport_sequence_number(packet.data, ext_id) == expected
    expected_sent = int.from_bytes(found, "big") if found and len(found) == 3 else None
    assert abs_send_time(packet.data, ext_id) == expected_sent


@fuzz
@given(
    packet=rtp_packets(),
    pt=st.integers(0, 127), seq=u16, ts=u32, ssrc=u32,
)
def test_rewrite_without_a_plan_changes_only_the_fixed_header(
    packet: Rtp, pt: int, seq: int, ts: int, ssrc: int
) -> None:
    out = rewrite(packet.data, ssrc=ssrc, payload_type=pt, sequence_number=seq, timestamp=ts,
                  plan=None)
    header = RtpHeader.parse(out)
    assert (header.payload_type, header.sequence_number, header.timestamp, header.ssrc) == (
        pt, seq, ts, ssrc)
    assert header.marker == packet.marker
    assert out[0] == packet.data[0] and out[12:] == packet.data[12:]


@st.composite
def packets_with_plans(
    draw: st.DrawFn,
) -> tuple[Rtp, tuple[dict[str, int], dict[str, int], tuple[str, ...], str | None]]:
    plan = draw(plans())
    ids = [*plan[0].values(), 13]  # the publisher's ids, and one nobody negotiated
    return draw(rtp_packets(ids=ids, extension=True)), plan


@fuzz
@given(
    case=packets_with_plans(),
    abs_send_time=st.none() | st.integers(0, 0xFFFFFF),
    fields=st.tuples(st.integers(0, 127), u16, u32, u32),
)
def test_rewrite_remaps_extensions_as_planned_and_keeps_the_rest(
    case: tuple[Rtp, tuple[dict[str, int], dict[str, int], tuple[str, ...], str | None]],
    abs_send_time: int | None,
    fields: tuple[int, int, int, int],
) -> None:
    packet, (publisher, subscriber, drop, mid) = case
    pt, seq, ts, ssrc = fields
    plan = ExtensionPlan.build(publisher, subscriber, drop=drop, mid=mid)
    out = rewrite(packet.data, ssrc=ssrc, payload_type=pt, sequence_number=seq, timestamp=ts,
                  plan=plan, abs_send_time=abs_send_time)
    header = RtpHeader.parse(out)
    assert (header.payload_type, header.sequence_number, header.timestamp, header.ssrc) == (
        pt, seq, ts, ssrc)
    assert (header.marker, header.csrcs, header.padding) == (
        packet.marker, packet.csrcs, packet.padding)
    assert out[header.header_length:] == packet.payload + packet.padding_bytes
    verbatim = plan.verbatim or (abs_send_time is None and plan.verbatim_without_abs_send_time)
    if verbatim or packet.profile is None:
        assert header.extension_profile == packet.profile
        assert header.extensions == packet.extensions
        return
    expected = expected_extensions(packet, publisher, subscriber, drop, mid, abs_send_time)
    assert list(header.extensions) == expected
    assert header.extension or not expected


@fuzz
@given(packet=rtp_packets(), rtx_pt=st.integers(0, 127), rtx_seq=u16, rtx_ssrc=u32)
def test_rtx_unwrap_undoes_wrap(packet: Rtp, rtx_pt: int, rtx_seq: int, rtx_ssrc: int) -> None:
    wrapped = wrap_rtx(packet.data, rtx_ssrc=rtx_ssrc, rtx_payload_type=rtx_pt,
                       rtx_sequence_number=rtx_seq)
    header = RtpHeader.parse(wrapped)
    assert (header.payload_type, header.sequence_number, header.ssrc, header.marker) == (
        rtx_pt, rtx_seq, rtx_ssrc, packet.marker)
    assert header.payload_length == len(packet.payload) + 2
    assert header.extensions == packet.extensions
    assert bytes(unwrap_rtx(wrapped, ssrc=packet.ssrc, payload_type=packet.payload_type)) == (
        packet.data)


# --------------------------------------------------------------------------------------------
# Sequence and timestamp continuity


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[str, int, int, float]]:
    """Events ("packet", seq, ts, now) and ("switch", clock rate, 0, now): sources that start
    anywhere (wraparound included), lose, reorder and duplicate packets."""
    events: list[tuple[str, int, int, float]] = []
    now = 0.0
    for _source in range(draw(st.integers(1, 4))):
        rate = draw(st.sampled_from([8000, 48000, 90000]))
        if events:
            now += draw(st.floats(0, 5))
            events.append(("switch", rate, 0, now))
        seq = draw(st.sampled_from([0, 1, 0xFFF0, 0xFFFF]) | u16)
        ts = draw(st.sampled_from([0, 0xFFFFFF00]) | u32)
        for _ in range(draw(st.integers(1, 40))):
            step = draw(st.sampled_from([1, 1, 1, 1, 2, 5, 0, -1, -3]))
            seq = (seq + step) & 0xFFFF
            tick = draw(st.integers(0, 3000))
            ts = (ts + max(0, step) * tick) & 0xFFFFFFFF
            now += max(0, step) * tick / rate
            events.append(("packet", seq, ts, now))
    return events


@fuzz
@given(events=streams())
@example(events=[("packet", 0xFFFF, 0xFFFFFFFF, 0.0), ("packet", 0, 2, 0.0),
                 ("switch", 90000, 0, 1.0), ("packet", 0xFFFE, 5, 1.0),
                 ("packet", 0xFFFF, 10, 1.0), ("packet", 0, 20, 1.0)])
def test_the_outgoing_stream_is_continuous_across_sources_and_wraparound(
    events: list[tuple[str, int, int, float]],
) -> None:
    rewriter = SequenceRewriter()
    source = 0
    shifts: dict[int, int] = {}  # source -> output seq - input seq (mod 2^16)
    offsets: dict[int, tuple[int, int]] = {}  # source -> (rebases, timestamp offset)
    highest: dict[int, int] = {}  # source -> highest input seq, unwrapped
    last_out: int | None = None
    for kind, a, b, now in events:
        if kind == "switch":
            rewriter.switch_source(a, now)
            source += 1
            continue
        seq, ts = a, b
        before = rewriter.last_sequence_number
        mapped = rewriter.map(seq, ts, now)
        if source not in highest:
            assert mapped is not None  # a source's first packet always goes out
            if before is not None:
                assert mapped[0] == (before + 1) & 0xFFFF  # no gap, no overlap at a switch
            highest[source] = seq
        if mapped is None:
            continue
        out_seq, out_ts = mapped
        assert 0 <= out_seq <= 0xFFFF and 0 <= out_ts <= 0xFFFFFFFF
        # The offset the rewriter reports is the one it applied (what sender reports use), and
        # it only changes at a switch or a counted rebase.
        offset = rewriter.timestamp_offset
        assert offset is not None and (ts + offset) & 0xFFFFFFFF == out_ts
        state = offsets.setdefault(source, (rewriter.rebases, offset))
        assert state[1] == offset or state[0] != rewriter.rebases
        offsets[source] = (rewriter.rebases, offset)
        # Within a source the outgoing numbers are the incoming ones shifted by one constant.
        assert shifts.setdefault(source, (out_seq - seq) & 0xFFFF) == (out_seq - seq) & 0xFFFF
        delta = (seq - highest[source] + 0x8000) % 0x10000 - 0x8000
        if delta > 0:
            highest[source] += delta
            if last_out is not None:
                step = (out_seq - last_out) & 0xFFFF
                assert 0 < step < 0x8000  # forward, modulo 2^16
            last_out = out_seq
        elif last_out is None:
            last_out = out_seq


@pytest.mark.parametrize("window", [1, 100, 1000])
def test_a_packet_too_old_for_the_window_is_dropped(window: int) -> None:
    rewriter = SequenceRewriter(window=window)
    assert rewriter.map(65000, 0, 0.0) == (65000, 0)
    assert rewriter.map((65000 + window + 5) & 0xFFFF, 1, 0.0) is not None
    assert rewriter.map(65001, 0, 0.0) is None  # window + 4 behind the newest
    assert rewriter.map(64999, 0, 0.0) is None  # before the source's first packet

