"""Coverage-guided fuzzing of SDP handling: sfu/sdp.py and the answerer in sfu/negotiation.py
(atheris; see fuzz/README.md). Seed it with the captured browser offers:

    python fuzz/fuzz_sdp.py /tmp/corpus-sdp tests/sfu/data -max_total_time=60

Invalid offers must raise ValueError with one of the fixed SDP_*/OFFER_* messages (the
transport turns those into InvalidArgument); an offer that negotiates must get an answer that
parses back with one m= section per offered section, in order, with the same kinds and mids.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sfu import negotiation, sdp

SDP_MESSAGES = {value for name, value in vars(sdp).items() if name.startswith("SDP_")}
OFFER_MESSAGES = {
    value for name, value in vars(negotiation).items() if name.startswith("OFFER_")
}
LOCAL = negotiation.LocalParameters(
    ice_ufrag="sfuU", ice_pwd="sfupasswordsfupassword",  # noqa: S106 (not a secret)
    fingerprint=":".join(["AB"] * 32),
    candidates=["1 1 udp 2130706431 127.0.0.1 40000 typ host"],
    ssrcs={"audio": (11, 12), "video": (21, 22)}, cname="sfu", stream_id="napalmsky-x",
    session_id=7,
)


def TestOneInput(data: bytes) -> None:
    # surrogateescape: invalid UTF-8 becomes lone surrogates, as JSON "\udc80" escapes would.
    text = data.decode("utf-8", "surrogateescape")
    try:
        offer = sdp.parse(text)
        plan = negotiation.negotiate(offer, video_codec="vp8", local=LOCAL)
    except ValueError as exc:
        if type(exc) is not ValueError or str(exc) not in SDP_MESSAGES | OFFER_MESSAGES:
            raise AssertionError(f"unexpected error: {exc!r}") from exc
        return
    answer = sdp.parse(plan.answer)
    assert len(answer.media) == len(offer.media) == len(plan.sections)
    for section, offered, answered in zip(plan.sections, offer.media, answer.media,
                                          strict=True):
        assert (answered.kind, answered.mid) == (offered.kind, offered.mid)
        assert answered.rejected == (not section.accepted)
    accepted = [s.kind for s in plan.sections if s.accepted]
    assert len(accepted) == len(set(accepted)) >= 1


def main() -> None:
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
