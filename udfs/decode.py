"""One safe image decoder shared by every stage that reads pixels.

Web-scraped "images" are often HTML error pages, SVGs, truncated transfers or
decompression bombs. Every stage must agree on what counts as a readable image,
so they all go through :func:`decode_image`, which never raises and reports a
short machine-readable reason code instead.

Reason codes: ``empty``, ``html_not_image``, ``svg_not_supported``,
``unrecognized_format``, ``too_many_pixels``, ``decompression_bomb``,
``truncated``, ``decode_error``.

Truncation is only detectable while ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays
False (Pillow's default); nothing in this project may enable it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats we accept. Restricting Image.open keeps exotic plugins (EPS calls
# Ghostscript, for instance) off untrusted bytes. MPO is what many phones write
# for JPEG. AVIF is used only where this Pillow build has the plugin.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")

# A file whose declared pixel count exceeds the limit *and* this many pixels per
# compressed byte is called a bomb rather than merely too large: real photos are
# a few pixels per byte; crafted bombs are thousands.
BOMB_PIXELS_PER_BYTE = 1000
# Images above this many pixels are refused before decoding (decompression bombs);
# every stage that decodes uses this one default.
DEFAULT_MAX_PIXELS = 40_000_000

_EXIF_ORIENTATION = 0x0112
_TRANSPOSING = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height
# Formats whose decoder can skip pixels while decoding (libjpeg's DCT scaling).
_DRAFT_FORMATS = frozenset({"JPEG", "MPO"})
_SNIFF_BYTES = 1024
_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<meta", b"<title", b"<script")

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


@dataclass(frozen=True)
class DecodeResult:
    """Outcome of :func:`decode_image`.

    ``image`` is an RGB image on success and ``None`` on failure. ``width`` and
    ``height`` are the final (orientation-corrected) size on success, the size
    declared by the header when a pixel limit rejected it, else ``None``. They are
    the image's own size even when ``image`` was decoded reduced (``reduce_to``).
    """

    image: Image.Image | None
    width: int | None
    height: int | None
    format: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def _fail(error: str, fmt: str | None = None, size: tuple[int, int] | None = None) -> DecodeResult:
    width, height = size if size else (None, None)
    return DecodeResult(None, width, height, fmt, error)


def sniff_format(data: bytes) -> str | None:
    """Guess the container from magic bytes: an image format, ``HTML``, ``SVG`` or None.

    Cheap enough to run before Pillow, and it lets us give markup its own
    reason codes instead of a generic "unrecognized".
    """
    head = data[:_SNIFF_BYTES]
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:12] in (b"ftypavif", b"ftypavis"):
        return "AVIF"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n\f").lower()
    if not text.startswith(b"<"):
        return None
    if b"<svg" in text or text.startswith(b"<!doctype svg"):
        return "SVG"
    if any(marker in text for marker in _HTML_MARKERS):
        return "HTML"
    # Other XML is almost always an SVG whose root element is further down;
    # any other markup is some web page.
    return "SVG" if text.startswith(b"<?xml") else "HTML"


def _to_8bit(img: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer and float grayscale to 8-bit instead of clipping."""
    arr = np.asarray(img)
    if img.mode == "F":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
            scaled = np.zeros(arr.shape, dtype=np.uint8)
        else:
            scaled = np.rint((np.nan_to_num(arr, nan=lo) - lo) * (255.0 / (hi - lo)))
    else:
        # I;16* and PNG-derived "I" hold 0..65535: 65535 / 257 == 255 exactly.
        scaled = np.rint(np.clip(arr.astype(np.float64), 0, 65535) / 257.0)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparent areas are composited on white.

    White matches img2dataset's alpha matting, so resized outputs agree with it.
    """
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        return _to_8bit(img).convert("RGB")
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or img.has_transparency_data:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # malformed EXIF must not cost us a readable image
        return 1
    return value if isinstance(value, int) else 1


def _apply_orientation(img: Image.Image, orientation: int) -> tuple[Image.Image, bool]:
    """The image turned upright, and whether its width and height were swapped."""
    if orientation in range(2, 9):
        try:
            return ImageOps.exif_transpose(img), orientation in _TRANSPOSING
        except Exception:
            return img, False
    return img, False


def _draft(img: Image.Image, orientation: int,
           reduce_to: Callable[[int, int], tuple[int, int] | None]) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale if the caller needs no more pixels.

    ``reduce_to`` gets the upright size and returns the smallest upright size it needs
    (or None); Pillow picks the largest reduction that still covers it in both sides.
    """
    width, height = img.size
    transposed = orientation in _TRANSPOSING
    need = reduce_to(*((height, width) if transposed else (width, height)))
    if need is None:
        return
    need_w, need_h = (need[1], need[0]) if transposed else need
    if width // max(1, need_w) >= 2 and height // max(1, need_h) >= 2:
        img.draft(img.mode, (need_w, need_h))


def _load_error_reason(err: BaseException) -> str:
    if isinstance(err, Image.DecompressionBombError):
        return "decompression_bomb"
    if isinstance(err, EOFError) or "truncat" in str(err).lower():
        return "truncated"
    return "decode_error"


def _allowed_formats() -> list[str]:
    # Image.OPEN is filled lazily; without init() a fresh process would know no format.
    Image.init()
    return [fmt for fmt in ALLOWED_FORMATS if fmt in Image.OPEN]


def decode_image(
    data: bytes | bytearray | memoryview | None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    reduce_to: Callable[[int, int], tuple[int, int] | None] | None = None,
) -> DecodeResult:
    """Decode untrusted bytes into an RGB image, or say why not. Never raises.

    ``None`` (a null binary column) counts as ``empty``.

    The pixel limit is checked on the header size before any pixel is
    decompressed, per call, so it is thread-safe and does not touch Pillow's
    global ``MAX_IMAGE_PIXELS`` (which still applies on top, at ~179 MP).

    ``reduce_to`` (upright width, height) -> the smallest size the caller needs, or
    None: a caller that will shrink the image anyway lets a JPEG be decoded at 1/2, 1/4
    or 1/8 scale (libjpeg's DCT scaling, never below that size), which skips most of the
    decoding and resizing work. ``image`` is then smaller than ``width`` x ``height``.
    Other formats, and JPEGs that would not shrink by 2 or more, decode in full.
    """
    if data is None or len(data) == 0:
        return _fail("empty")
    if not isinstance(data, bytes):
        data = bytes(data)
    sniffed = sniff_format(data)
    if sniffed == "HTML":
        return _fail("html_not_image", sniffed)
    if sniffed == "SVG":
        return _fail("svg_not_supported", sniffed)
    fmt: str | None = sniffed
    size: tuple[int, int] | None = None
    try:
        with Image.open(io.BytesIO(data), formats=_allowed_formats()) as img:
            fmt = img.format
            size = img.size
            width, height = size
            if width <= 0 or height <= 0:
                return _fail("decode_error", fmt, size)
            pixels = width * height
            if pixels > max_pixels:
                reason = (
                    "decompression_bomb"
                    if pixels > BOMB_PIXELS_PER_BYTE * len(data)
                    else "too_many_pixels"
                )
                return _fail(reason, fmt, size)
            orientation = None
            if reduce_to is not None and fmt in _DRAFT_FORMATS:
                # JPEG EXIF sits in the header; other formats may load pixels to find it.
                orientation = _orientation(img)
                _draft(img, orientation, reduce_to)
            img.load()
            reduced = img.size != size
            if orientation is None:
                orientation = _orientation(img)
            # Pixels are loaded, so the result stays valid after the file closes.
            upright, transposed = _apply_orientation(img, orientation)
            rgb = to_rgb(upright)
    except UnidentifiedImageError:
        # Known magic but unreadable header means corrupt, not an unknown format.
        return _fail("unrecognized_format" if sniffed is None else "decode_error", sniffed)
    except Exception as err:  # Pillow raises many unrelated types on bad input
        return _fail(_load_error_reason(err), fmt, size)
    if reduced:  # report the image's own size, not the reduced decode's
        full_w, full_h = (height, width) if transposed else (width, height)
        return DecodeResult(rgb, full_w, full_h, fmt, None)
    return DecodeResult(rgb, rgb.width, rgb.height, fmt, None)
