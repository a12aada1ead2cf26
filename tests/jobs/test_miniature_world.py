"""The miniature world: its three kinds of pairs, and what the real OCR sees in them."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs.config import MiniatureConfig, SampleConfig
from jobs.miniature_world import (
    VOCABULARY,
    WorldMix,
    generate_world,
    mixed_image,
    parrot_image,
    visual_classes,
    visual_eval_set,
    visual_image,
)
from jobs.sample import generate


def test_world_has_the_mix_and_captions_of_each_kind(tmp_path):
    cfg = SampleConfig(out=str(tmp_path / "w"), rows=100, seed=3, image_size=96,
                       kind="miniature")
    summary = generate(cfg)  # `deparrot sample --set sample.kind=miniature`
    assert summary.rows == 100
    assert summary.kinds == {"visual": 40, "parrot": 40, "mixed": 20}
    truth = pq.read_table(tmp_path / "w" / "truth.parquet").to_pylist()
    meta = {r["SAMPLE_ID"]: r for r in pq.read_table(tmp_path / "w" / "metadata").to_pylist()}
    classes = set(visual_classes())
    for t in truth:
        caption = meta[t["SAMPLE_ID"]]["TEXT"]
        if t["kind"] == "parrot":
            assert caption == t["word"] and caption in VOCABULARY
        else:
            assert caption in classes
            assert (t["word"] in VOCABULARY) == (t["kind"] == "mixed")
        with Image.open(tmp_path / "w" / "images" / f"{t['SAMPLE_ID']}.jpg") as img:
            assert img.size == (96, 96)


def test_world_is_deterministic_per_seed(tmp_path):
    a = generate_world(SampleConfig(out=str(tmp_path / "a"), rows=30, seed=1, image_size=64))
    b = generate_world(SampleConfig(out=str(tmp_path / "b"), rows=30, seed=1, image_size=64))
    assert a.kinds == b.kinds
    for name in sorted(p.name for p in (tmp_path / "a" / "images").iterdir()):
        assert (tmp_path / "a" / "images" / name).read_bytes() == \
            (tmp_path / "b" / "images" / name).read_bytes()


def test_mix_shares_are_checked():
    with pytest.raises(ValueError, match="at most 1"):
        MiniatureConfig(parrot_share=0.7, mixed_share=0.5)
    with pytest.raises(ValueError, match="policies"):
        MiniatureConfig(policies=["everything"])
    assert WorldMix().parrot + WorldMix().mixed < 1


def test_held_out_visual_set_covers_every_class_and_differs_from_training_draws():
    images, labels = visual_eval_set(64, per_class=2, seed=0)
    assert sorted(set(labels)) == list(range(len(visual_classes())))
    again, _ = visual_eval_set(64, per_class=2, seed=0)
    assert all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(images, again, strict=True))
    rng = np.random.default_rng(0)
    train_draw = visual_image(rng, 64, visual_classes()[0])
    assert not np.array_equal(np.asarray(train_draw), np.asarray(images[0]))


@pytest.mark.slow  # the real spotter over the whole world: also `deparrot miniature`
def test_the_real_ocr_finds_parrot_and_mixed_text_and_little_in_visual_images():
    """The world is only useful if the pipeline's spotter sees its text (any_text drops
    parrot and mixed pairs) and not text in the visual images: the score stage's
    decision (read, then the text rule)."""
    from udfs.ocr import TextRule, make_spotter

    spotter = make_spotter(options={"det_limit_side_len": 256}, device="cpu", cpu_threads=1)
    rng = np.random.default_rng(5)
    classes = visual_classes()
    found = {}
    for kind in ("parrot", "mixed", "visual"):
        images = []
        for _ in range(12):
            word, caption = str(rng.choice(VOCABULARY)), str(rng.choice(classes))
            img = (parrot_image(rng, 128, word) if kind == "parrot" else
                   mixed_image(rng, 128, caption, word) if kind == "mixed" else
                   visual_image(rng, 128, caption))
            images.append(np.asarray(img))
        found[kind] = np.mean([TextRule().has_text(r)
                               for r in spotter.spot(images, recognize=True)])
    assert found["parrot"] >= 0.8 and found["mixed"] >= 0.8
    assert found["visual"] <= 0.2
