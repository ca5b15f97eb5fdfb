"""A headless Chromium user forced onto TURN (`?relay=1`) calls a normal one through a real
coturn: the relayed page's peer connection uses only the relay candidate the credentials from
`call:start` open, and both pages decode the partner's video."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import SERVER_ENV, Pages
from tests.e2e.test_browser_call import invite_and_accept, sign_up, wait_media
from tests.napalmsky.served import start_server, stop_server
from tests.turn.coturn import Coturn, running_coturn

# The selected ICE pair of the page's peer connection: the transport's selectedCandidatePairId
# (or, failing that, the nominated succeeded pair), with both of its candidates.
SELECTED_PAIR = """async () => {
  const pc = window.napalmsky && window.napalmsky.pc;
  if (!pc) return null;
  const reports = new Map();
  (await pc.getStats()).forEach((s) => reports.set(s.id, s));
  let pair = null;
  for (const s of reports.values()) {
    if (s.type === 'transport' && s.selectedCandidatePairId) {
      pair = reports.get(s.selectedCandidatePairId) || null;
    }
  }
  if (!pair) {
    pair = [...reports.values()].find((s) => s.type === 'candidate-pair' && s.nominated &&
                                              s.state === 'succeeded') || null;
  }
  if (!pair) return {state: pc.connectionState, pair: null};
  const local = reports.get(pair.localCandidateId) || {};
  const remote = reports.get(pair.remoteCandidateId) || {};
  return {
    state: pc.connectionState, pair: pair.id, pairState: pair.state,
    local: {type: local.candidateType, protocol: local.protocol,
            relayProtocol: local.relayProtocol, address: local.address, port: local.port,
            url: local.url},
    remote: {type: remote.candidateType, protocol: remote.protocol, address: remote.address,
             port: remote.port},
    candidates: [...reports.values()].filter((s) => s.type === 'local-candidate')
      .map((s) => s.candidateType + '/' + s.protocol),
  };
}"""


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    """A real coturn on 127.0.0.1 (free ports), configured by `napalmsky turn config`."""
    with running_coturn(tmp_path / "coturn") as server:
        yield server


async def selected_pair(page: Any, timeout: float = 15) -> dict[str, Any]:
    """Until the page's peer connection has a selected pair in the succeeded state."""
    deadline = time.monotonic() + timeout
    while True:
        pair: dict[str, Any] | None = await page.evaluate(SELECTED_PAIR)
        if pair and pair.get("pair") and pair.get("pairState") == "succeeded" \
                and pair["local"].get("type"):
            return pair
        assert time.monotonic() < deadline, f"no selected candidate pair: {pair}"
        await asyncio.sleep(0.25)


async def test_a_relay_only_browser_calls_a_normal_one_through_coturn(
        tmp_path: Path, coturn: Coturn, pages: Pages) -> None:
    env = {**SERVER_ENV, "NAPALMSKY_TURN_SECRETS": coturn.env["NAPALMSKY_TURN_SECRETS"],
           "NAPALMSKY_ICE_SERVERS": f"{coturn.url('udp')},{coturn.url('tcp')}"}
    (tmp_path / "node").mkdir()
    proc, url, log = start_server(tmp_path / "node", None, **env)
    try:
        relayed, direct = await pages.new("relayed"), await pages.new("direct")
        relayed_id = await sign_up(relayed, f"{url}/?relay=1", "Ada", "female")
        direct_id = await sign_up(direct, url, "Bo", "male")
        assert "relay=1" in relayed.url and "relay" not in direct.url
        await invite_and_accept(relayed, direct, direct_id, 60)
        await asyncio.gather(wait_media(relayed, timeout=30), wait_media(direct, timeout=30))
        await pages.shoot("call")

        # the relayed page's ICE servers are the TURN ones from `call:start`, and its
        # connection runs over a relay candidate coturn allocated
        servers = await relayed.evaluate(
            "() => window.napalmsky.pc.getConfiguration().iceServers")
        config = await relayed.evaluate(
            "() => window.napalmsky.pc.getConfiguration().iceTransportPolicy")
        assert config == "relay", config
        turn = [s for s in servers if s.get("username")]
        assert len(turn) == 1 and turn[0]["username"].endswith(f":{relayed_id}"), servers
        assert set(turn[0]["urls"]) == {coturn.url("udp"), coturn.url("tcp")}, servers
        through_relay = await selected_pair(relayed)
        assert through_relay["local"]["type"] == "relay", through_relay
        # the relayed address is one coturn handed out: its relay IP, in its port range
        low, high = coturn.relay_range
        assert through_relay["local"]["address"] == "127.0.0.1", through_relay
        assert low <= through_relay["local"]["port"] <= high, (coturn.relay_range, through_relay)
        assert all(c.startswith("relay/") for c in through_relay["candidates"]), through_relay
        # the other page reaches the SFU directly
        plain = await selected_pair(direct)
        assert plain["local"]["type"] != "relay", plain
        assert await direct.evaluate(
            "() => window.napalmsky.pc.getConfiguration().iceTransportPolicy") == "all"

        await direct.click("#end-call")
        for page in (relayed, direct):
            await page.locator("#call-ended").wait_for(state="visible", timeout=10_000)
    finally:
        stop_server(proc)
    assert "Traceback" not in log.read_text()
