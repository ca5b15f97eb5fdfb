"""Selfie processing: every input image is generated here with Pillow or crafted byte by byte."""

from __future__ import annotations

import dataclasses
import random
import resource
import struct
import warnings
import zlib
from io import BytesIO
from typing import Any

import pytest
from PIL import ExifTags, Image, ImageCms, ImageDraw
from PIL.PngImagePlugin import PngImageFile, PngInfo
from PIL.WebPImagePlugin import WebPImageFile

from core.errors import ErrorCode, InvalidArgument, NapalmError
from recorder import selfie
from recorder.selfie import (
    MAX_PIXELS,
    MAX_SIDE,
    MAX_UPLOAD_BYTES,
    TARGET_BYTES,
    ProcessedImage,
    process_selfie,
    process_selfie_async,
)

RED = (255, 0, 0)
BLUE = (0, 0, 255)
GREEN = (0, 255, 0)
WHITE = (255, 255, 255)
SECRETS = (b"secret", b"SecretCam", b"Exif", b"ICC_PROFILE", b"http://ns.adobe.com")
METADATA_KEYS = ("exif", "icc_profile", "comment", "xmp", "XML:com.adobe.xmp", "transparency")


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def split_red_blue(size: tuple[int, int] = (300, 200), mode: str = "RGB") -> Image.Image:
    """Left half red, right half blue: shows which way the pixels were turned."""
    image = Image.new(mode, size, BLUE)
    if size[0] >= 2:
        ImageDraw.Draw(image).rectangle((0, 0, size[0] // 2 - 1, size[1] - 1), fill=RED)
    return image


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_with_gps(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "SecretCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 29.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (2.0, 17.0, 40.0)
    return exif


def decode(result: ProcessedImage) -> Image.Image:
    image = Image.open(BytesIO(result.data))
    image.load()
    return image


def assert_clean_jpeg(result: ProcessedImage) -> Image.Image:
    """The output is a progressive RGB JPEG without a trace of metadata, sized as it says."""
    assert result.content_type == "image/jpeg"
    assert len(result.data) <= TARGET_BYTES
    image = decode(result)
    assert image.format == "JPEG"
    assert image.mode == "RGB"
    assert image.size == (result.width, result.height)
    assert image.info.get("progressive") == 1
    assert len(image.getexif()) == 0
    for key in METADATA_KEYS:
        assert key not in image.info
    for secret in SECRETS:
        assert secret not in result.data
    return image


def assert_close(actual: object, expected: tuple[int, int, int], tolerance: int = 12) -> None:
    assert isinstance(actual, tuple)
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), actual


def assert_rejected(data: bytes, code: ErrorCode, message: str) -> None:
    with pytest.raises(NapalmError) as caught:
        process_selfie(data)
    assert caught.value.code == code
    assert caught.value.message == message
    assert str(caught.value) == message


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def crafted_png(width: int, height: int, extra_chunks: bytes = b"") -> bytes:
    """A tiny 8-bit RGB PNG whose IHDR declares any size, with a few real rows of pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 3 * 64)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra_chunks
            + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# --- metadata and orientation -----------------------------------------------------------------


def test_jpeg_with_exif_gps_icc_xmp_and_comment_is_rotated_and_stripped() -> None:
    data = encode(split_red_blue(), "JPEG", quality=95, exif=exif_with_gps(6),
                  icc_profile=srgb_profile(), comment=b"secret comment",
                  xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/">secret xmp</x:xmpmeta>')
    source = Image.open(BytesIO(data))  # the input really carries it all
    assert source.getexif()[ExifTags.Base.Orientation] == 6
    assert source.getexif().get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] == "N"
    assert {"icc_profile", "comment", "xmp"} <= source.info.keys()

    result = process_selfie(data)

    image = assert_clean_jpeg(result)
    assert (result.width, result.height) == (200, 300)  # turned a quarter clockwise
    assert_close(image.getpixel((100, 60)), RED)  # the left half is now on top
    assert_close(image.getpixel((100, 240)), BLUE)


@pytest.mark.parametrize(("orientation", "size", "red_at", "blue_at"), [
    (1, (300, 200), (60, 100), (240, 100)),
    (3, (300, 200), (240, 100), (60, 100)),  # half a turn
    (6, (200, 300), (100, 60), (100, 240)),  # a quarter clockwise
    (8, (200, 300), (100, 240), (100, 60)),  # a quarter anticlockwise
])
def test_each_orientation_is_applied(
    orientation: int, size: tuple[int, int], red_at: tuple[int, int], blue_at: tuple[int, int],
) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    image = assert_clean_jpeg(process_selfie(encode(split_red_blue(), "JPEG", exif=exif)))
    assert image.size == size
    assert_close(image.getpixel(red_at), RED)
    assert_close(image.getpixel(blue_at), BLUE)


def test_orientation_is_applied_to_an_image_that_is_also_shrunk() -> None:
    data = encode(split_red_blue((4000, 3000)), "JPEG", exif=exif_with_gps(6))
    image = assert_clean_jpeg(process_selfie(data))
    assert image.size == (810, 1080)
    assert_close(image.getpixel((405, 200)), RED)
    assert_close(image.getpixel((405, 880)), BLUE)


def broken_exif(fmt: str) -> bytes:
    """An IFD that claims one entry and ends there: Pillow calls the EXIF block corrupt."""
    tiff = b"MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12"
    return b"Exif\x00\x00" + tiff if fmt == "JPEG" else tiff


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_broken_exif_block_is_only_warned_about_in_production(fmt: str) -> None:
    data = encode(split_red_blue(), fmt, exif=broken_exif(fmt))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = assert_clean_jpeg(process_selfie(data))
    assert image.size == (300, 200)
    assert any("Corrupt EXIF" in str(w.message) for w in caught)


def test_a_broken_exif_block_in_a_jpeg_is_corrupt_where_warnings_are_errors() -> None:
    # Pillow reads a JPEG's EXIF while opening it, so its warning is an error from the start.
    assert_rejected(encode(split_red_blue(), "JPEG", exif=broken_exif("JPEG")),
                    ErrorCode.INVALID_ARGUMENT, "image is corrupt or truncated")


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_a_broken_exif_block_read_late_only_loses_the_orientation(fmt: str) -> None:
    # Here the EXIF block is read only to orient the image: the hint is dropped, not the image.
    image = assert_clean_jpeg(process_selfie(encode(split_red_blue(), fmt, exif=broken_exif(fmt))))
    assert image.size == (300, 200)
    assert_close(image.getpixel((60, 100)), RED, tolerance=24)


def test_png_rgba_with_text_chunks_is_stripped_and_flattened_onto_white() -> None:
    image = Image.new("RGBA", (90, 30), (0, 0, 0, 0))  # fully transparent black
    ImageDraw.Draw(image).rectangle((30, 0, 59, 29), fill=(255, 0, 0, 128))
    ImageDraw.Draw(image).rectangle((60, 0, 89, 29), fill=(0, 255, 0, 255))
    text = PngInfo()
    text.add_text("Comment", "secret tEXt")
    text.add_text("Location", "secret zTXt", zip=True)
    text.add_itxt("Description", "secret iTXt", lang="en", tkey="secret")
    data = encode(image, "PNG", pnginfo=text, exif=exif_with_gps(1), icc_profile=srgb_profile())
    source = Image.open(BytesIO(data))
    source.load()
    assert {"Comment", "Location", "Description", "exif", "icc_profile"} <= source.info.keys()

    result = process_selfie(data)

    flat = assert_clean_jpeg(result)
    assert flat.size == (90, 30)
    for key in ("Comment", "Location", "Description"):
        assert key not in flat.info
    assert_close(flat.getpixel((15, 15)), WHITE)
    assert_close(flat.getpixel((45, 15)), (255, 127, 127))  # half red over white
    assert_close(flat.getpixel((75, 15)), GREEN)


@pytest.mark.parametrize("mode", ["LA", "P", "RGB"])
def test_other_kinds_of_transparency_are_flattened_onto_white(mode: str) -> None:
    if mode == "LA":
        image = Image.new("LA", (40, 40), (0, 0))
        params: dict[str, Any] = {}
    elif mode == "P":
        image = Image.new("P", (40, 40), 0)
        image.putpalette([0, 0, 0, 255, 0, 0])
        params = {"transparency": 0}
    else:
        image = Image.new("RGB", (40, 40), (0, 0, 0))  # black is the tRNS colour
        params = {"transparency": (0, 0, 0)}
    source = Image.open(BytesIO(encode(image, "PNG", **params)))
    assert source.has_transparency_data

    flat = assert_clean_jpeg(process_selfie(encode(image, "PNG", **params)))
    assert_close(flat.getpixel((20, 20)), WHITE)


def test_webp_with_metadata_is_accepted_and_stripped() -> None:
    data = encode(split_red_blue(), "WEBP", quality=90, exif=exif_with_gps(3),
                  icc_profile=srgb_profile())
    assert Image.open(BytesIO(data)).format == "WEBP"
    image = assert_clean_jpeg(process_selfie(data))
    assert image.size == (300, 200)
    assert_close(image.getpixel((240, 100)), RED, tolerance=24)  # orientation 3 applied


def test_lossless_webp_with_alpha_is_flattened() -> None:
    image = Image.new("RGBA", (40, 40), (0, 0, 255, 0))
    data = encode(image, "WEBP", lossless=True)
    assert_close(assert_clean_jpeg(process_selfie(data)).getpixel((20, 20)), WHITE)


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_an_animated_image_gives_its_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (64, 48), colour) for colour in (RED, BLUE, GREEN)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
    source = Image.open(BytesIO(data))
    assert isinstance(source, PngImageFile | WebPImageFile)
    assert source.n_frames == 3
    image = assert_clean_jpeg(process_selfie(data))
    assert image.size == (64, 48)
    assert_close(image.getpixel((32, 24)), RED)


def test_a_multi_picture_jpeg_gives_its_first_picture() -> None:
    data = encode(Image.new("RGB", (64, 48), RED), "MPO", save_all=True,
                  append_images=[Image.new("RGB", (64, 48), BLUE)])
    assert Image.open(BytesIO(data)).format == "MPO"
    assert_close(assert_clean_jpeg(process_selfie(data)).getpixel((32, 24)), RED)


@pytest.mark.parametrize(("mode", "fmt", "colour", "expected"), [
    ("L", "JPEG", 128, (128, 128, 128)),
    ("CMYK", "JPEG", (0, 255, 255, 0), RED),
    ("I;16", "PNG", 40000, (156, 156, 156)),  # 16-bit grey is scaled, not clipped to white
    ("1", "PNG", 1, WHITE),
])
def test_other_modes_become_rgb(mode: str, fmt: str, colour: Any,
                                expected: tuple[int, int, int]) -> None:
    data = encode(Image.new(mode, (40, 40), colour), fmt)
    assert Image.open(BytesIO(data)).mode == mode
    assert_close(assert_clean_jpeg(process_selfie(data)).getpixel((20, 20)), expected)


# --- size -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "expected"), [
    ((4000, 3000), (1080, 810)),
    ((3000, 4000), (810, 1080)),
    ((5000, 100), (1080, 22)),
    ((1081, 1081), (1080, 1080)),
])
def test_a_large_image_is_shrunk_to_a_long_side_of_1080(
    size: tuple[int, int], expected: tuple[int, int],
) -> None:
    result = process_selfie(encode(split_red_blue(size), "JPEG"))
    assert (result.width, result.height) == expected
    assert max(expected) == MAX_SIDE
    image = assert_clean_jpeg(result)
    assert_close(image.getpixel((expected[0] // 4, expected[1] // 2)), RED)
    assert_close(image.getpixel((expected[0] * 3 // 4, expected[1] // 2)), BLUE)


def test_a_large_png_is_shrunk_too() -> None:
    result = process_selfie(encode(split_red_blue((3000, 2000), "RGBA"), "PNG"))
    assert (result.width, result.height) == (1080, 720)
    assert_clean_jpeg(result)


@pytest.mark.parametrize("size", [(640, 480), (1, 1), (1080, 1080), (1080, 7)])
def test_an_image_within_bounds_is_never_enlarged(size: tuple[int, int]) -> None:
    result = process_selfie(encode(split_red_blue(size), "PNG"))
    assert (result.width, result.height) == size
    assert_clean_jpeg(result)


def test_a_noisy_image_still_ends_within_the_byte_budget() -> None:
    noise = random.Random(7).randbytes(MAX_SIDE * MAX_SIDE * 3)
    data = encode(Image.frombytes("RGB", (MAX_SIDE, MAX_SIDE), noise), "PNG", compress_level=1)
    assert len(data) <= MAX_UPLOAD_BYTES

    result = process_selfie(data)

    assert len(result.data) <= TARGET_BYTES
    assert result.width == result.height <= MAX_SIDE
    assert_clean_jpeg(result)


def test_an_image_too_busy_for_the_lowest_quality_is_shrunk_until_it_fits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(selfie, "TARGET_BYTES", 60_000)
    noise = random.Random(3).randbytes(800 * 600 * 3)
    data = encode(Image.frombytes("RGB", (800, 600), noise), "PNG", compress_level=1)

    result = process_selfie(data)

    assert len(result.data) <= 60_000
    assert result.width < 800
    assert abs(result.width / result.height - 4 / 3) < 0.02  # the aspect is kept
    image = decode(result)
    assert image.size == (result.width, result.height)
    assert len(image.getexif()) == 0


def test_an_ordinary_photo_is_not_shrunk_to_fit_the_budget() -> None:
    image = Image.radial_gradient("L").resize((MAX_SIDE, MAX_SIDE)).convert("RGB")
    result = process_selfie(encode(image, "PNG"))
    assert (result.width, result.height) == (MAX_SIDE, MAX_SIDE)
    assert len(result.data) < TARGET_BYTES


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_truncated_image_is_invalid(fmt: str) -> None:
    noise = Image.frombytes("RGB", (200, 200), random.Random(1).randbytes(200 * 200 * 3))
    data = encode(noise, fmt)
    assert_rejected(data[: len(data) // 2], ErrorCode.INVALID_ARGUMENT,
                    "image is corrupt or truncated")


def test_a_png_whose_text_chunk_inflates_too_far_is_invalid() -> None:
    ztxt = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * 3_000_000))
    assert_rejected(crafted_png(8, 8, ztxt), ErrorCode.INVALID_ARGUMENT,
                    "image is corrupt or truncated")


def unsupported_bodies() -> list[Any]:
    small = split_red_blue((40, 40))
    return [
        pytest.param(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n" * 20, id="pdf"),
        pytest.param(b"this is not an image, whatever the file name says\n", id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg'/>", id="svg"),
        pytest.param(b"\xff\xd8\xff" + b"\x00" * 64, id="jpeg-magic-only"),
        pytest.param(crafted_png(0, 8), id="png-zero-width"),
        pytest.param(encode(small, "GIF"), id="gif"),
        pytest.param(encode(small, "BMP"), id="bmp"),
        pytest.param(encode(small, "TIFF"), id="tiff"),
        pytest.param(encode(small, "ICO"), id="ico"),
        pytest.param(encode(small, "PPM"), id="ppm"),
        pytest.param(encode(small, "TGA"), id="tga"),
    ]


@pytest.mark.parametrize("data", unsupported_bodies())
def test_anything_but_jpeg_png_or_webp_is_unsupported(data: bytes) -> None:
    assert_rejected(data, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "image must be JPEG, PNG or WebP")


def test_a_body_over_5_mb_is_too_large() -> None:
    data = encode(split_red_blue(), "JPEG")
    padded = data + b"\x00" * (MAX_UPLOAD_BYTES + 1 - len(data))
    assert_rejected(padded, ErrorCode.PAYLOAD_TOO_LARGE, "image is larger than 5 MB")


def test_a_body_of_exactly_5_mb_is_accepted() -> None:
    data = encode(split_red_blue(), "JPEG")  # a JPEG decoder stops at the end-of-image marker
    result = process_selfie(data + b"\x00" * (MAX_UPLOAD_BYTES - len(data)))
    assert (result.width, result.height) == (300, 200)


@pytest.mark.parametrize("size", [
    pytest.param((40_000, 40_000), id="past-pillow-error-limit"),
    pytest.param((10_000, 10_000), id="past-pillow-warning-limit"),
    pytest.param((8_000, 8_000), id="past-our-limit"),
    pytest.param((MAX_PIXELS // 5_000 + 1, 5_000), id="just-past-our-limit"),
    pytest.param((65_535, 1_000), id="long-strip"),
])
def test_a_decompression_bomb_is_refused_from_its_header(size: tuple[int, int]) -> None:
    data = crafted_png(*size)
    assert len(data) < 200
    before = peak_rss_bytes()
    assert_rejected(data, ErrorCode.INVALID_ARGUMENT, "image dimensions are too large")
    assert peak_rss_bytes() - before < 64 * 1024 * 1024  # no pixel buffer was allocated


def test_a_bomb_is_refused_where_pillow_only_warns() -> None:
    # In production warnings are not errors: Pillow's warning goes by, and our check refuses.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InvalidArgument, match=r"^image dimensions are too large$"):
            process_selfie(crafted_png(10_000, 10_000))
    assert [w.category for w in caught] == [Image.DecompressionBombWarning]


# --- the rest of the API ----------------------------------------------------------------------


async def test_the_async_wrapper_gives_the_same_result() -> None:
    data = encode(split_red_blue(), "JPEG", exif=exif_with_gps(6))
    assert await process_selfie_async(data) == process_selfie(data)


async def test_the_async_wrapper_raises_the_same_errors() -> None:
    with pytest.raises(InvalidArgument, match=r"^image dimensions are too large$"):
        await process_selfie_async(crafted_png(40_000, 40_000))


def test_a_processed_image_is_immutable() -> None:
    result = process_selfie(encode(split_red_blue(), "PNG"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.width = 1  # type: ignore[misc]


# --- decompression amplification (issue 10, item 5) -------------------------------------------


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def test_a_png_larger_than_a_selfie_needs_is_refused_from_its_header() -> None:
    for size in ((7_000, 7_000), (4_001, 3_000)):  # 49 MP, and just past 12 MP
        assert_rejected(crafted_png(*size), ErrorCode.INVALID_ARGUMENT,
                        "image dimensions are too large")
    assert selfie.MAX_PIXELS_FULL_DECODE <= 12_000_000


def test_a_large_phone_jpeg_is_still_accepted() -> None:
    photo = Image.new("RGB", (8_000, 6_000), (200, 120, 90))  # a 48 MP camera's picture
    data = encode(photo, "JPEG")
    del photo
    result = process_selfie(data)
    assert max(result.width, result.height) == selfie.MAX_SIDE


async def test_concurrent_uploads_queue_in_a_bounded_pool(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    import asyncio
    import threading

    running = 0
    peak = 0
    lock = threading.Lock()
    release = threading.Event()

    def slow(data: bytes) -> selfie.ProcessedImage:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(5)  # hold the decoder until the test lets every job through
        with lock:
            running -= 1
        return selfie.ProcessedImage(b"", "image/jpeg", 1, 1)

    monkeypatch.setattr(selfie, "process_selfie", slow)
    jobs = [asyncio.ensure_future(process_selfie_async(b"x")) for _ in range(8)]
    for _ in range(500):  # until the pool is full
        if running == selfie.DECODE_WORKERS:
            break
        await asyncio.sleep(0.01)
    assert running == selfie.DECODE_WORKERS  # the other six wait their turn
    release.set()
    await asyncio.gather(*jobs)
    assert peak == selfie.DECODE_WORKERS


async def test_memory_returns_near_its_baseline_after_a_burst() -> None:
    import asyncio

    big = encode(Image.new("RGB", (4_000, 3_000), (40, 160, 90)), "PNG")  # 12 MP, allowed
    await process_selfie_async(big)  # warm-up: the pool's threads and Pillow's plugins
    baseline = current_rss_bytes()
    results = await asyncio.gather(*(process_selfie_async(big) for _ in range(8)))
    assert all(r.width == selfie.MAX_SIDE for r in results)
    growth = current_rss_bytes() - baseline
    # Eight 12 MP decodes take about 48 MB each; without giving freed memory back (glibc
    # keeps it), about 86 MB stayed; with it, a few MB.
    assert growth < 32 * 1024 * 1024, f"{growth / 2**20:.0f} MB kept after the burst"
