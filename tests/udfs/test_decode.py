"""Tests for udfs.decode: every accepted mode comes out RGB, every bad input gets its reason."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from udfs.decode import decode_image, sniff_format, to_rgb

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _save(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 8) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _bilevel_png(width: int, height: int, with_pixels: bool = True) -> bytes:
    """A genuine all-black 1-bit PNG, built row by row so it never exists decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    chunks = [_png_chunk(b"IHDR", ihdr)]
    if with_pixels:
        comp = zlib.compressobj(9)
        block = bytes(1 + (width + 7) // 8) * 500  # filter byte + packed row, 500 rows
        parts = [comp.compress(block) for _ in range(height // 500)]
        parts.append(comp.flush())
        chunks.append(_png_chunk(b"IDAT", b"".join(parts)))
    chunks.append(_png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _assert_rgb(data: bytes, size: tuple[int, int], fmt: str) -> Image.Image:
    res = decode_image(data)
    assert res.error is None, res.error
    assert res.ok
    assert res.image is not None
    assert res.image.mode == "RGB"
    assert res.image.size == size
    assert (res.width, res.height) == size
    assert res.format == fmt
    return res.image


# --- accepted formats and modes ---------------------------------------------------------------


def test_jpeg_rgb() -> None:
    _assert_rgb(_save(_noise(64, 48), "JPEG"), (64, 48), "JPEG")


def test_png_16bit_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257 * 64, 257 * 128, 257 * 200, 65535]], dtype=np.uint16)
    src = Image.fromarray(values)
    assert src.mode == "I;16"
    img = _assert_rgb(_save(src, "PNG"), (5, 1), "PNG")
    assert [img.getpixel((x, 0))[0] for x in range(5)] == [0, 64, 128, 200, 255]
    assert img.getpixel((2, 0)) == (128, 128, 128)


def test_mode_i_and_f_are_scaled() -> None:
    as_i = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    assert as_i.mode == "I"
    rgb = to_rgb(as_i)
    assert (rgb.getpixel((0, 0)), rgb.getpixel((1, 0))) == ((0, 0, 0), WHITE)
    as_f = Image.fromarray(np.array([[-1.0, 0.0, 1.0]], dtype=np.float32))
    assert as_f.mode == "F"
    rgb = to_rgb(as_f)
    assert [rgb.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_palette_with_transparency_composited_on_white() -> None:
    src = Image.new("P", (4, 4), 0)
    src.putpalette([*RED, *BLUE] + [0, 0, 0] * 254)
    src.putpixel((3, 3), 1)
    img = _assert_rgb(_save(src, "PNG", transparency=0), (4, 4), "PNG")
    assert img.getpixel((0, 0)) == WHITE  # transparent red becomes white
    assert img.getpixel((3, 3)) == BLUE


def test_rgba_composited_on_white() -> None:
    src = Image.new("RGBA", (4, 2), (0, 0, 0, 0))
    src.putpixel((1, 0), (0, 0, 0, 255))
    src.putpixel((2, 0), (0, 0, 0, 128))
    img = _assert_rgb(_save(src, "PNG"), (4, 2), "PNG")
    assert img.getpixel((0, 0)) == WHITE
    assert img.getpixel((1, 0)) == (0, 0, 0)
    assert _close(img.getpixel((2, 0)), (127, 127, 127), tol=1)


def test_la_composited_on_white() -> None:
    src = Image.new("LA", (3, 3), (0, 0))
    src.putpixel((1, 1), (50, 255))
    img = _assert_rgb(_save(src, "PNG"), (3, 3), "PNG")
    assert img.getpixel((0, 0)) == WHITE
    assert img.getpixel((1, 1)) == (50, 50, 50)


def test_webp() -> None:
    img = _assert_rgb(
        _save(Image.new("RGB", (40, 30), GREEN), "WEBP", quality=90), (40, 30), "WEBP"
    )
    assert _close(img.getpixel((20, 15)), GREEN, tol=12)


def test_animated_gif_first_frame() -> None:
    frames = [Image.new("RGB", (20, 10), c) for c in (RED, GREEN, BLUE)]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    img = _assert_rgb(data, (20, 10), "GIF")
    assert img.getpixel((5, 5)) == RED


def test_grayscale() -> None:
    img = _assert_rgb(_save(Image.new("L", (16, 8), 90), "JPEG"), (16, 8), "JPEG")
    r, g, b = img.getpixel((4, 4))
    assert r == g == b and abs(r - 90) <= 2


def test_cmyk_jpeg() -> None:
    src = Image.new("CMYK", (32, 16), (0, 0, 0, 0))  # no ink: white
    src.paste((0, 255, 255, 0), (16, 0, 32, 16))  # magenta + yellow: red
    img = _assert_rgb(_save(src, "JPEG", quality=95), (32, 16), "JPEG")
    assert _close(img.getpixel((4, 8)), WHITE)
    assert _close(img.getpixel((28, 8)), RED, tol=20)


def test_exif_orientation_applied() -> None:
    src = Image.new("RGB", (60, 40), BLUE)
    src.paste(RED, (0, 0, 30, 40))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    img = _assert_rgb(_save(src, "JPEG", exif=exif.tobytes()), (40, 60), "JPEG")
    assert _close(img.getpixel((20, 5)), RED, tol=20)  # left edge became the top
    assert _close(img.getpixel((20, 55)), BLUE, tol=20)


def test_rgb_with_bmp_and_tiff() -> None:
    _assert_rgb(_save(_noise(9, 7), "BMP"), (9, 7), "BMP")
    _assert_rgb(_save(_noise(9, 7), "TIFF"), (9, 7), "TIFF")


# --- rejected inputs --------------------------------------------------------------------------


@pytest.fixture
def no_pixel_loading(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail (and record) any attempt to decompress pixels."""
    calls: list[str] = []

    def spy(self: ImageFile.ImageFile) -> None:
        calls.append(type(self).__name__)
        raise AssertionError("pixels were loaded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


def test_zero_bytes_and_null() -> None:
    for empty in (b"", None, bytearray(), memoryview(b"")):
        res = decode_image(empty)
        assert (res.image, res.error) == (None, "empty")


def test_bytes_like_input() -> None:
    data = _save(_noise(8, 6), "PNG")
    assert decode_image(bytearray(data)).ok
    assert decode_image(memoryview(data)).ok


def test_truncated_jpeg() -> None:
    data = _save(_noise(200, 150), "JPEG")
    for cut in (len(data) // 2, len(data) - 200):
        res = decode_image(data[:cut])
        assert res.image is None
        assert res.error == "truncated"
        assert res.format == "JPEG"


def test_truncated_png() -> None:
    data = _save(_noise(200, 150), "PNG")
    assert decode_image(data[: len(data) // 2]).error == "truncated"


def test_too_many_pixels_uses_header_size(no_pixel_loading: list[str]) -> None:
    res = decode_image(_save(_noise(100, 80), "PNG"), max_pixels=5_000)
    assert res.error == "too_many_pixels"
    assert (res.width, res.height) == (100, 80)  # declared size is kept for diagnostics
    assert no_pixel_loading == []


def test_genuine_bomb_rejected_without_loading(no_pixel_loading: list[str]) -> None:
    data = _bilevel_png(8000, 8000)  # 64 MP in ~8 KB, below Pillow's own limit
    assert len(data) < 50_000
    res = decode_image(data)
    assert res.error == "decompression_bomb"
    assert (res.width, res.height, res.format) == (8000, 8000, "PNG")
    assert no_pixel_loading == []


def test_huge_bomb_rejected_without_loading(no_pixel_loading: list[str]) -> None:
    data = _bilevel_png(20000, 20000)  # 400 MP in ~50 KB
    assert decode_image(data).error == "decompression_bomb"
    assert decode_image(data, max_pixels=10**12).error == "decompression_bomb"  # Pillow's cap
    assert no_pixel_loading == []


def test_forged_header_bomb(no_pixel_loading: list[str]) -> None:
    for side in (9000, 50000):  # under and over Pillow's own limit
        res = decode_image(_bilevel_png(side, side, with_pixels=False))
        assert res.error == "decompression_bomb"
    assert no_pixel_loading == []


@pytest.mark.parametrize(
    "body",
    [
        b"<!DOCTYPE html><html><body>404</body></html>",
        b"\xef\xbb\xbf\n  <html lang='en'><head><title>x</title></head></html>",
        b"<HTML><BODY>Access denied</BODY></HTML>",
        b"<head><meta http-equiv='refresh' content='0'></head>",
    ],
)
def test_html_served_as_image(body: bytes) -> None:
    res = decode_image(body)
    assert (res.image, res.error, res.format) == (None, "html_not_image", "HTML")


@pytest.mark.parametrize(
    "body",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
        b'<?xml version="1.0"?>\n<!-- long comment -->',
    ],
)
def test_svg_rejected(body: bytes) -> None:
    assert decode_image(body).error == "svg_not_supported"


def test_random_bytes() -> None:
    rng = np.random.default_rng(1)
    for n in (1, 7, 4096):
        res = decode_image(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        assert res.error == "unrecognized_format"


def test_corrupt_body_behind_valid_magic_is_decode_error() -> None:
    assert decode_image(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4).error == "decode_error"
    assert decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).error == "decode_error"


def test_corrupt_pixel_data_never_raises() -> None:
    data = bytearray(_save(_noise(64, 64), "PNG"))
    for i in range(200, len(data) - 100, 97):
        data[i] ^= 0xFF
    res = decode_image(bytes(data))
    assert res.image is None
    assert res.error in {"decode_error", "truncated"}


# --- sniffing ---------------------------------------------------------------------------------


def test_sniff_format() -> None:
    assert sniff_format(_save(_noise(4, 4), "JPEG")) == "JPEG"
    assert sniff_format(_save(_noise(4, 4), "PNG")) == "PNG"
    assert sniff_format(_save(_noise(4, 4), "GIF")) == "GIF"
    assert sniff_format(_save(_noise(4, 4), "WEBP")) == "WEBP"
    assert sniff_format(b"<!doctype html>") == "HTML"
    assert sniff_format(b"  <svg>") == "SVG"
    assert sniff_format(b"hello") is None
    assert sniff_format(b"") is None


def test_decodes_in_a_fresh_interpreter():
    """Pillow registers its format plugins lazily; a new Spark worker starts with none."""
    import io
    import subprocess
    import sys

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    code = (
        "import sys\nfrom udfs.decode import decode_image\n"
        "print(decode_image(sys.stdin.buffer.read()).error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], input=buf.getvalue(),
                         capture_output=True, check=True)
    assert out.stdout.decode().strip() == "None"


# --- reduced decoding (libjpeg DCT scaling) ---------------------------------------------------


def test_reduce_to_decodes_a_jpeg_smaller_and_reports_its_own_size() -> None:
    asked: list[tuple[int, int]] = []

    def need(width: int, height: int) -> tuple[int, int]:
        asked.append((width, height))
        return (256, 192)

    res = decode_image(_save(_noise(640, 480), "JPEG"), reduce_to=need)
    assert res.ok and res.image is not None and res.image.mode == "RGB"
    assert (res.width, res.height) == (640, 480)
    assert res.image.size == (320, 240)  # the largest reduction that still covers 256x192
    assert asked == [(640, 480)]
    assert decode_image(_save(_noise(640, 480), "JPEG"), reduce_to=lambda w, h: (80, 60)
                        ).image.size == (80, 60)  # 1/8


def test_reduce_to_sees_the_upright_size_of_a_rotated_jpeg() -> None:
    src = Image.new("RGB", (120, 80), BLUE)
    src.paste(RED, (0, 0, 60, 80))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed 80x120, rotated 90 degrees clockwise
    asked: list[tuple[int, int]] = []

    def need(width: int, height: int) -> tuple[int, int]:
        asked.append((width, height))
        return (20, 30)

    res = decode_image(_save(src, "JPEG", exif=exif.tobytes()), reduce_to=need)
    assert asked == [(80, 120)]
    assert (res.width, res.height) == (80, 120)
    assert res.image is not None and res.image.size == (20, 30)  # 1/4, upright
    assert _close(res.image.getpixel((10, 2)), RED, tol=30)  # left edge became the top
    assert _close(res.image.getpixel((10, 27)), BLUE, tol=30)


def test_reduce_to_leaves_other_formats_and_small_shrinks_alone() -> None:
    half = lambda w, h: (w // 2, h // 2)  # noqa: E731
    png = decode_image(_save(_noise(64, 48), "PNG"), reduce_to=half)
    assert png.image is not None and png.image.size == (64, 48)
    jpeg = _save(_noise(640, 480), "JPEG")
    for need in (lambda w, h: (400, 300), lambda w, h: None):  # less than 2x, or nothing
        res = decode_image(jpeg, reduce_to=need)
        assert res.image is not None and res.image.size == (640, 480)


def test_truncated_jpeg_is_truncated_when_reduced_too() -> None:
    data = _save(_noise(400, 300), "JPEG")
    res = decode_image(data[: len(data) // 2], reduce_to=lambda w, h: (50, 40))
    assert (res.image, res.error) == (None, "truncated")
