"""Coverage-guided fuzzing of RTCP parsing: compound packets (sfu/rtp.py) and transport-cc
feedback (sfu/twcc.py) (atheris; see fuzz/README.md).

    python fuzz/fuzz_rtcp.py [corpus dir ...] [-max_total_time=60 ...]

Beyond "only ValueError with a fixed message": `iter_rtcp` (what the transport runs) never
raises and agrees with `parse_rtcp`, and whatever parses re-encodes to bytes that parse the same.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sfu import rtp, twcc

RTCP_MESSAGES = {value for name, value in vars(rtp).items() if name.startswith("RTCP_")
                 and isinstance(value, str)}
TWCC_MESSAGES = {value for name, value in vars(twcc).items() if name.startswith("TWCC_")}


def _normal(packet: rtp.RtcpPacket) -> object:
    if isinstance(packet, rtp.RtcpNack):  # its PID/BLP pairs are repacked
        return packet.sender_ssrc, packet.media_ssrc, frozenset(packet.lost)
    return packet


def TestOneInput(data: bytes) -> None:
    try:
        packets = rtp.parse_rtcp(data)
    except ValueError as exc:
        if str(exc) not in RTCP_MESSAGES:
            raise AssertionError(f"unexpected error: {exc!r}") from exc
        packets = None
    walked = list(rtp.iter_rtcp(data))
    if packets is not None:
        assert walked == packets, "iter_rtcp and parse_rtcp disagree"
        again = rtp.parse_rtcp(b"".join(bytes(p) for p in packets))
        assert [_normal(p) for p in again] == [_normal(p) for p in packets]
    elif data:
        assert None in walked, "iter_rtcp accepted what parse_rtcp refused"
    try:
        feedback = twcc.TransportCcFeedback.parse(data)
    except ValueError as exc:
        if str(exc) not in TWCC_MESSAGES:
            raise AssertionError(f"unexpected error: {exc!r}") from exc
        return
    assert twcc.TransportCcFeedback.parse(bytes(feedback)) == feedback
    feedback.arrival_times()


def main() -> None:
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
