"""`score.decode_device: gpu` (udfs/gpu_decode.py): which JPEGs nvjpeg decodes, the CPU
fallback with decode_image's error reasons, and (on CUDA) CLIP scores within 0.01."""

from __future__ import annotations

import dataclasses
import io
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageFilter

from udfs import clip_models as cm
from udfs import gpu_decode, score
from udfs.ocr import OcrResult


def _no_text(device=None, cpu_threads=0):
    class NoText:
        def spot(self, images, recognize=False):
            return [OcrResult([], *img.shape[:2]) for img in images]

    return NoText()


def _settings(**kw) -> score.ScoreSettings:
    base = dict(clip_model=cm.TINY_MODEL_NAME, clip_pretrained="random",
                aesthetic_clip_model=cm.TINY_MODEL_NAME, aesthetic_clip_pretrained="random",
                aesthetic_weights="random", random_init_ok=True, batch_size=4,
                prefer_gpu=False, spotter=f"{__name__}:_no_text")
    base.update(kw)
    return score.ScoreSettings(**base)


def _photo(h: int, w: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
    return Image.fromarray(a).resize((w, h), Image.BICUBIC).filter(ImageFilter.GaussianBlur(1))


def _encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _rotated(img: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(img, exif=exif.tobytes())


def _frame(blobs: list[bytes]) -> pd.DataFrame:
    n = len(blobs)
    return pd.DataFrame({"sample_id": list(range(1, n + 1)), "image": blobs,
                         "text": [f"a photo of thing {i}" for i in range(n)],
                         "similarity": [None] * n, "aesthetic": [None] * n})


def _mixed_blobs() -> list[bytes]:
    """Baseline JPEGs of several sizes, grayscale, and what must stay on the CPU."""
    big = _photo(300, 200, 9)
    return [
        _encode(_photo(256, 256, 0), quality=90),
        _encode(_photo(224, 320, 1), quality=95),
        _encode(_photo(256, 256, 2).convert("L")),
        _encode(_photo(180, 240, 3), progressive=True),  # CPU
        _encode(_photo(64, 64, 4), "PNG"),  # CPU
        _rotated(_photo(120, 160, 5)),  # EXIF rotation: CPU
        _encode(big)[:-400],  # truncated: CPU says why
        b"<html>not found</html>",
    ]


def test_decode_device_is_validated():
    assert _settings().decode_device == "cpu"
    assert _settings(decode_device="gpu").decode_device == "gpu"
    with pytest.raises(ValueError, match="decode_device must be one of cpu, gpu"):
        _settings(decode_device="cuda")


def test_which_jpegs_go_to_the_gpu():
    blobs = _mixed_blobs()
    got = [gpu_decode.gpu_decodable(b, 40_000_000) for b in blobs]
    assert got == [(256, 256), (320, 224), (256, 256), None, None, None, None, None]
    assert gpu_decode.gpu_decodable(blobs[0], 256 * 256 - 1) is None  # max_pixels
    cmyk = _encode(_photo(64, 64, 6).convert("CMYK"))
    assert gpu_decode.gpu_decodable(cmyk, 40_000_000) is None
    assert gpu_decode.gpu_decodable(None, 40_000_000) is None


def test_gpu_decode_on_a_cpu_worker_warns_once_and_decodes_on_cpu():
    frame = _frame(_mixed_blobs())
    cpu = _settings()
    gpu = dataclasses.replace(cpu, decode_device="gpu")
    gpu_decode.warn_no_cuda.cache_clear()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = [r for f in score.score_batches(iter([frame.iloc[:4], frame.iloc[4:]]), gpu)
               for r in f.to_dict("records")]
    said = [w for w in seen if "decode_device is gpu" in str(w.message)]
    assert len(said) == 1 and issubclass(said[0].category, RuntimeWarning)
    want = [r for f in score.score_batches(iter([frame]), cpu) for r in f.to_dict("records")]
    assert [(r["sample_id"], r["status"], r["error"]) for r in got] == \
        [(r["sample_id"], r["status"], r["error"]) for r in want]
    assert sorted(r["error"] for r in got if r["error"]) == [
        "decode:html_not_image", "decode:truncated"]


def test_decode_part_mixes_device_and_cpu_images_and_crops_borders(monkeypatch):
    """The plumbing, with nvjpeg replaced by Pillow on CPU tensors: JPEGs it takes come
    back with a tensor (cropped like the array by remove_border), the rest from
    decode_image with its own error reasons."""
    taken = []

    def fake_decode_jpegs(blobs, device, max_pixels):
        tensors, arrays = [], []
        for b in blobs:
            ok = gpu_decode.gpu_decodable(b, max_pixels) is not None
            a = np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) if ok else None
            taken.append(ok)
            arrays.append(a)
            tensors.append(torch.from_numpy(a.copy()) if ok else None)
        return tensors, arrays

    monkeypatch.setattr(gpu_decode, "decode_jpegs", fake_decode_jpegs)
    # A 300x200 photo padded to 256x256 with white bars, as img2dataset's border mode.
    padded = Image.new("RGB", (256, 256), (255, 255, 255))
    padded.paste(_photo(256, 171, 7), (43, 0))
    blobs = [_encode(padded, quality=95)] + _mixed_blobs()
    frame = _frame(blobs).assign(original_width=[200] + [None] * 8,
                                 original_height=[300] + [None] * 8)
    s = _settings(decode_device="gpu")
    d = score.decode_part(frame, s, device=torch.device("cuda"))
    assert sum(taken) == 4
    want = score.decode_part(frame, _settings())
    assert d.ok_idx == want.ok_idx and [e["error"] for e in d.errors] == \
        [e["error"] for e in want.errors]
    assert len(d.device_images) == len(d.arrays)
    assert d.arrays[0].shape[1] < 256  # the bars are gone
    for a, t in zip(d.arrays, d.device_images, strict=True):
        if t is not None:
            assert tuple(t.shape) == a.shape and np.array_equal(t.numpy(), a)
    assert [t is not None for t in d.device_images] == [True, True, True, True, False,
                                                        False, False]


@pytest.mark.gpu
def test_gpu_decode_gives_the_same_clip_scores():
    """The same JPEGs through the score code, decoded by Pillow and by nvjpeg: CLIP
    scores (ViT-B/32 architecture) within 0.01, the same error rows."""
    frame = _frame(_mixed_blobs() + [_encode(_photo(256, 256, 10 + i), quality=85)
                                     for i in range(8)])
    cpu = _settings(clip_model="ViT-B-32", prefer_gpu=True, batch_size=8)
    gpu = dataclasses.replace(cpu, decode_device="gpu")
    decoded = score.decode_part(frame, gpu)
    assert sum(t is not None for t in decoded.device_images) == 11
    assert all(t.is_cuda for t in decoded.device_images if t is not None)
    want = [r for f in score.score_batches(iter([frame]), cpu) for r in f.to_dict("records")]
    got = [r for f in score.score_batches(iter([frame.iloc[:8], frame.iloc[8:]]), gpu)
           for r in f.to_dict("records")]
    assert [(r["sample_id"], r["status"], r["error"]) for r in got] == \
        [(r["sample_id"], r["status"], r["error"]) for r in want]
    diffs = [abs(a["clip_score"] - b["clip_score"]) for a, b in zip(want, got, strict=True)
             if a["status"] == "ok"]
    assert len(diffs) == 14 and max(diffs) <= 0.01, diffs
