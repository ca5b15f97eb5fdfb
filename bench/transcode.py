"""Intro-video transcode speed against the ffmpeg command line with the same codec settings.

    python -m bench.transcode [--seconds 20] [--runs 3] [--source FILE]

Makes (or takes) a source like a phone's: 1920x1080, 30 fps H.264 + AAC with motion, then times
alternately, `--runs` times each, wall clock:

- ours: `python -m recorder.transcode_job SOURCE OUT POSTER`, the child process the worker role
  runs for each job (interpreter start and imports included, as the product pays them);
- ffmpeg: Debian's `ffmpeg` with the same settings: scale to 720p, at most 30 fps, libx264 High
  3.1 veryfast crf 23 capped at 1.35 Mbit/s (bufsize 2x, VBV started at 10 %), a keyframe every
  2 s, AAC-LC 128 kbit/s 48 kHz stereo, `+faststart`, then a poster JPEG at 1 s (a second ffmpeg
  run, as a command-line user would make it).

Prints the machine, each run, min/median/max, and speed relative to ffmpeg (its median time
over ours: 1.0 is as fast, the target is >= 0.95). ffmpeg is for this benchmark only
(`apt-get install ffmpeg`); the product never runs it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from bench.serve import load_average, machine


def make_source(path: Path, seconds: float) -> Path:
    """1080p30 H.264 (ultrafast, high quality) + AAC: a moving gradient with noise."""
    width, height, fps = 1920, 1080, 30
    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 255, width, dtype=np.float32)
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "18"}
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "stereo"
        for i in range(int(seconds * fps)):
            shift = (ramp + i * 8) % 256
            luma = np.broadcast_to(shift, (height, width)).astype(np.uint8)
            noise = rng.integers(0, 24, (height, width), dtype=np.uint8)
            rgb = np.stack([luma, luma + noise, 255 - luma], axis=-1)  # uint8 wraps
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        samples = int(seconds * 48000)
        t = np.arange(samples) / 48000
        tone = (np.sin(2 * np.pi * 330 * t) * 0.2).astype(np.float32)
        for start in range(0, samples - 1024 + 1, 1024):
            chunk = np.stack([tone[start:start + 1024]] * 2)
            sound = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            sound.sample_rate, sound.pts = 48000, start
            sound.time_base = Fraction(1, 48000)
            for packet in audio.encode(sound):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    return path


def ours(source: Path, work: Path) -> list[str]:
    return [sys.executable, "-m", "recorder.transcode_job", str(source),
            str(work / "ours.mp4"), str(work / "ours.jpg")]


def ffmpeg(source: Path, work: Path, binary: str) -> list[list[str]]:
    rate = 1_350_000
    video = [binary, "-nostdin", "-loglevel", "error", "-y", "-i", str(source),
             "-vf", "scale=-2:'min(720,ih)',fps=30", "-c:v", "libx264", "-profile:v", "high",
             "-level", "3.1", "-preset", "veryfast", "-crf", "23", "-maxrate", str(rate),
             "-bufsize", str(2 * rate), "-x264-params", "vbv-init=0.1", "-g", "60",
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2",
             "-movflags", "+faststart", str(work / "ffmpeg.mp4")]
    poster = [binary, "-nostdin", "-loglevel", "error", "-y", "-ss", "1", "-i", str(source),
              "-frames:v", "1", "-vf", "scale=-2:'min(720,ih)'", "-q:v", "3",
              str(work / "ffmpeg.jpg")]
    return [video, poster]


def timed(commands: list[list[str]]) -> float:
    start = time.perf_counter()
    for command in commands:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def spread(values: list[float]) -> str:
    return (f"min {min(values):.2f} s, median {statistics.median(values):.2f} s, "
            f"max {max(values):.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transcode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="source length (20)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each (3)")
    parser.add_argument("--source", type=Path, help="a source file instead of the made one")
    args = parser.parse_args(argv)
    binary = shutil.which("ffmpeg")
    if binary is None:
        print("ffmpeg is not installed (apt-get install ffmpeg): nothing to compare with",
              file=sys.stderr)
        return 2
    version = subprocess.run([binary, "-version"], capture_output=True, text=True,
                             check=True).stdout.splitlines()[0]
    info = machine()
    with tempfile.TemporaryDirectory(prefix="bench-transcode-") as tmp:
        work = Path(tmp)
        source = args.source or make_source(work / "source.mp4", args.seconds)
        with av.open(str(source)) as media:
            stream = media.streams.video[0]
            length = float(media.duration or 0) / av.time_base
            shape = f"{stream.width}x{stream.height} {stream.codec_context.name}"
        print(f"machine   {info['cpu']}, {info['cores']} cores; load average "
              f"{' '.join(str(x) for x in load_average())} before")
        print(f"versions  Python {sys.version.split()[0]}, PyAV {av.__version__} "
              f"(FFmpeg {'.'.join(str(x) for x in av.library_versions['libavcodec'])} "
              f"libavcodec); {version}")
        print(f"source    {shape}, {length:.1f} s")
        times: dict[str, list[float]] = {"ours": [], "ffmpeg": []}
        for run in range(args.runs):
            for name in ("ours", "ffmpeg"):
                commands = [ours(source, work)] if name == "ours" else ffmpeg(source, work,
                                                                              binary)
                seconds = timed(commands)
                times[name].append(seconds)
                print(f"run {run + 1}   {name:6s} {seconds:6.2f} s")
        print(f"ours      {spread(times['ours'])}")
        print(f"ffmpeg    {spread(times['ffmpeg'])}")
        ratio = statistics.median(times["ffmpeg"]) / statistics.median(times["ours"])
        print(f"speed relative to ffmpeg (median ffmpeg / median ours): {ratio:.2f}x "
              f"(target >= 0.95)")
        print(f"load average after: {' '.join(str(x) for x in load_average())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
