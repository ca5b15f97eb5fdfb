"""`python -m recorder.transcode_job SOURCE TARGET POSTER`: one intro transcode in a process of
its own, reporting on stdout one JSON object a line.

    {"progress": 0.42}                      while it runs (fraction done)
    {"result": {TranscodeResult's fields}}  at the end, exit status 0
    {"error": {"code", "message"}}          on failure, exit status 1

The worker (recorder.intro_worker) runs it as a child process so that the transcode holds no
lock of the node's event loop (the GIL included), a crash of the media libraries cannot take the
node down, and cancelling is killing the child. The transcoder writes its outputs atomically,
so a killed child leaves no file under the final names.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from recorder.transcode import TranscodeError, TranscodeLimits, transcode_intro


def _say(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recorder.transcode_job")
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("poster", type=Path)
    defaults = TranscodeLimits()
    parser.add_argument("--max-height", type=int, default=defaults.max_height)
    parser.add_argument("--video-bitrate", type=int, default=defaults.video_bitrate)
    args = parser.parse_args(argv)
    limits = TranscodeLimits(max_height=args.max_height, video_bitrate=args.video_bitrate)
    try:
        result = transcode_intro(args.source, args.target, args.poster, limits=limits,
                                 progress=lambda done: _say({"progress": round(done, 4)}))
    except TranscodeError as exc:
        _say({"error": {"code": exc.code, "message": exc.message}})
        return 1
    _say({"result": dataclasses.asdict(result)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
