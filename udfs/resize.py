"""img2dataset-compatible resize and re-encode, done with Pillow.

Downstream tools and published LAION subsets assume img2dataset's output
geometry, so we reproduce its resizer (modes, rounding, crop/pad offsets, white
alpha matting and border, checks on the original size) without pulling in
OpenCV. Pixel values differ slightly (Pillow filters vs cv2), sizes do not.

Reason codes: ``image_too_small``, ``image_area_too_large``,
``aspect_ratio_too_large``, ``resize_error``, ``encode_error``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from enum import Enum

import numpy as np
from PIL import Image

from udfs.decode import to_rgb


class ResizeMode(str, Enum):
    """img2dataset's resize modes (``fixed`` is left out on purpose: it distorts)."""

    no = "no"
    keep_ratio = "keep_ratio"  # smallest side becomes image_size
    keep_ratio_largest = "keep_ratio_largest"  # largest side becomes image_size
    center_crop = "center_crop"  # keep_ratio, then crop the centre square
    border = "border"  # keep_ratio_largest, then pad to a square


# Pillow equivalents of img2dataset's cv2 interpolation names. BOX averages every
# covered source pixel, which is what cv2.INTER_AREA does when shrinking.
INTERPOLATIONS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "linear": Image.Resampling.BILINEAR,
    "bilinear": Image.Resampling.BILINEAR,
    "cubic": Image.Resampling.BICUBIC,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
    "lanczos4": Image.Resampling.LANCZOS,
}

ENCODE_FORMATS: dict[str, str] = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
# Used when quality is None; png's is a zlib level, so 95 would be invalid for it.
DEFAULT_QUALITY: dict[str, int] = {"jpg": 95, "png": 6, "webp": 95}


@dataclass(frozen=True)
class ResizeSettings:
    """Resizer options; names and defaults follow img2dataset's CLI.

    For ``png`` the quality is the zlib compression level 0-9, as in img2dataset;
    ``encode_quality=None`` picks a per-format default (95 jpg/webp, 6 png).
    ``border_color`` defaults to img2dataset's white padding.
    """

    image_size: int = 256
    resize_mode: ResizeMode = ResizeMode.border
    resize_only_if_bigger: bool = False
    min_image_size: int = 0
    max_image_area: float = math.inf
    max_aspect_ratio: float = math.inf
    encode_format: str = "jpg"
    encode_quality: int | None = None
    upscale_interpolation: str = "lanczos"
    downscale_interpolation: str = "area"
    border_color: tuple[int, int, int] = (255, 255, 255)
    # Decode JPEGs at 1/2, 1/4 or 1/8 scale when they shrink at least that much (libjpeg
    # DCT scaling; img2dataset decodes every pixel): output sizes are unchanged, pixels
    # differ by about one level on average. False decodes every pixel.
    reduced_decode: bool = True

    def __post_init__(self) -> None:
        # Accept plain strings from YAML; fail on the driver, not in a task.
        object.__setattr__(self, "resize_mode", ResizeMode(self.resize_mode))
        if self.image_size <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        for name in (self.upscale_interpolation, self.downscale_interpolation):
            if name.lower() not in INTERPOLATIONS:
                raise ValueError(f"unknown interpolation {name!r}")
        _check_encoding(self.encode_format, self.encode_quality)


@dataclass(frozen=True)
class ResizeResult:
    """Encoded bytes and their size, or ``error`` with ``data`` None."""

    data: bytes | None
    format: str | None
    width: int | None
    height: int | None
    original_width: int | None
    original_height: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def _check_encoding(fmt: str, quality: int | None) -> int:
    """Validate and return the effective quality."""
    if fmt not in ENCODE_FORMATS:
        raise ValueError(f"encode format must be one of {sorted(ENCODE_FORMATS)}, got {fmt!r}")
    if quality is None:
        return DEFAULT_QUALITY[fmt]
    if fmt == "png" and not 0 <= quality <= 9:
        raise ValueError(f"for png, quality is the compression level 0-9, got {quality}")
    if fmt != "png" and not 0 <= quality <= 100:
        raise ValueError(f"quality must be 0-100, got {quality}")
    return quality


def encode(img: Image.Image, fmt: str = "jpg", quality: int | None = None) -> bytes:
    """Encode as ``jpg``, ``png`` (quality = compression level 0-9) or ``webp``."""
    quality = _check_encoding(fmt, quality)
    if img.mode not in ("RGB", "L"):
        img = to_rgb(img)
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, "PNG", compress_level=quality)
    else:
        img.save(buf, ENCODE_FORMATS[fmt], quality=quality)
    return buf.getvalue()


def _scaled_size(width: int, height: int, target: int, side: int) -> tuple[int, int]:
    """albumentations' smallest/longest_max_size: scale so ``side`` becomes target."""
    scale = target / side
    return max(1, round(width * scale)), max(1, round(height * scale))


def _center_crop(img: Image.Image, size: int) -> Image.Image:
    left = (img.width - size) // 2
    top = (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))


def _pad(img: Image.Image, size: int, color: tuple[int, int, int]) -> Image.Image:
    # Same split as albumentations.pad: the odd extra pixel goes right/bottom.
    canvas = Image.new("RGB", (max(size, img.width), max(size, img.height)), color)
    canvas.paste(img, ((canvas.width - img.width) // 2, (canvas.height - img.height) // 2))
    return canvas


def remove_border(pixels: np.ndarray, original_size: tuple[int, int] | None,
                  tolerance: float = 12.0) -> np.ndarray:
    """The content of a `border`-mode image without its padding, from the original size.

    LAION scored the original image with CLIP's own resize and centre crop; img2dataset's
    border mode adds bars (white by default) that shift CLIP's view and score. The
    padded canvas is square; the content is the original scaled to fit, centred (the
    split of _pad). The crop happens only when the bars are really there: 99% of bar
    pixels within `tolerance` of one colour, so other resize
    modes (a centre crop of a wide photo is square too) are never cut.
    """
    if original_size is None or pixels.ndim != 3:
        return pixels
    ow, oh = (int(v) for v in original_size)
    h, w = pixels.shape[:2]
    if w != h or ow <= 0 or oh <= 0 or ow == oh:
        return pixels
    cw, ch = _scaled_size(ow, oh, w, max(ow, oh))
    if (cw, ch) == (w, h) or cw > w or ch > h:
        return pixels
    left, top = (w - cw) // 2, (h - ch) // 2
    # The bars' outer part: JPEG blocks (16 px with chroma subsampling) ring next to the
    # content, so the strip nearest it is not compared.
    gap = min(16, (top if ch < h else left) // 2)
    bars = [pixels[:top - gap], pixels[top + ch + gap:]] if ch < h else \
        [pixels[:, :left - gap], pixels[:, left + cw + gap:]]
    bar = np.concatenate([b.reshape(-1, pixels.shape[2]) for b in bars if b.size])
    if not len(bar):
        return pixels
    colour = np.median(bar, axis=0)
    off = np.abs(bar.astype(np.float32) - colour).max(axis=1) > tolerance
    if off.mean() > 0.01:
        return pixels
    return np.ascontiguousarray(pixels[top:top + ch, left:left + cw])


def _side(width: int, height: int, mode: ResizeMode) -> int | None:
    """The side that the mode scales to image_size (None for mode ``no``)."""
    if mode in (ResizeMode.keep_ratio, ResizeMode.center_crop):
        return min(width, height)
    if mode in (ResizeMode.keep_ratio_largest, ResizeMode.border):
        return max(width, height)
    return None


def reduced_decode_size(cfg: ResizeSettings):
    """For ``decode_image(reduce_to=...)``: the size an image of a given size needs to be
    decoded at, when this resize shrinks it (None: decode every pixel)."""
    if not cfg.reduced_decode:
        return None

    def need(width: int, height: int) -> tuple[int, int] | None:
        side = _side(width, height, cfg.resize_mode)
        if side is None or side <= cfg.image_size:
            return None
        return _scaled_size(width, height, cfg.image_size, side)

    return need


def resize_image(img: Image.Image, cfg: ResizeSettings,
                 original_size: tuple[int, int] | None = None) -> Image.Image:
    """Apply the resize mode; no size checks here (see :func:`check_size`).

    ``original_size``: the image's own size when ``img`` was decoded reduced; the output
    geometry is computed from it, so it is the same as from a full decode.
    """
    mode, size = cfg.resize_mode, cfg.image_size
    width, height = original_size or img.size
    side = _side(width, height, mode)
    if side is None:
        return img
    downscale = side > size
    if cfg.resize_only_if_bigger and not downscale:
        return img  # like img2dataset: no crop or border either
    target = _scaled_size(width, height, size, side)
    if img.size != target:
        name = cfg.downscale_interpolation if downscale else cfg.upscale_interpolation
        img = img.resize(target, INTERPOLATIONS[name.lower()])
    if mode is ResizeMode.center_crop:
        img = _center_crop(img, size)
    elif mode is ResizeMode.border:
        img = _pad(img, size, cfg.border_color)
    return img


def check_size(width: int, height: int, cfg: ResizeSettings) -> str | None:
    """Reason code if the original size fails the filters, checked in img2dataset's order."""
    if min(width, height) < max(cfg.min_image_size, 1):
        return "image_too_small"
    if width * height > cfg.max_image_area:
        return "image_area_too_large"
    if max(width, height) / min(width, height) > cfg.max_aspect_ratio:
        return "aspect_ratio_too_large"
    return None


def resize_and_encode(img: Image.Image, cfg: ResizeSettings,
                      original_size: tuple[int, int] | None = None) -> ResizeResult:
    """Filter on the original size, resize, re-encode. Never raises for image problems.

    ``original_size``: the image's own size when ``img`` was decoded reduced
    (``decode_image(reduce_to=reduced_decode_size(cfg))``); filters, output geometry and
    the recorded original size use it.
    """
    orig_w, orig_h = original_size or img.size
    reason = check_size(orig_w, orig_h, cfg)
    if reason is not None:
        return ResizeResult(None, None, None, None, orig_w, orig_h, reason)
    try:
        out = resize_image(to_rgb(img), cfg, (orig_w, orig_h))
    except Exception:  # Pillow raises assorted types on broken images
        return ResizeResult(None, None, None, None, orig_w, orig_h, "resize_error")
    try:
        data = encode(out, cfg.encode_format, cfg.encode_quality)
    except Exception:
        return ResizeResult(None, None, None, None, orig_w, orig_h, "encode_error")
    return ResizeResult(data, cfg.encode_format, out.width, out.height, orig_w, orig_h, None)
