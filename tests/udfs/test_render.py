from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from udfs import render
from udfs.render import STYLES, RenderSettings, can_render, render_word

WORDS = ["a", "parrot", "Hello World", "gy"]


def _ink_box(img: np.ndarray, background: tuple[int, int, int]) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(np.any(img != np.asarray(background, np.uint8), axis=2))
    assert xs.size, "nothing was drawn"
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def test_styles_are_the_papers_in_order():
    assert list(STYLES) == ["black_on_white", "white_on_black", "white_on_gray", "black_on_gray"]
    white, black, gray = (255, 255, 255), (0, 0, 0), (128, 128, 128)
    assert list(STYLES.values()) == [(white, black), (black, white), (gray, white), (gray, black)]
    assert RenderSettings().styles == tuple(STYLES)


def test_default_font_is_bundled_dejavu():
    path = render.default_font_path()
    assert path.endswith("DejaVuSans.ttf")
    assert RenderSettings().resolved_font_path == path
    assert ord("a") in render.glyph_set(path)


@pytest.mark.parametrize("style", list(STYLES))
def test_colours_are_background_foreground_and_blends(style):
    background, foreground = STYLES[style]
    img = render_word("parrot", style)
    assert img.shape == (224, 224, 3) and img.dtype == np.uint8
    for corner in (img[0, 0], img[0, -1], img[-1, 0], img[-1, -1]):
        assert tuple(corner) == background
    # Every style is grey-level: pixels are (v, v, v) between background and foreground.
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2])
    lo, hi = sorted((background[0], foreground[0]))
    assert img.min() >= lo and img.max() <= hi
    values = set(np.unique(img[..., 0]).tolist())
    assert {background[0], foreground[0]} <= values
    assert len(values) > 2  # antialiased edges


@pytest.mark.parametrize("word", WORDS)
def test_ink_box_is_centred(word):
    settings = RenderSettings()
    for style in ("black_on_white", "white_on_gray"):
        x0, y0, x1, y1 = _ink_box(render_word(word, style, settings), STYLES[style][0])
        centre = (settings.image_size - 1) / 2
        assert abs((x0 + x1) / 2 - centre) <= 2, (word, x0, x1)
        assert abs((y0 + y1) / 2 - centre) <= 2, (word, y0, y1)


def test_descenders_do_not_shift_the_ink_off_centre():
    # "gy" hangs below the baseline, "a" does not: both ink boxes are still centred.
    boxes = [_ink_box(render_word(w, "black_on_white"), STYLES["black_on_white"][0]) for w in "ag"]
    for _, y0, _, y1 in boxes:
        assert abs((y0 + y1) / 2 - 111.5) <= 1


def test_deterministic():
    for word in WORDS:
        assert np.array_equal(
            render_word(word, "white_on_black"), render_word(word, "white_on_black")
        )
    assert not np.array_equal(
        render_word("parrot", "black_on_white"), render_word("parrot", "white_on_black")
    )


def test_too_wide_word_is_clipped_not_skipped():
    word = "supercalifragilisticexpialidocious"
    assert can_render(word, RenderSettings()) is None
    img = render_word(word, "black_on_white")
    x0, _, x1, _ = _ink_box(img, STYLES["black_on_white"][0])
    assert x0 <= 1 and x1 >= 222


@pytest.mark.parametrize(
    ("word", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (None, "empty"),
        ("日本語", "missing_glyph"),
        ("parrot🦜", "missing_glyph"),
        ("a\tb", "control_char"),
        ("line\nbreak", "control_char"),
        ("\u200b", "no_ink"),
        ("café au lait", None),
        ("naïve", None),
    ],
)
def test_skip_reasons(word, reason):
    assert can_render(word, RenderSettings()) == reason
    if reason is not None:
        with pytest.raises(ValueError, match=reason):
            render_word(word, "black_on_white")


def test_font_size_changes_ink_height():
    heights = []
    for size in (16, 32, 64):
        settings = RenderSettings(font_size=size)
        _, y0, _, y1 = _ink_box(render_word("Hello", "black_on_white", settings), (255,) * 3)
        heights.append(y1 - y0 + 1)
    assert heights[0] < heights[1] < heights[2]
    assert 1.6 < heights[2] / heights[1] < 2.4


def test_custom_image_size():
    img = render_word("a", "black_on_gray", RenderSettings(image_size=64, font_size=16))
    assert img.shape == (64, 64, 3)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="unknown style"):
        render_word("a", "red_on_blue")
    with pytest.raises(ValueError, match="unknown style"):
        RenderSettings(styles=("black_on_white", "red_on_blue"))
    with pytest.raises(ValueError, match="at least one"):
        RenderSettings(styles=())
    with pytest.raises(ValueError, match="repeat"):
        RenderSettings(styles=("black_on_white", "black_on_white"))
    for field, value in (("image_size", 0), ("font_size", -3), ("font_size", 2.5)):
        with pytest.raises(ValueError, match=field):
            RenderSettings(**{field: value})
    with pytest.raises(ValueError, match="layout_engine"):
        RenderSettings(layout_engine="fancy")
    # Styles given as a list are normalised to a tuple (settings are hashable keys).
    assert RenderSettings(styles=["white_on_black"]).styles == ("white_on_black",)


def test_missing_font_file_is_a_clear_error(tmp_path):
    settings = dataclasses.replace(RenderSettings(), font_path=str(tmp_path / "Arial.ttf"))
    with pytest.raises(FileNotFoundError, match="font file not found"):
        can_render("a", settings)
