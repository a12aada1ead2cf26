"""Tests for udfs.resize: img2dataset's output geometry, filters and encodings."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from udfs.decode import decode_image
from udfs.resize import (
    ResizeMode,
    ResizeResult,
    ResizeSettings,
    encode,
    reduced_decode_size,
    resize_and_encode,
)

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _two_halves(width: int = 400, height: int = 200) -> Image.Image:
    """Left half red, right half blue: crop and pad positions become visible."""
    img = Image.new("RGB", (width, height), BLUE)
    img.paste(RED, (0, 0, width // 2, height))
    return img


def _decoded(res: ResizeResult) -> Image.Image:
    assert res.error is None, res.error
    assert res.data is not None
    img = Image.open(io.BytesIO(res.data))
    assert (img.width, img.height) == (res.width, res.height)
    return img


def _near(pixel: tuple[int, ...], expected: tuple[int, int, int], tol: int = 30) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel[:3], expected, strict=True))


@pytest.mark.parametrize(
    ("mode", "size"),
    [
        ("no", (400, 200)),
        ("keep_ratio", (512, 256)),
        ("keep_ratio_largest", (256, 128)),
        ("center_crop", (256, 256)),
        ("border", (256, 256)),
    ],
)
def test_mode_output_size(mode: str, size: tuple[int, int]) -> None:
    res = resize_and_encode(_two_halves(), ResizeSettings(image_size=256, resize_mode=mode))
    assert (res.width, res.height) == size
    assert (res.original_width, res.original_height) == (400, 200)
    assert res.format == "jpg"
    assert _decoded(res).size == size


def test_center_crop_takes_the_middle() -> None:
    cfg = ResizeSettings(image_size=256, resize_mode=ResizeMode.center_crop, encode_format="png")
    img = _decoded(resize_and_encode(_two_halves(), cfg)).convert("RGB")
    # 512x256 cropped at x=128..384: the red/blue boundary sits in the middle.
    assert _near(img.getpixel((5, 128)), RED)
    assert _near(img.getpixel((250, 128)), BLUE)


def test_border_pads_top_and_bottom_with_white() -> None:
    cfg = ResizeSettings(image_size=256, resize_mode="border", encode_format="png")
    img = _decoded(resize_and_encode(_two_halves(), cfg)).convert("RGB")
    # 256x128 content centred vertically: rows 0..63 and 192..255 are padding.
    assert img.getpixel((10, 10)) == WHITE
    assert img.getpixel((250, 250)) == WHITE
    assert _near(img.getpixel((10, 128)), RED)
    assert _near(img.getpixel((250, 128)), BLUE)


def test_border_color_is_configurable() -> None:
    cfg = ResizeSettings(image_size=64, border_color=(0, 0, 0), encode_format="png")
    img = _decoded(resize_and_encode(_two_halves(), cfg)).convert("RGB")
    assert img.getpixel((0, 0)) == (0, 0, 0)


def test_odd_padding_goes_bottom_right() -> None:
    cfg = ResizeSettings(image_size=10, resize_mode="border", encode_format="png")
    img = _decoded(resize_and_encode(Image.new("RGB", (10, 7), RED), cfg)).convert("RGB")
    column = [img.getpixel((5, y)) for y in range(10)]
    assert column == [WHITE] + [RED] * 7 + [WHITE] * 2


def test_resize_only_if_bigger_leaves_small_images_alone() -> None:
    small = _two_halves(100, 50)
    for mode in ("keep_ratio", "center_crop", "border", "keep_ratio_largest"):
        cfg = ResizeSettings(image_size=256, resize_mode=mode, resize_only_if_bigger=True)
        res = resize_and_encode(small, cfg)
        assert (res.width, res.height) == (100, 50), mode
    # Without the flag the same image is upscaled.
    res = resize_and_encode(small, ResizeSettings(image_size=256, resize_mode="keep_ratio"))
    assert (res.width, res.height) == (512, 256)


def test_resize_only_if_bigger_still_downscales() -> None:
    cfg = ResizeSettings(image_size=256, resize_mode="keep_ratio", resize_only_if_bigger=True)
    res = resize_and_encode(_two_halves(), cfg)
    assert (res.width, res.height) == (400, 200)  # keep_ratio looks at the smallest side
    cfg = ResizeSettings(image_size=128, resize_mode="keep_ratio", resize_only_if_bigger=True)
    res = resize_and_encode(_two_halves(), cfg)
    assert (res.width, res.height) == (256, 128)
    cfg = ResizeSettings(image_size=256, resize_mode="border", resize_only_if_bigger=True)
    res = resize_and_encode(_two_halves(), cfg)
    assert (res.width, res.height) == (256, 256)  # border looks at the largest side


def test_default_quality_depends_on_format() -> None:
    assert ResizeSettings(encode_format="png").encode_quality is None
    data = resize_and_encode(_two_halves(), ResizeSettings(encode_format="png")).data
    assert data is not None and data.startswith(b"\x89PNG")


def test_min_image_size_rejects_on_smaller_side() -> None:
    res = resize_and_encode(_two_halves(), ResizeSettings(min_image_size=201))
    assert (res.data, res.error) == (None, "image_too_small")
    assert (res.original_width, res.original_height) == (400, 200)
    assert resize_and_encode(_two_halves(), ResizeSettings(min_image_size=200)).ok


def test_max_aspect_ratio_rejects() -> None:
    res = resize_and_encode(_two_halves(), ResizeSettings(max_aspect_ratio=1.9))
    assert res.error == "aspect_ratio_too_large"
    assert resize_and_encode(_two_halves(), ResizeSettings(max_aspect_ratio=2.0)).ok


def test_max_image_area_rejects() -> None:
    res = resize_and_encode(_two_halves(), ResizeSettings(max_image_area=79_999))
    assert res.error == "image_area_too_large"


def test_non_rgb_input_is_matted_on_white() -> None:
    rgba = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    cfg = ResizeSettings(image_size=64, resize_mode="keep_ratio", encode_format="png")
    img = _decoded(resize_and_encode(rgba, cfg))
    assert img.mode == "RGB"
    assert img.getpixel((32, 32)) == WHITE


@pytest.mark.parametrize(("fmt", "pil_format"), [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")])
def test_encode_formats(fmt: str, pil_format: str) -> None:
    quality = 6 if fmt == "png" else 90
    data = encode(_two_halves(40, 20), fmt, quality)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == pil_format
        assert img.size == (40, 20)


def test_jpeg_quality_changes_size() -> None:
    img = _two_halves()
    assert len(encode(img, "jpg", 30)) < len(encode(img, "jpg", 95))


def test_invalid_settings_fail_fast() -> None:
    with pytest.raises(ValueError):
        ResizeSettings(resize_mode="fixed")
    with pytest.raises(ValueError):
        ResizeSettings(encode_format="gif")
    with pytest.raises(ValueError):
        ResizeSettings(encode_format="png", encode_quality=95)
    with pytest.raises(ValueError):
        ResizeSettings(downscale_interpolation="magic")
    with pytest.raises(ValueError):
        encode(_two_halves(), "bmp")


def test_string_mode_is_coerced() -> None:
    assert ResizeSettings(resize_mode="center_crop").resize_mode is ResizeMode.center_crop


# --- reduced decoding: same geometry, near-identical pixels -----------------------------------


def _photo_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """Gradients and soft shapes, JPEG-compressed: what reduced decoding meets in practice."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    img = Image.fromarray(arr.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.ellipse([x0, y0, x0 + width // 4, y0 + height // 4], fill=fill)
    buf = io.BytesIO()
    img.filter(ImageFilter.GaussianBlur(3)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _pixels(res: ResizeResult) -> np.ndarray:
    return np.asarray(_decoded(res).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("mode", ["keep_ratio", "keep_ratio_largest", "center_crop", "border"])
@pytest.mark.parametrize("size", [(640, 480), (641, 479), (333, 1000), (1500, 256)])
def test_reduced_decode_keeps_sizes_and_pixels_near_identical(
        mode: str, size: tuple[int, int]) -> None:
    data = _photo_jpeg(*size)
    cfg = ResizeSettings(image_size=128, resize_mode=mode, encode_format="png")
    full = decode_image(data)
    reduced = decode_image(data, reduce_to=reduced_decode_size(cfg))
    assert full.image is not None and reduced.image is not None
    assert reduced.image.width < full.image.width  # decoded at 1/2, 1/4 or 1/8
    assert (reduced.width, reduced.height) == (full.width, full.height) == size
    a = resize_and_encode(full.image, cfg)
    b = resize_and_encode(reduced.image, cfg, (reduced.width, reduced.height))
    assert (b.width, b.height, b.original_width, b.original_height) == (
        a.width, a.height, a.original_width, a.original_height)
    diff = np.abs(_pixels(a) - _pixels(b))
    assert diff.mean() < 2.0, diff.mean()  # about one level out of 255 on average
    assert np.percentile(diff, 95) <= 8


def test_reduced_decode_only_when_shrinking_and_enabled() -> None:
    border = ResizeSettings(image_size=256, resize_mode="border")
    need = reduced_decode_size(border)
    assert need is not None
    assert need(640, 480) == (256, 192) and need(480, 640) == (192, 256)
    assert need(256, 100) is None and need(200, 100) is None  # same size, or an upscale
    center = reduced_decode_size(ResizeSettings(image_size=256, resize_mode="center_crop"))
    assert center is not None and center(1000, 500) == (512, 256)
    assert reduced_decode_size(ResizeSettings(resize_mode="no")) is not None
    assert reduced_decode_size(ResizeSettings(resize_mode="no"))(4000, 3000) is None
    assert reduced_decode_size(ResizeSettings(reduced_decode=False)) is None


def test_original_size_drives_filters_and_geometry() -> None:
    small = _two_halves(200, 100)  # as if a 400x200 image had been decoded at 1/2
    res = resize_and_encode(small, ResizeSettings(image_size=64, min_image_size=150),
                            original_size=(400, 200))
    assert (res.original_width, res.original_height, res.width, res.height) == (400, 200, 64, 64)
    res = resize_and_encode(small, ResizeSettings(min_image_size=150), original_size=(400, 200))
    assert res.ok  # the filter saw 400x200, not the reduced 200x100
    cfg = ResizeSettings(image_size=128, resize_mode="keep_ratio_largest")
    res = resize_and_encode(_two_halves(150, 51), cfg, original_size=(300, 101))
    assert (res.width, res.height) == (128, 43)  # round(101 * 128 / 300); 150x51 gives 44
