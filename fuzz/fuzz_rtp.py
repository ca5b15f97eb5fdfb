"""Coverage-guided fuzzing of RTP parsing and rewriting: sfu/rtp.py and the transport-cc reader
of sfu/twcc.py (atheris; see fuzz/README.md).

    python fuzz/fuzz_rtp.py [corpus dir ...] [-max_total_time=60 ...]

The input's first byte picks the rewrite (extension plan, abs-send-time); the rest is the
packet. Beyond "only ValueError with a fixed message": a packet that parses must rewrite to one
that parses with the same payload and padding, and RTX unwrapping must undo wrapping.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sfu import rtp
from sfu.twcc import transport_sequence_number

MESSAGES = {
    rtp.RTP_TOO_SHORT, rtp.RTP_WRONG_VERSION, rtp.RTP_CSRC_TRUNCATED,
    rtp.RTP_EXTENSION_TRUNCATED, rtp.RTP_PADDING_INVALID, rtp.RTX_TOO_SHORT,
}
CHROME = {rtp.AUDIO_LEVEL_URI: 1, rtp.ABS_SEND_TIME_URI: 2, rtp.TRANSPORT_CC_URI: 3,
          rtp.MID_URI: 4}
NO_MID = {uri: xid for uri, xid in CHROME.items() if uri != rtp.MID_URI}
PLANS = [
    None,
    rtp.ExtensionPlan.build(NO_MID, NO_MID),  # verbatim (without abs-send-time given)
    rtp.ExtensionPlan.build(CHROME, CHROME, mid="1"),  # in place, when the mid fits
    rtp.ExtensionPlan.build(CHROME, CHROME, drop=(rtp.TRANSPORT_CC_URI,), mid="0"),
    rtp.ExtensionPlan.build(CHROME, {rtp.MID_URI: 200, rtp.ABS_SEND_TIME_URI: 15}, mid="x" * 20),
    rtp.ExtensionPlan.build({rtp.MID_URI: 100, "urn:x": 5}, {rtp.MID_URI: 1, "urn:x": 250},
                            mid="video"),
    rtp.ExtensionPlan.build(CHROME, {}),
    rtp.ExtensionPlan.build({rtp.ABS_SEND_TIME_URI: 2}, {rtp.ABS_SEND_TIME_URI: 2}),
]


def _expect_value_error(error: ValueError) -> None:
    if str(error) not in MESSAGES:
        raise AssertionError(f"unexpected error: {error!r}") from error


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    choice, packet = data[0], data[1:]
    plan = PLANS[choice % len(PLANS)]
    abs_send_time = None if choice & 0x80 else 0x123456
    for xid in (1, 3, 14, 200):
        value = transport_sequence_number(packet, xid)
        assert value is None or 0 <= value <= 0xFFFF
    rtp.is_vp8_keyframe(packet)
    rtp.is_h264_keyframe(packet)
    try:
        header = rtp.RtpHeader.parse(packet)
    except ValueError as exc:
        _expect_value_error(exc)
        header = None
    try:
        out = rtp.rewrite(packet, ssrc=0x01020304, payload_type=choice & 0x7F,
                          sequence_number=0xFFFF, timestamp=0xFFFFFFFF, plan=plan,
                          abs_send_time=abs_send_time)
    except ValueError as exc:
        _expect_value_error(exc)
        out = None
    if header is not None:
        assert out is not None, "a packet that parses must rewrite"
        again = rtp.RtpHeader.parse(out)
        assert (again.marker, again.csrcs, again.padding) == (
            header.marker, header.csrcs, header.padding)
        assert out[again.header_length:] == packet[header.header_length:]
        assert (again.payload_type, again.sequence_number, again.timestamp, again.ssrc) == (
            choice & 0x7F, 0xFFFF, 0xFFFFFFFF, 0x01020304)
        wrapped = rtp.wrap_rtx(packet, rtx_ssrc=9, rtx_payload_type=97, rtx_sequence_number=1)
        restored = rtp.unwrap_rtx(wrapped, ssrc=header.ssrc, payload_type=header.payload_type)
        assert bytes(restored) == packet, "unwrap_rtx must undo wrap_rtx"
    try:
        rtp.unwrap_rtx(packet, ssrc=1, payload_type=96)
    except ValueError as exc:
        _expect_value_error(exc)


def main() -> None:
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
