"""Words rendered on plain images, for the Sync. Score text-spotting benchmark.

The paper ("Parrot Captions Teach CLIP to Spot Text", sys_benchmark.py) draws each
vocabulary word centred on a 224x224 RGB image with Arial at size 32 in four colour
styles and asks how similar CLIP finds the image and the bare word. Its script measures
text with `font.getsize` / `draw.textsize`, which Pillow 10 removed, inside a try/except,
so on current Pillow it silently renders nothing; this module re-implements the
rendering with Pillow's current metrics and is explicit about which words it skips.

Choices that differ from the paper, and why:
- Font: Arial cannot be shipped, so the default is DejaVu Sans as bundled by matplotlib
  (freely licensed, present wherever the ML extra is installed). Any TrueType/OpenType
  file can be configured, Arial included, to reproduce the paper's setting.
- Skipped words: a word containing a character the font has no glyph for would render
  as "tofu" boxes and measure the model's reaction to boxes, not to the word, so such
  words are skipped with a reason (checked against the font's cmap with fontTools).
- Centring: the word's *ink* bounding box is centred (within half a pixel), not its
  advance box, so descenders and side bearings do not shift the text off-centre.
- Layout: Pillow's BASIC layout engine by default. Pillow's RAQM engine depends on a
  libfribidi found at run time, which executors of one cluster may or may not have;
  BASIC gives identical pixels everywhere (complex scripts need `layout_engine="raqm"`).
Words wider than the image are clipped (centre kept), as in the paper; not a skip.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from udfs.worker_cache import worker_cached

RGB = tuple[int, int, int]
_WHITE: RGB = (255, 255, 255)
_BLACK: RGB = (0, 0, 0)
_GRAY: RGB = (128, 128, 128)  # PIL's ImageColor 'gray', as the paper's script names it

# name -> (background, foreground), in the paper's order.
STYLES: dict[str, tuple[RGB, RGB]] = {
    "black_on_white": (_WHITE, _BLACK),
    "white_on_black": (_BLACK, _WHITE),
    "white_on_gray": (_GRAY, _WHITE),
    "black_on_gray": (_GRAY, _BLACK),
}

SKIP_REASONS = ("empty", "control_char", "missing_glyph", "no_ink")
_LAYOUTS = {"basic": ImageFont.Layout.BASIC, "raqm": ImageFont.Layout.RAQM}
# Line/paragraph separators and C0/C1 controls would make Pillow lay out several lines.
_CONTROL_CATEGORIES = ("Cc", "Zl", "Zp")


@dataclass(frozen=True)
class RenderSettings:
    """How words are drawn; the defaults are the paper's (224 px canvas, 32 px font).

    `font_path` "" means matplotlib's bundled DejaVu Sans. It is resolved on the
    executor that renders, so a path only valid on the cluster nodes is accepted here.
    """

    image_size: int = 224
    font_size: int = 32
    font_path: str = ""
    styles: tuple[str, ...] = tuple(STYLES)
    layout_engine: str = "basic"

    def __post_init__(self) -> None:
        object.__setattr__(self, "styles", tuple(self.styles))
        for field_name in ("image_size", "font_size"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field_name} must be a positive int, got {value!r}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {self.image_size}")
        if not self.styles:
            raise ValueError("styles must name at least one style")
        unknown = [s for s in self.styles if s not in STYLES]
        if unknown:
            raise ValueError(f"unknown style(s) {unknown}; choose from {list(STYLES)}")
        if len(set(self.styles)) != len(self.styles):
            raise ValueError(f"styles must not repeat, got {list(self.styles)}")
        if self.layout_engine not in _LAYOUTS:
            raise ValueError(
                f"layout_engine must be one of {sorted(_LAYOUTS)}, got {self.layout_engine!r}"
            )
        if not isinstance(self.font_path, str):
            raise ValueError(f"font_path must be a string, got {self.font_path!r}")

    @property
    def resolved_font_path(self) -> str:
        return self.font_path or default_font_path()


def default_font_path() -> str:
    """matplotlib's bundled DejaVu Sans (the stand-in for the paper's Arial)."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - matplotlib is in the ml extra
        raise RuntimeError(
            "the default Sync. Score font ships with matplotlib: install it "
            "(pip install 'deparrot[ml]') or set font_path to a .ttf/.otf file"
        ) from exc
    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")


def default_bold_font_path() -> str:
    """DejaVu Sans Bold, next to the regular face in matplotlib's bundled fonts."""
    return os.path.join(os.path.dirname(default_font_path()), "DejaVuSans-Bold.ttf")


def _check_font_file(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"font file not found: {path}")


def load_font(path: str, size: int, layout_engine: str = "basic") -> ImageFont.FreeTypeFont:
    """One FreeType font per (path, size, layout) and worker: parsing a font is not free."""
    if layout_engine not in _LAYOUTS:
        raise ValueError(f"layout_engine must be one of {sorted(_LAYOUTS)}, got {layout_engine!r}")

    def build() -> ImageFont.FreeTypeFont:
        _check_font_file(path)
        if layout_engine == "raqm" and not features.check("raqm"):
            raise RuntimeError("layout_engine='raqm' needs Pillow with libraqm (and libfribidi)")
        return ImageFont.truetype(path, size, layout_engine=_LAYOUTS[layout_engine])

    return worker_cached("render_font", (path, size, layout_engine), build)


def glyph_set(path: str) -> frozenset[int]:
    """Code points the font maps to a glyph (its best Unicode cmap; face 0 of a collection).

    Cached per worker: `can_render` asks for every word.
    """

    def build() -> frozenset[int]:
        from fontTools.ttLib import TTFont

        _check_font_file(path)
        with TTFont(path, lazy=True, fontNumber=0) as font:
            cmap = font.getBestCmap() or {}
        return frozenset(cmap)

    return worker_cached("render_glyphs", path, build)


def _font(settings: RenderSettings) -> ImageFont.FreeTypeFont:
    return load_font(settings.resolved_font_path, settings.font_size, settings.layout_engine)


def can_render(word: str | None, settings: RenderSettings) -> str | None:
    """None when `word` can be drawn faithfully, else why it is skipped.

    Reasons: "empty" (None, blank or whitespace only), "control_char" (control or line
    separator characters, which would break the single-line layout), "missing_glyph"
    (a non-space character outside the font's cmap: it would draw as a tofu box),
    "no_ink" (only invisible characters such as zero-width spaces).
    """
    if word is None or not word.strip():
        return "empty"
    if any(unicodedata.category(ch) in _CONTROL_CATEGORIES for ch in word):
        return "control_char"
    glyphs = glyph_set(settings.resolved_font_path)
    if any(ord(ch) not in glyphs for ch in word if not ch.isspace()):
        return "missing_glyph"
    left, top, right, bottom = _font(settings).getbbox(word)
    if right <= left or bottom <= top:
        return "no_ink"
    return None


def _ink_mask(word: str, font: ImageFont.FreeTypeFont) -> Image.Image | None:
    """The word's antialiased coverage (mode "L") cropped to its exact ink bounding box."""
    left, top, right, bottom = font.getbbox(word)
    pad = 2 + int(font.size) // 4  # margin for ink beyond the metric box (overhangs)
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), word, fill=255, font=font)
    box = canvas.getbbox()
    return None if box is None else canvas.crop(box)


def render_word(word: str, style: str, settings: RenderSettings | None = None) -> np.ndarray:
    """`word` drawn in `style` as an HxWx3 uint8 RGB array, its ink box centred.

    Deterministic for a given font file, settings and Pillow/FreeType build. Pixels are
    the background, the foreground, or antialiasing blends between the two. Raises
    ValueError for words `can_render` rejects (callers skip those and count them).
    """
    settings = settings or RenderSettings()
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose from {list(STYLES)}")
    reason = can_render(word, settings)
    if reason is not None:
        raise ValueError(f"cannot render {word!r}: {reason}")
    background, foreground = STYLES[style]
    size = settings.image_size
    image = Image.new("RGB", (size, size), background)
    mask = _ink_mask(word, _font(settings))
    if mask is not None:
        # Centre the ink box; a too-wide word is clipped on both sides by paste.
        x = (size - mask.width) // 2
        y = (size - mask.height) // 2
        image.paste(foreground, (x, y, x + mask.width, y + mask.height), mask)
    return np.asarray(image, dtype=np.uint8).copy()


def render_words(
    words: list[str], style: str, settings: RenderSettings | None = None
) -> list[np.ndarray]:
    """`render_word` over a list (all words must be renderable)."""
    return [render_word(w, style, settings) for w in words]
