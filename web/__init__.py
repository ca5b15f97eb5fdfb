"""The browser client: static files served by the node (no build step)."""

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
