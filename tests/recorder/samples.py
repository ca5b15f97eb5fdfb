"""Small media files made with PyAV for the intro-video tests."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_video(path: Path, *, container: str = "webm", codec: str = "libvpx",
               width: int = 320, height: int = 240, fps: int = 30, seconds: float = 1.0,
               audio: str | None = "libopus", video: bool = True, faststart: bool = True
               ) -> Path:
    """A short clip of moving noise (and a tone), encoded with `codec` (and `audio`); MP4 and
    QuickTime with the index first unless `faststart` is False."""
    options = {"movflags": "+faststart"} if container in ("mp4", "mov") and faststart else {}
    rng = np.random.default_rng(1)
    with av.open(str(path), "w", format=container, options=options) as out:
        vstream = None
        if video:
            vstream = out.add_stream(codec, rate=fps)
            vstream.width, vstream.height = width, height
            vstream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
            if codec == "libx264":
                vstream.options = {"preset": "ultrafast"}
        astream = None
        if audio is not None:
            astream = out.add_stream(audio, rate=48000)
            astream.layout = "mono"
        frames = int(seconds * fps)
        for i in range(frames if vstream is not None else 0):
            pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in vstream.encode(frame):  # type: ignore[union-attr]
                out.mux(packet)
        if vstream is not None:
            for packet in vstream.encode():
                out.mux(packet)
        if astream is not None:
            samples = int(seconds * 48000)
            tone = (np.sin(np.arange(samples) * 2 * np.pi * 440 / 48000) * 8000).astype(np.int16)
            step = 960
            for start in range(0, samples - step + 1, step):
                chunk = av.AudioFrame.from_ndarray(tone[None, start:start + step], format="s16",
                                                   layout="mono")
                chunk.sample_rate = 48000
                chunk.pts = start
                chunk.time_base = Fraction(1, 48000)
                for packet in astream.encode(chunk):
                    out.mux(packet)
            for packet in astream.encode():
                out.mux(packet)
    return path
