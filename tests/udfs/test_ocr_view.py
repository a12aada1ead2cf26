"""The OCR view: download keeps the original at detection size, score's spotter reads it
and its boxes come back in the stored image's coordinates."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from udfs.images import ImageSettings, image_row
from udfs.ocr import OcrBox, OcrResult
from udfs.ocr_view import OcrViewSettings, image_covers_view, view_size
from udfs.resize import ResizeMode, ResizeSettings
from udfs.score import ScoreSettings, decode_part, spot_views


def _jpeg(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.radial_gradient("L").resize(size).convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_view_size_shrinks_to_the_side_and_never_grows():
    assert view_size(1280, 720, 1024) == (1024, 576)
    assert view_size(720, 1280, 1024) == (576, 1024)
    assert view_size(400, 300, 1024) == (400, 300)
    assert view_size(4000, 3000, 0) == (4000, 3000)


@pytest.mark.parametrize("original,image_size,mode,side,want", [
    ((1280, 720), 256, "border", 1024, (1024, 576)),  # the default: a view is kept
    ((400, 300), 256, "border", 1024, (400, 300)),  # a small original, at its own size
    ((1280, 720), 1024, "border", 1024, None),  # the image covers it
    ((300, 200), 512, "border", 1024, (300, 200)),  # upscaled: the original is the view
    ((1280, 720), 256, "border", 0, None),  # views turned off
    ((2000, 1000), 1024, "center_crop", 1024, (1024, 512)),  # a crop loses content
])
def test_download_stores_a_view_unless_the_image_covers_it(original, image_size, mode, side,
                                                            want):
    settings = ImageSettings(resize=ResizeSettings(image_size=image_size, resize_mode=mode),
                             ocr_view=OcrViewSettings(side=side))
    row = image_row(1, "http://x.test/a.jpg", _jpeg(original), settings, "http")
    assert row["status"] == "ok"
    assert (row["original_width"], row["original_height"]) == original
    got = None if row["ocr_image"] is None else _size(row["ocr_image"])
    assert got == want


def test_cover_rule_counts_border_padding_as_not_content():
    resize = ResizeSettings(image_size=512, resize_mode=ResizeMode.border)
    assert not image_covers_view((1280, 720), (512, 512), resize, 1024)
    assert image_covers_view((512, 300), (512, 512), resize, 1024)
    # An upscaled image is not the original: a small original keeps its own view.
    assert not image_covers_view((500, 300), (512, 512), resize, 1024)


def test_view_settings_are_checked():
    with pytest.raises(ValueError, match="side"):
        OcrViewSettings(side=-1)
    with pytest.raises(ValueError, match="quality"):
        OcrViewSettings(quality=0)


class _BoxAtCentre:
    """A spotter that finds one box in the middle tenth of whatever it is shown."""

    reads_only_detected = True

    def __init__(self):
        self.shapes = []

    def spot(self, images, recognize=False):
        out = []
        for img in images:
            h, w = img.shape[:2]
            self.shapes.append((h, w))
            poly = [(0.45 * w, 0.45 * h), (0.55 * w, 0.45 * h), (0.55 * w, 0.55 * h),
                    (0.45 * w, 0.55 * h)]
            out.append(OcrResult([OcrBox(poly, "SALE", 0.9, 0.8)], h, w))
        return out


def test_score_reads_the_view_and_maps_boxes_into_the_image():
    settings = ImageSettings(resize=ResizeSettings(image_size=128))
    row = image_row(7, "http://x.test/a.jpg", _jpeg((1000, 500)), settings, "http")
    part = pd.DataFrame([{k: row[k] for k in ("sample_id", "image", "ocr_image",
                                              "original_width", "original_height")}])
    s = ScoreSettings()
    decoded = decode_part(part, s)
    assert decoded.arrays[0].shape[:2] == (64, 128)  # the border removed
    assert decoded.views[0].shape[:2] == (500, 1000)
    spotter = _BoxAtCentre()
    result = spot_views(spotter, decoded.arrays, decoded.views, s)[0]
    assert spotter.shapes == [(500, 1000)]  # the spotter saw the view, not the image
    assert (result.image_height, result.image_width) == (64, 128)
    xs = [x for x, _ in result.boxes[0].polygon]
    ys = [y for _, y in result.boxes[0].polygon]
    assert min(xs) == pytest.approx(0.45 * 128) and max(ys) == pytest.approx(0.55 * 64)
    assert result.boxes[0].text == "SALE" and result.boxes[0].det_score == 0.8


def test_rows_without_a_view_are_read_from_the_image():
    settings = ImageSettings(resize=ResizeSettings(image_size=128),
                             ocr_view=OcrViewSettings(side=0))
    row = image_row(7, "http://x.test/a.jpg", _jpeg((300, 300)), settings, "http")
    part = pd.DataFrame([{k: row[k] for k in ("sample_id", "image", "ocr_image",
                                              "original_width", "original_height")}])
    decoded = decode_part(part, ScoreSettings())
    assert decoded.views == [None]
    spotter = _BoxAtCentre()
    spot_views(spotter, decoded.arrays, decoded.views, ScoreSettings())
    assert spotter.shapes == [(128, 128)]


REAL_SET = Path(__file__).resolve().parents[2] / "benchmarks" / "ocr_real" / "images"


def test_the_padded_second_look_finds_a_word_that_fills_the_frame():
    """A DB detector finds a line from the background around it: a real word crop from
    the evaluation set (mmocr's 'ATTACK', 53 x 18 px) has no text for one look, and the
    padded second look reads it (benchmarks/ocr_real.py measures the whole set)."""
    from udfs.batched_ocr import BatchedOcrSpotter
    from udfs.ocr import TextRule

    word = np.asarray(Image.open(REAL_SET / "mmocr_word_1240078.jpg").convert("RGB"))
    rule = TextRule()
    one_look = BatchedOcrSpotter(look_side=0, num_threads=1).spot([word], recognize=True)[0]
    two_looks = BatchedOcrSpotter(num_threads=1).spot([word], recognize=True)[0]
    assert not rule.has_text(one_look)
    assert rule.has_text(two_looks) and "ATTACK" in two_looks.text.upper()
    h, w = word.shape[:2]
    for box in two_looks.boxes:  # mapped back inside the image, not the margin
        assert all(0 <= x <= w and 0 <= y <= h for x, y in box.polygon)
