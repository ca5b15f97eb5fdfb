"""Selfie processing: untrusted upload bytes in, a small metadata-free JPEG out.

`process_selfie` is pure and CPU-bound: callers on the event loop use `process_selfie_async`,
which runs it in a worker thread. The format is identified from the bytes alone (never from a
filename or a client's content type), the size is checked from the header before any pixel is
decoded, and the output is re-encoded from the pixels only, so no EXIF (GPS included), XMP, ICC
profile, comment or PNG text chunk reaches storage.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import math
import os
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO

from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import InvalidArgument, PayloadTooLarge, UnsupportedMediaType

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_SIDE = 1080
TARGET_BYTES = 500_000
# JPEG: below Pillow's own bomb threshold (about 89.5 million), so our check decides first, and
# above the 50 MP sensors of current phones (8160 x 6120 = 49.9 million); libjpeg decodes those
# at 1/4 scale (draft), so their pixels never sit in memory at full size.
MAX_PIXELS = 50_000_000
# PNG and WebP decode at full size (4 bytes a pixel): 12 MP, a 4000 x 3000 picture, is more than
# a selfie shown at 1080 pixels needs and keeps one decode under 50 MB.
MAX_PIXELS_FULL_DECODE = 12_000_000
# Selfies decode in a pool of their own this wide: concurrent uploads queue instead of
# multiplying memory, and few threads mean few malloc arenas holding memory afterwards.
DECODE_WORKERS = max(1, min(2, os.cpu_count() or 1))

CONTENT_TYPE = "image/jpeg"
WHITE = (255, 255, 255)

# Pillow plugins tried when opening: nothing else is even attempted.
_OPEN_FORMATS = ("JPEG", "PNG", "WEBP")
# What Image.format may say afterwards. MPO (multi-picture JPEG, from some phone cameras) comes
# from the JPEG plugin: it is a plain JPEG to every client, and only its first picture is used.
_ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP"})
_QUALITY_STEPS = (88, 80, 72, 64, 56, 50)
# What Pillow raises on malformed data (UnidentifiedImageError, being an OSError, is caught first).
# Pillow reports some damage, such as a corrupt EXIF block, with a UserWarning: that is raised
# wherever warnings are errors (as under pytest) and only logged elsewhere.
_DECODE_ERRORS = (OSError, EOFError, ValueError, SyntaxError, struct.error, UserWarning)

TOO_LARGE = "image is larger than 5 MB"
UNSUPPORTED = "image must be JPEG, PNG or WebP"
DIMENSIONS_TOO_LARGE = "image dimensions are too large"
CORRUPT = "image is corrupt or truncated"


@dataclass(frozen=True, slots=True)
class ProcessedImage:
    data: bytes
    content_type: str
    width: int
    height: int


def process_selfie(data: bytes) -> ProcessedImage:
    """Validate an uploaded selfie and re-encode it as a JPEG of at most TARGET_BYTES.

    Raises PayloadTooLarge, UnsupportedMediaType or InvalidArgument with a fixed message.
    Blocks for up to a second or so on large images: call it from a worker thread.
    """
    if len(data) > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(TOO_LARGE)
    try:
        # Opening reads the header only. Pillow checks the declared size against its own limit
        # here: above twice the limit it raises DecompressionBombError; above the limit it warns,
        # which is an exception wherever warnings are errors (as under pytest).
        image = Image.open(BytesIO(data), formats=_OPEN_FORMATS)
    except UnidentifiedImageError as exc:
        raise UnsupportedMediaType(UNSUPPORTED) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidArgument(DIMENSIONS_TOO_LARGE) from exc
    except _DECODE_ERRORS as exc:  # e.g. an oversized PNG text chunk, a corrupt JPEG EXIF
        raise InvalidArgument(CORRUPT) from exc
    with image:
        if image.format not in _ACCEPTED_FORMATS:
            raise UnsupportedMediaType(UNSUPPORTED)
        width, height = image.size
        limit = MAX_PIXELS if image.format in ("JPEG", "MPO") else MAX_PIXELS_FULL_DECODE
        if width <= 0 or height <= 0 or width * height > limit:
            raise InvalidArgument(DIMENSIONS_TOO_LARGE)
        # JPEG only (a no-op elsewhere): let libjpeg decode at 1/2, 1/4 or 1/8 scale while
        # both sides stay at least MAX_SIDE, which saves most of the memory and time.
        image.draft(None, (MAX_SIDE, MAX_SIDE))
        try:
            image.load()  # the first frame of an animated image
        except _DECODE_ERRORS as exc:
            raise InvalidArgument(CORRUPT) from exc
        # Shrink first so every later copy is small. A rotation by the orientation tag turns the
        # bounding square into itself, so shrinking before orienting gives the same result.
        working = _fit_within(_normalise_mode(image), MAX_SIDE)
        working = _apply_orientation(working)
        clean = _pixels_on_white(working)
    return _encode_within_budget(clean)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _decoder_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=DECODE_WORKERS,
                                       thread_name_prefix="selfie-decoder")
        return _pool


def _process_and_release(data: bytes) -> ProcessedImage:
    try:
        return process_selfie(data)
    finally:
        _release_memory()


def _release_memory() -> None:
    """Give freed heap memory back to the system (glibc keeps it otherwise): a burst of large
    decodes then leaves the process near where it started."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc: nothing to do
    return trim


async def process_selfie_async(data: bytes) -> ProcessedImage:
    """`process_selfie` in the bounded decoder pool, so the event loop keeps running and
    concurrent uploads queue (at most DECODE_WORKERS decodes at once)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_decoder_pool(), _process_and_release, data)


def _normalise_mode(image: Image.Image) -> Image.Image:
    """RGBA if the image has any transparency, else RGB or L (only 8 bits per channel)."""
    if image.mode.startswith("I;16"):
        # 16-bit greyscale PNG: plain conversion would clip everything above 255 to white.
        return image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    if image.has_transparency_data:
        return image if image.mode == "RGBA" else image.convert("RGBA")
    if image.mode in ("RGB", "L"):
        return image
    return image.convert("RGB")  # P, CMYK, YCbCr, 1...


def _fit_within(image: Image.Image, max_side: int) -> Image.Image:
    """Shrink so that the long side is at most max_side, keeping the aspect; never enlarge."""
    width, height = image.size
    if max(width, height) <= max_side:
        return image
    if width >= height:
        size = (max_side, max(1, round(height * max_side / width)))
    else:
        size = (max(1, round(width * max_side / height)), max_side)
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _apply_orientation(image: Image.Image) -> Image.Image:
    """Turn the pixels upright as the EXIF (or XMP) orientation says.

    The tag is only a display hint: if the EXIF block is too broken to read, the image is kept
    as it is rather than refused.
    """
    try:
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS:
        return image


def _pixels_on_white(image: Image.Image) -> Image.Image:
    """A new RGB image holding the pixels only, transparency flattened onto white.

    Being new, it has an empty `info`: nothing of the upload's metadata can reach the encoder.
    """
    canvas = Image.new("RGB", image.size, WHITE)
    if image.mode == "RGBA":
        canvas.paste(image, mask=image.getchannel("A"))
    else:
        canvas.paste(image if image.mode == "RGB" else image.convert("RGB"))
    return canvas


def _encode_within_budget(image: Image.Image) -> ProcessedImage:
    """The best quality that fits TARGET_BYTES; failing that, the lowest one at a smaller size."""
    for quality in _QUALITY_STEPS:
        encoded = _encode_jpeg(image, quality)
        if len(encoded) <= TARGET_BYTES:
            return ProcessedImage(encoded, CONTENT_TYPE, image.width, image.height)
    smaller = image
    while len(encoded) > TARGET_BYTES:
        # Bytes grow about with the pixel count; aim a little under and shrink at least 10%.
        ratio = min(0.9, 0.95 * math.sqrt(TARGET_BYTES / len(encoded)))
        size = (max(1, int(smaller.width * ratio)), max(1, int(smaller.height * ratio)))
        smaller = image.resize(size, Image.Resampling.LANCZOS)
        encoded = _encode_jpeg(smaller, _QUALITY_STEPS[-1])
    return ProcessedImage(encoded, CONTENT_TYPE, smaller.width, smaller.height)


def _encode_jpeg(image: Image.Image, quality: int) -> bytes:
    out = BytesIO()
    # No exif=, icc_profile= or comment=, and the image's own info is empty (_pixels_on_white).
    image.save(out, format="JPEG", quality=quality, optimize=True, progressive=True)
    return out.getvalue()
