"""Text masking for the T-MARS score: what changes inside the boxes, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from udfs.masking import box_mask, mask_text
from udfs.render import render_word

SQUARE = [(10.0, 12.0), (30.0, 12.0), (30.0, 28.0), (10.0, 28.0)]


def _photo(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_box_mask_covers_the_polygon_and_nothing_else():
    inside = box_mask(48, 64, [SQUARE])
    assert inside.shape == (48, 64)
    assert inside[12:29, 10:31].all()  # outline included
    assert inside.sum() == 17 * 21
    tilted = box_mask(48, 64, [[(5, 5), (20, 5), (25, 15), (10, 15)]])
    assert tilted[10, 15] and not tilted[14, 6] and not tilted[5, 24]


@pytest.mark.parametrize("method", ["mean", "inpaint"])
def test_pixels_inside_the_boxes_change_and_outside_stay(method):
    image = _photo()
    before = image.copy()
    out = mask_text(image, [SQUARE], method)
    inside = box_mask(48, 64, [SQUARE])
    np.testing.assert_array_equal(image, before)  # the input is not modified
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~inside], image[~inside])
    assert (out[inside] != image[inside]).any(axis=-1).mean() > 0.9


def test_mean_fill_is_the_mean_colour_outside_the_boxes():
    image = _photo(1)
    out = mask_text(image, [SQUARE], "mean")
    inside = box_mask(48, 64, [SQUARE])
    want = np.round(image[~inside].mean(axis=0)).astype(np.uint8)
    assert (out[inside] == want).all()


def test_inpainting_removes_rendered_text_from_a_plain_background():
    word = render_word("SALE", "black_on_white")  # 224x224, black ink on white
    ink = (word < 128).all(axis=-1)
    ys, xs = np.nonzero(ink)
    pad = 4
    box = [(xs.min() - pad, ys.min() - pad), (xs.max() + pad, ys.min() - pad),
           (xs.max() + pad, ys.max() + pad), (xs.min() - pad, ys.max() + pad)]
    for method in ("mean", "inpaint"):
        out = mask_text(word, [box], method)
        assert out[ink].min() > 200, method  # the ink is gone: near-white where it was


def test_no_boxes_or_empty_boxes_give_the_same_image():
    image = _photo(2)
    assert mask_text(image, []) is image
    off_image = [(100, 100), (120, 100), (120, 110), (100, 110)]
    np.testing.assert_array_equal(mask_text(image, [off_image]), image)
    with pytest.raises(ValueError, match="method"):
        mask_text(image, [SQUARE], "blur")
