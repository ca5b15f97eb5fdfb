"""A node whose rooms use H.264: the bots send a pre-encoded H.264 clip when told, find its
keyframes without decoding, and say so in one error code when not told."""

from __future__ import annotations

import json
from pathlib import Path

from tests.loadtest.conftest import SERVER_ENV, napalmsky
from tests.napalmsky.served import start_server, stop_server


def test_h264_rooms(tmp_path: Path) -> None:
    (tmp_path / "node").mkdir()
    proc, url, _ = start_server(tmp_path / "node", **{
        **SERVER_ENV, "NAPALMSKY_SFU_VIDEO_CODEC": "h264"})
    try:
        told = napalmsky("loadtest", "--users", "2", "--duration", "8", "--call-seconds", "4",
                         "--video-codec", "h264", "--quiet", "--out", "h264", url, cwd=tmp_path)
        untold = napalmsky("loadtest", "--users", "2", "--duration", "4", "--call-seconds", "2",
                           "--quiet", "--out", "vp8", url, cwd=tmp_path)
    finally:
        stop_server(proc)
    assert told.returncode == 0, told.stderr[-3000:]
    report = json.loads((tmp_path / "h264" / "report.json").read_text())
    assert report["errors"]["by_code"] == {}
    assert report["calls"]["calls_media_both_ways"] >= 1
    assert report["latency_ms"]["call_start_to_first_keyframe"]["count"] >= 2
    assert report["media"]["video"]["received_fps"]["p50_fps"] > 5

    assert untold.returncode == 0, untold.stderr[-3000:]
    assert "--video-codec h264" in untold.stderr and "Traceback" not in untold.stderr
    report = json.loads((tmp_path / "vp8" / "report.json").read_text())
    assert report["errors"]["by_code"]["video_codec_mismatch"] >= 2
