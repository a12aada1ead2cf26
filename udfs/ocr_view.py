"""The OCR view: each downloaded image once more, at the resolution text detection needs.

Why: the stored `image` is sized for CLIP (img2dataset's 256 px by default). Scene text
that a person reads at the original size (a 30 px shop sign in a 1280 x 720 street
photo) is 6 px tall after that shrink, and no detector finds it again: on real
photographs (benchmarks/ocr_real.py) the 256 px image lost most text a larger one
showed, and which text images were found changed with `download.resize.image_size`.
The download task holds the decoded original anyway, so it also encodes this view (the
original, shrunk only so its long side is at most `side`), and the score stage's text
spotter reads the view instead of `image`. The text decision then no longer depends on
the CLIP size at all. Detection in the download task itself was the alternative; it
would put the OCR models (and their GPU) on the fetch workers, which are sized for the
network; the view costs bytes instead (see docs/SCALING.md).

No view is stored when `image` already holds the whole original at the view's size
(`resize_mode` no, or a CLIP size equal to the view's): the spotter reads `image`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from udfs.resize import ResizeMode, ResizeSettings, encode, reduced_decode_size

# Long side of the OCR view: a 1280 x 720 street scene (ICDAR's frames, signs 20-60 px
# tall) is kept whole; a 1024 px view lost small text there that 1280 keeps
# (benchmarks/ocr_real.py, with the same detector settings).
DEFAULT_OCR_SIDE = 1280
# JPEG quality of the view: text edges are what the detector looks for.
DEFAULT_OCR_QUALITY = 90


@dataclass(frozen=True)
class OcrViewSettings:
    """`download.ocr_view`: the long side of the stored OCR view (0 = no view: the
    spotter reads the CLIP-sized `image`) and its JPEG quality."""

    side: int = DEFAULT_OCR_SIDE
    quality: int = DEFAULT_OCR_QUALITY

    def __post_init__(self) -> None:
        if self.side < 0:
            raise ValueError(f"ocr_view.side must be >= 0, got {self.side!r}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"ocr_view.quality must be in 1..100, got {self.quality!r}")


def view_size(width: int, height: int, side: int) -> tuple[int, int]:
    """The view's size: the original's, shrunk (never grown) to a long side of `side`."""
    long = max(width, height)
    if side <= 0 or long <= side:
        return width, height
    scale = side / long
    return max(1, round(width * scale)), max(1, round(height * scale))


def image_covers_view(original: tuple[int, int], stored: tuple[int, int] | None,
                      resize: ResizeSettings, side: int) -> bool:
    """Whether the stored image holds the whole original at exactly the view's size (so
    no view is needed). Not when it is smaller, nor larger: an upscaled image shows the
    detector other pixels than the view would, and the text decision must not depend on
    the CLIP size (a small original's view is small). center_crop cuts: never covers."""
    if side <= 0:
        return True
    if stored is None or resize.resize_mode == ResizeMode.center_crop:
        return False
    want = view_size(*original, side)
    if resize.resize_mode == ResizeMode.border:  # the padding is not content
        long = max(original)
        scale = min(stored) / long if long else 0.0
        content = (original[0] * scale, original[1] * scale)
    else:
        content = stored
    return abs(max(content) - max(want)) < 0.5


def decode_need(resize: ResizeSettings, view: OcrViewSettings
                ) -> Callable[[int, int], tuple[int, int] | None] | None:
    """`decode_image(reduce_to=...)` for download: enough pixels for the resize and for
    the view, whichever needs more (None: decode every pixel)."""
    clip_need = reduced_decode_size(resize)
    if clip_need is None:
        return None
    if view.side <= 0:
        return clip_need

    def need(width: int, height: int) -> tuple[int, int] | None:
        a = clip_need(width, height)
        if a is None:
            return None
        b = view_size(width, height, view.side)
        if b == (width, height):
            return None
        return max(a[0], b[0]), max(a[1], b[1])

    return need


def make_view(img: Image.Image, original: tuple[int, int], stored: tuple[int, int] | None,
              resize: ResizeSettings, view: OcrViewSettings) -> bytes | None:
    """The OCR view's JPEG bytes, or None when the stored image covers it.

    `img` is the decoded original (possibly decoded reduced, but never below the view's
    size: see decode_need); `original` its own size.
    """
    if image_covers_view(original, stored, resize, view.side):
        return None
    w, h = view_size(*original, view.side)
    out = img if img.size == (w, h) else img.resize((w, h), Image.Resampling.BOX
                                                    if img.width >= w else
                                                    Image.Resampling.LANCZOS)
    return encode(out.convert("RGB"), "jpg", view.quality)


def scale_polygon(polygon, sx: float, sy: float) -> list[tuple[float, float]]:
    """A polygon from view coordinates into the image's (`sx`, `sy`: image / view)."""
    return [(float(x) * sx, float(y) * sy) for x, y in polygon]


def view_scale(image_hw: tuple[int, int], view_hw: tuple[int, int]) -> tuple[float, float]:
    """(sx, sy) that map view coordinates to image coordinates."""
    ih, iw = image_hw
    vh, vw = view_hw
    if vh <= 0 or vw <= 0:
        return 1.0, 1.0
    return iw / vw, ih / vh

