"""The score stage's executor side without Spark: the text rule in the rows, the
threaded decode, and the GPU data path (run on CPU tensors here; `gpu` tests on CUDA)."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageFilter

from udfs import clip_models as cm
from udfs import score
from udfs.ocr import OcrBox, OcrResult, TextRule

TINY = cm.TINY_MODEL_NAME


def _settings(**kw) -> score.ScoreSettings:
    base = dict(clip_model=TINY, clip_pretrained="random", aesthetic_clip_model=TINY,
                aesthetic_clip_pretrained="random", aesthetic_weights="random",
                random_init_ok=True, batch_size=4, prefer_gpu=False)
    base.update(kw)
    return score.ScoreSettings(**base)


class ReadingSpotter:
    """One box per image, read as `reads[i % len(reads)]` with confidence 0.9."""

    def __init__(self, reads=("...",), device=None, cpu_threads=0):
        self.reads = list(reads)

    def spot(self, images, recognize=False):
        out = []
        for i, img in enumerate(images):
            h, w = img.shape[:2]
            text = self.reads[i % len(self.reads)] if recognize else None
            out.append(OcrResult([OcrBox([(0, 0), (w / 2, 0), (w / 2, h / 2), (0, h / 2)],
                                         text, 0.9)], h, w))
        return out


def _images(n: int = 4, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(64, 64), (80, 120), (64, 64), (150, 90)]
    out = []
    for i in range(n):
        a = rng.integers(0, 256, (*shapes[i % len(shapes)], 3), dtype=np.uint8)
        out.append(np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(2))))
    return out


def _frame(images: list[np.ndarray]) -> pd.DataFrame:
    data = []
    for a in images:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG")
        data.append(buf.getvalue())
    data.append(b"not an image")
    n = len(data)
    return pd.DataFrame({"sample_id": list(range(1, n + 1)), "image": data,
                         "text": ["a photo"] * n, "similarity": [None] * n,
                         "aesthetic": [None] * n})


@pytest.mark.parametrize(("reads", "recognize", "want"), [
    (["...", "", "-"], "texted", [False, False, False]),  # boxes, but nothing read
    (["SALE", "...", "7"], "texted", [True, False, True]),
    (["...", "...", "..."], "none", [True, True, True]),  # detection only: boxes count
    (["中文", "!", "é"], "all", [True, False, True]),
])
def test_has_text_follows_the_text_rule(reads, recognize, want):
    s = _settings(spotter=f"{__name__}:ReadingSpotter", spotter_options={"reads": reads},
                  recognize=recognize)
    rows = score.score_images([1, 2, 3], _images(3), ["a", "b", "c"], [None] * 3, [None] * 3,
                              s)
    assert [r["has_text"] for r in rows] == want
    # ocr_boxes keeps every box (the evidence); ocr_box_count counts the rule's boxes.
    assert all(len(r["ocr_boxes"]) == 1 for r in rows)
    assert [r["ocr_box_count"] for r in rows] == [int(w) for w in want]


def test_text_rule_threshold_from_settings():
    s = _settings(spotter=f"{__name__}:ReadingSpotter", spotter_options={"reads": ["A"]},
                  text_rule=TextRule(min_confidence=0.95))  # the spotter reads at 0.9
    (row,) = score.score_images([1], _images(1), ["a"], [None], [None], s)
    assert not row["has_text"] and row["ocr_boxes"][0]["text"] == "A"
    assert row["ocr_text"] == "" and row["ocr_box_count"] == 0  # the rule's text only
    with pytest.raises(ValueError, match="text_rule.min_confidence"):
        _settings(text_rule=TextRule(min_confidence=1.5))


def test_threaded_decode_gives_the_same_rows():
    frame = _frame(_images(4))
    inline = _settings(spotter=f"{__name__}:ReadingSpotter", decode_threads=0)
    threaded = dataclasses.replace(inline, decode_threads=2, batch_size=2)
    assert score.decode_threads(inline, "cpu") == 0 and score.decode_threads(inline, "cuda") > 0
    def rows(frames):
        out = [r for f in frames for r in f.to_dict("records")]
        return sorted(out, key=lambda r: r["sample_id"])

    want = rows(score.score_batches(iter([frame]), inline))
    got = rows(score.score_batches(iter([frame.iloc[:3], frame.iloc[3:]]), threaded))
    assert [r["sample_id"] for r in got] == [r["sample_id"] for r in want] == [1, 2, 3, 4, 5]
    assert [r["status"] for r in got] == [r["status"] for r in want] == ["ok"] * 4 + ["error"]
    assert [r["has_text"] for r in got] == [r["has_text"] for r in want]
    for a, b in zip(want[:4], got[:4], strict=True):
        np.testing.assert_allclose(a["image_embedding"], b["image_embedding"], atol=1e-5)


def test_device_preprocessing_matches_pillow():
    """The GPU preprocessing code, run on CPU tensors, against open_clip's PIL path."""
    bundle = cm.load_clip(TINY, None, "cpu", "fp32", random_init_ok=True)
    images = _images(4)
    on_device = cm.upload_images(images, "cpu")
    assert [tuple(t.shape) for t in on_device] == [a.shape for a in images]
    for mode in ("shortest", "squash", "longest"):
        b = dataclasses.replace(bundle, resize_mode=mode)
        got = cm.preprocess_on_device(b, on_device)
        want = cm.image_tensor_batch(images, b.preprocess_size, b.mean, b.std, resize_mode=mode)
        assert got.shape == want.shape and got.is_contiguous(memory_format=torch.channels_last)
        assert float((got - want).abs().mean()) < 0.005  # Pillow rounds between passes
        with torch.inference_mode():
            e_got = torch.nn.functional.normalize(bundle.model.encode_image(got), dim=-1)
            e_want = torch.nn.functional.normalize(bundle.model.encode_image(want), dim=-1)
        assert float((e_got * e_want).sum(-1).min()) > 0.999


@pytest.mark.gpu
def test_gpu_data_path_matches_cpu():
    """On CUDA: one upload, GPU preprocessing, channels-last fp16 towers, the batched
    spotter fed from the uploaded images; the rows agree with the CPU path."""
    frame = _frame(_images(4))
    cpu = _settings()
    gpu = dataclasses.replace(cpu, prefer_gpu=True)
    want = score._score_part(frame, cpu)
    got = score._score_part(frame, gpu)
    assert score.models_for(gpu).device.type == "cuda"
    for a, b in zip(want, got, strict=True):
        assert (a["sample_id"], a["status"], a["has_text"]) == (
            b["sample_id"], b["status"], b["has_text"])
        if a["status"] == "ok":
            np.testing.assert_allclose(a["image_embedding"], b["image_embedding"], atol=3e-2)


def _spotter_none(device=None, cpu_threads=0):
    class NoText:
        def spot(self, images, recognize=False):
            return [OcrResult([], *img.shape[:2]) for img in images]

    return NoText()


def test_a_border_padded_copy_scores_like_the_unpadded_image():
    """img2dataset's border mode pads with white bars; LAION scored the original. With
    the bars removed (from the recorded original size) the CLIP score of the padded copy
    matches the unpadded one, with the real ViT-B-32 architecture (random weights)."""
    from jobs.sample import photo_image
    from udfs.resize import ResizeMode, ResizeSettings, resize_image

    photo = photo_image(np.random.default_rng(5), 400).resize((400, 250))
    views = {}
    for mode in (ResizeMode.border, ResizeMode.keep_ratio_largest):
        img = resize_image(photo, ResizeSettings(image_size=224, resize_mode=mode))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=95)
        views[mode] = buf.getvalue()
    frame = pd.DataFrame({
        "sample_id": [1, 2], "image": [views[ResizeMode.border],
                                       views[ResizeMode.keep_ratio_largest]],
        "text": ["a photo of a forest", "a photo of a forest"], "similarity": [None, None],
        "aesthetic": [5.0, 5.0], "original_width": [400, 400], "original_height": [250, 250]})
    base = dict(clip_model="ViT-B-32", clip_pretrained="random", aesthetic_clip_model=TINY,
                aesthetic_clip_pretrained="random", aesthetic_weights="random",
                random_init_ok=True, reuse_aesthetic=True, prefer_gpu=False, batch_size=2,
                spotter="tests.udfs.test_score:_spotter_none", precision="fp32")
    removed = pd.concat(score.score_batches(iter([frame]), score.ScoreSettings(**base)))
    kept = pd.concat(score.score_batches(iter([frame]), score.ScoreSettings(
        **base, remove_border=False)))
    assert abs(removed["clip_score"][0] - removed["clip_score"][1]) < 0.01
    emb = np.stack(removed["image_embedding"].tolist())
    padded = np.stack(kept["image_embedding"].tolist())
    same = float(emb[0] @ emb[1])
    assert same > 0.99 and same > float(padded[0] @ padded[1])  # the bars made a difference


def test_remove_border_leaves_other_resize_modes_alone():
    from udfs.resize import remove_border

    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)  # a centre crop, wide source
    assert remove_border(crop, (400, 250)) is crop
    padded = np.full((224, 224, 3), 255, np.uint8)
    padded[42:182] = rng.integers(0, 256, (140, 224, 3), dtype=np.uint8)
    assert remove_border(padded, (400, 250)).shape == (140, 224, 3)
    assert remove_border(padded, None) is padded and remove_border(padded, (300, 300)) is padded


def _mixed_frame() -> pd.DataFrame:
    """Posters with words of several lengths, photos, and photos with a small sign: crops
    of many aspect ratios, so recognition batches mix them differently per order."""
    from PIL import ImageDraw

    from jobs.sample import photo_image, text_image

    rng = np.random.default_rng(11)
    images = [text_image(rng, 256, w) for w in ("OPEN", "GRAND OPENING TODAY", "SALE 50",
                                                "K", "FREE WIFI HERE", "NO")]
    for k in range(4):
        photo = photo_image(rng, 256)
        if k % 2:
            ImageDraw.Draw(photo).text((20 + 30 * k, 200), "EXIT 7" * (k // 2 + 1),
                                       fill=(255, 255, 255))
        images.append(photo)
    data = []
    for img in images:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=90)
        data.append(buf.getvalue())
    n = len(data)
    return pd.DataFrame({"sample_id": list(range(1, n + 1)), "image": data,
                         "text": ["a caption"] * n, "similarity": [None] * n,
                         "aesthetic": [5.0] * n})


def _by_id(frames) -> dict:
    rows = pd.concat(list(frames)).to_dict("records")
    return {r["sample_id"]: r for r in rows}


@pytest.mark.slow  # in Spark, the default run: test_each_image_goes_through_the_models_once
def test_per_image_results_do_not_depend_on_batches_order_or_chunks():
    frame = _mixed_frame()
    base = dict(reuse_aesthetic=True, spotter="batched")
    runs = {
        "batch 16": _by_id(score.score_batches(iter([frame]), _settings(batch_size=16, **base))),
        "batch 3, reversed": _by_id(score.score_batches(
            iter([frame.iloc[::-1]]), _settings(batch_size=3, **base))),
        "chunks of 2, shuffled": _by_id(
            out for start in range(0, len(frame), 2)
            for out in score.score_batches(
                iter([frame.sample(frac=1, random_state=4).iloc[start:start + 2]]),
                _settings(batch_size=2, **base))),
        "one by one, small rec batches": _by_id(score.score_batches(
            iter([frame]), _settings(batch_size=1, spotter="batched", reuse_aesthetic=True,
                                     spotter_options={"rec_batch_size": 1,
                                                      "det_batch_size": 1}))),
    }
    reference = runs.pop("batch 16")
    assert sum(r["has_text"] for r in reference.values()) >= 6  # the posters were read
    for name, got in runs.items():
        assert got.keys() == reference.keys(), name
        for sid, want in reference.items():
            row = got[sid]
            assert row["has_text"] == want["has_text"], (name, sid)
            assert row["ocr_text"] == want["ocr_text"], (name, sid)
            assert [b["polygon"] for b in row["ocr_boxes"]] == \
                [b["polygon"] for b in want["ocr_boxes"]], (name, sid)
            assert abs(row["clip_score"] - want["clip_score"]) < 1e-5, (name, sid)


def _poster_sign_photo() -> list[np.ndarray]:
    """A poster (its text is the whole picture), a photo with a small sign, a plain photo."""
    from PIL import ImageDraw, ImageFont

    from jobs.sample import photo_image, text_image

    rng = np.random.default_rng(21)
    poster = text_image(rng, 256, "GRAND OPENING")
    sign = photo_image(rng, 256)
    draw = ImageDraw.Draw(sign)
    draw.rectangle([150, 190, 240, 226], fill=(20, 20, 25))
    draw.text((156, 194), "EXIT", font=ImageFont.load_default(size=26), fill=(245, 245, 240))
    return [np.asarray(img.convert("RGB")) for img in (poster, sign, photo_image(rng, 256))]


@pytest.mark.slow  # default: test_masked_clip_score_with_reused_similarity_and_on_error_rows
def test_masked_clip_score_is_the_clip_score_of_the_masked_image():
    """Real OCR boxes; the masked score equals B/32 on the explicitly masked pixels."""
    from udfs.masking import mask_text
    from udfs.parrot import cotr_normalised

    arrays = _poster_sign_photo()
    captions = ["grand opening", "a street with an exit sign", "a photo of a forest"]
    s = _settings(spotter="batched", reuse_aesthetic=True)
    rows = score.score_images([1, 2, 3], arrays, captions, [None] * 3, [5.0] * 3, s)
    assert [r["ocr_box_count"] > 0 for r in rows] == [True, True, False]
    assert rows[1]["ocr_text_area"] < 0.1 < rows[0]["ocr_text_area"]  # a small sign
    b32 = score.models_for(s).b32
    for row, arr, caption in zip(rows[:2], arrays[:2], captions[:2], strict=True):
        masked = mask_text(arr, [b["polygon"] for b in row["ocr_boxes"]], s.text_mask)
        assert (masked != arr).any()
        want = cm.clip_scores(cm.encode_images(b32, [masked]), cm.encode_texts(b32, [caption]))
        assert row["masked_clip_score"] == pytest.approx(float(want[0]), abs=1e-5)
        assert row["masked_clip_score"] != pytest.approx(row["clip_score"], abs=1e-7)
    assert rows[2]["masked_clip_score"] == rows[2]["clip_score"]  # no boxes: unmasked
    # The poster's caption repeats its text (the parrots policy's measure); the photo's not.
    assert "OPENING" in rows[0]["ocr_text"].upper()
    assert cotr_normalised(captions[0], rows[0]["ocr_text"]) > 0
    assert cotr_normalised("a photo of a forest", rows[0]["ocr_text"]) == 0

    off = score.score_images([1, 2, 3], arrays, captions, [None] * 3, [5.0] * 3,
                             dataclasses.replace(s, masked_clip_score=False))
    assert [r["masked_clip_score"] for r in off] == [None] * 3
    assert [r["clip_score"] for r in off] == pytest.approx([r["clip_score"] for r in rows],
                                                           abs=1e-6)


def test_masked_clip_score_with_reused_similarity_and_on_error_rows():
    """LAION's similarity reused: the caption is still encoded for the masked score;
    an undecodable image's row has none."""
    frame = _frame(_images(2))
    s = _settings(spotter=f"{__name__}:ReadingSpotter", spotter_options={"reads": ["A"]},
                  reuse_similarity=True)
    frame["similarity"] = [0.31, 0.32, None]
    rows = {r["sample_id"]: r for f in score.score_batches(iter([frame]), s)
            for r in f.to_dict("records")}
    assert [rows[i]["clip_score"] for i in (1, 2)] == [0.31, 0.32]
    assert all(-1 <= rows[i]["masked_clip_score"] <= 1 for i in (1, 2))
    assert rows[3]["status"] == "error" and pd.isna(rows[3]["masked_clip_score"])  # null
