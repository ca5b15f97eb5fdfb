"""The atheris harnesses in fuzz/ run here on hypothesis-made inputs, without atheris, so that
they cannot rot (an API change, a property that no longer holds) between fuzzing campaigns."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.strategies import damaged, raw_packets, rtp_packets
from tests.fuzz.test_rtcp import any_rtcp
from tests.fuzz.test_sdp import offers

fuzz = settings.get_profile("napalmsky-fuzz")

FUZZ = Path(__file__).parents[2] / "fuzz"


def harness(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"napalmsky_fuzz_{name}", FUZZ / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_mode(inputs: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Inputs behind the first byte that the harnesses read as a mode or plan selector."""
    return st.builds(lambda mode, data: bytes([mode]) + data, st.integers(0, 255), inputs)


TOKENS = harness("fuzz_tokens")
INPUTS: dict[str, st.SearchStrategy[bytes]] = {
    "fuzz_rtp": with_mode(raw_packets | rtp_packets().map(lambda p: p.data)
                          | damaged(rtp_packets().map(lambda p: p.data))),
    "fuzz_rtcp": any_rtcp,
    "fuzz_sdp": offers.map(lambda text: text.encode("utf-8", "surrogatepass"))
    | st.binary(max_size=200),
    "fuzz_frames": with_mode(
        st.builds(lambda v: json.dumps(v).encode(), st.dictionaries(
            st.sampled_from(["type", "id", "data"]),
            st.none() | st.integers() | st.text(max_size=5) | st.dictionaries(
                st.text(max_size=3), st.integers(), max_size=2),
            max_size=3))
        | st.binary(max_size=100)
    ),
    "fuzz_tokens": with_mode(
        st.just(TOKENS.VALID.encode()) | damaged(st.just(TOKENS.VALID.encode()))
        | st.binary(max_size=60)
    ),
}


def test_every_harness_is_exercised() -> None:
    assert sorted(INPUTS) == sorted(p.stem for p in FUZZ.glob("fuzz_*.py"))


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_harness(name: str) -> None:
    target: Callable[[bytes], None] = (TOKENS if name == "fuzz_tokens" else harness(name)
                                       ).TestOneInput

    @fuzz
    @given(data=INPUTS[name])
    def run(data: bytes) -> None:
        target(data)

    run()
