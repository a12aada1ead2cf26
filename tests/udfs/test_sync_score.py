from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from tests.support.tiny_clip_training import TrainSettings, finetune_on_words, save_state_dict
from udfs import clip_models as cm
from udfs.render import STYLES, RenderSettings, render_word
from udfs.sync_score import (
    PUBLISHED_1GRAM,
    SYNC_OUTPUT_COLUMNS,
    SYNC_OUTPUT_SCHEMA_DDL,
    SyncModel,
    SyncSettings,
    score_words,
    summarize,
    sync_batches,
)

TINY = cm.TINY_MODEL_NAME
WORDS = [
    "parrot", "text", "photo", "sale", "hello", "world", "coffee", "music",
    "river", "house", "green", "water", "night", "apple", "paper", "cloud",
]  # fmt: skip
SETTINGS = SyncSettings(precision="fp32", prefer_gpu=False, cpu_threads=0, random_init_ok=True)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # The test machine's cores are shared: one thread avoids oversubscription stalls.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bundle() -> cm.ClipBundle:
    return cm.load_clip(TINY, None, "cpu", "fp32", random_init_ok=True)


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "tiny-seed1.safetensors"
    return cm.save_random_checkpoint(TINY, path, seed=1)


def test_settings_validation():
    assert SyncSettings().template == "{}" and SyncSettings().render == RenderSettings()
    assert SyncSettings(template="a photo of {}").prompt("parrot") == "a photo of parrot"
    assert SyncSettings(template="{} {x}").prompt("a") == "a {x}"
    for kwargs, match in [
        ({"template": "a photo"}, "template"),
        ({"template": "{} and {}"}, "template"),
        ({"batch_size": 0}, "batch_size"),
        ({"precision": "int8"}, "precision"),
        ({"cpu_threads": -1}, "cpu_threads"),
    ]:
        with pytest.raises(ValueError, match=match):
            SyncSettings(**kwargs)
    assert SyncModel("ViT-B-32", "openai").label == "ViT-B-32:openai"
    assert SyncModel("ViT-B-32", "/ckpt/epoch_32.pt", alias="ours").label == "ours"
    with pytest.raises(ValueError, match="pretrained"):
        SyncModel("ViT-B-32", "")


def test_output_schema_matches_columns():
    names = [part.split()[0] for part in SYNC_OUTPUT_SCHEMA_DDL.split(",")]
    assert tuple(names) == SYNC_OUTPUT_COLUMNS


def test_published_numbers():
    assert PUBLISHED_1GRAM["100M subset (paper)"] == (0.163, 0.0659)
    assert PUBLISHED_1GRAM["OpenAI CLIP WIT-400M"] == (0.317, 0.0305)
    assert len(PUBLISHED_1GRAM) == 5


@pytest.mark.parametrize("template", ["{}", "a photo of {}"])
def test_score_words_matches_direct_computation(bundle, template):
    settings = SyncSettings(
        template=template, batch_size=3, precision="fp32", prefer_gpu=False, random_init_ok=True
    )
    words = ["parrot", "", "Hello World", "日本", "gy", "sale"]
    got = score_words(bundle, words, "white_on_gray", settings)
    assert got.dtype == np.float32 and got.shape == (6,)
    assert np.isnan(got[[1, 3]]).all()
    ok = [w for i, w in enumerate(words) if i not in (1, 3)]
    img = cm.encode_images(bundle, [render_word(w, "white_on_gray") for w in ok])
    txt = cm.encode_texts(bundle, [template.format(w) for w in ok])
    want = (img * txt).sum(axis=1) / (np.linalg.norm(img, axis=1) * np.linalg.norm(txt, axis=1))
    np.testing.assert_allclose(got[[0, 2, 4, 5]], want, atol=1e-5)
    with pytest.raises(ValueError, match="style"):
        score_words(bundle, words, "red_on_blue", settings)


@pytest.mark.slow  # default: test_score_words_matches_direct_computation
def test_trained_model_spots_text_better_than_random(bundle, tmp_path):
    """A model trained to read rendered words must get a clearly higher Sync. Score."""
    model, losses = finetune_on_words(bundle, WORDS, RenderSettings(), TrainSettings(seed=0))
    assert np.mean(losses[-20:]) < 0.5 * math.log(16) < losses[0]
    path = save_state_dict(model, tmp_path / "tiny-read.safetensors")
    trained = cm.load_clip(TINY, path, "cpu", "fp32")
    assert not trained.random_init
    styles = RenderSettings().styles
    rnd = np.concatenate([score_words(bundle, WORDS, s, SETTINGS) for s in styles])
    got = np.concatenate([score_words(trained, WORDS, s, SETTINGS) for s in styles])
    n = rnd.size
    assert n == 64 and not np.isnan(rnd).any() and not np.isnan(got).any()
    assert got.mean() - rnd.mean() > 0.1
    assert got.mean() > rnd.mean() + 2 * rnd.std() / math.sqrt(n)
    # Every style on its own improves too (the text tower reads the same word for all).
    for k in range(len(styles)):
        assert got[k * 16 : (k + 1) * 16].mean() > rnd[k * 16 : (k + 1) * 16].mean() + 0.1

    # End to end through the mapInPandas body and the summary.
    models = (SyncModel(TINY, "random"), SyncModel(TINY, path, alias="trained"))
    frame = pd.DataFrame({"word": WORDS, "word_rank": np.arange(1, 17, dtype=np.int64)})
    table = summarize(pd.concat(sync_batches(iter([frame]), models, SETTINGS)))
    overall = table[table["style"] == "all"].set_index("model")
    assert overall.loc["trained", "mean"] == pytest.approx(float(got.mean()), abs=1e-5)
    assert overall.loc[f"{TINY}:random", "mean"] == pytest.approx(float(rnd.mean()), abs=1e-5)
    assert overall["count"].tolist() == [64, 64]


def test_sync_batches_rows_and_skips(bundle, other_checkpoint):
    settings = SyncSettings(batch_size=2, precision="fp32", prefer_gpu=False, random_init_ok=True)
    models = (SyncModel(TINY, "random"), SyncModel(TINY, other_checkpoint, alias="seed1"))
    batches = [
        pd.DataFrame({"word": ["parrot", "", "日本"], "word_rank": [1, 2, 3]}),
        pd.DataFrame({"word": ["hello", "a\tb", "world", None], "word_rank": [4, 5, 6, 7]}),
    ]
    out = list(sync_batches(iter(batches), models, settings))
    assert len(out) == 2
    df = pd.concat(out, ignore_index=True)
    assert tuple(df.columns) == SYNC_OUTPUT_COLUMNS
    assert len(df) == 7 * 2 * 4
    assert not df.duplicated(["model", "style", "word_rank"]).any()
    assert set(df["model"]) == {f"{TINY}:random", "seed1"}
    assert df["word_rank"].dtype == np.int64

    per_word = df.groupby("word_rank").agg(status=("status", "unique"), reason=("reason", "unique"))
    expected = {2: "empty", 3: "missing_glyph", 5: "control_char", 7: "empty"}
    for rank in range(1, 8):
        status, reason = per_word.loc[rank, "status"], per_word.loc[rank, "reason"]
        assert list(status) == (["skipped"] if rank in expected else ["ok"])
        assert list(reason) == [expected.get(rank)]
    skipped = df[df["status"] == "skipped"]
    assert skipped["score"].isna().all() and len(skipped) == 4 * 2 * 4
    assert df.loc[df["status"] == "ok", "score"].notna().all()

    # Scores equal score_words for the same model and style.
    seed1 = cm.load_clip(TINY, other_checkpoint, "cpu", "fp32")
    for label, b in ((f"{TINY}:random", bundle), ("seed1", seed1)):
        for style in STYLES:
            rows = df[(df["model"] == label) & (df["style"] == style) & (df["status"] == "ok")]
            want = score_words(b, rows["word"].tolist(), style, settings)
            np.testing.assert_allclose(rows["score"].to_numpy(), want, atol=1e-6)
    assert not np.allclose(
        df.loc[(df["model"] == "seed1") & (df["status"] == "ok"), "score"].to_numpy(),
        df.loc[(df["model"] == f"{TINY}:random") & (df["status"] == "ok"), "score"].to_numpy(),
    )


def test_sync_batches_needs_distinct_models():
    with pytest.raises(ValueError, match="at least one"):
        list(sync_batches(iter([]), (), SETTINGS))
    twice = (SyncModel(TINY, "random"), SyncModel(TINY, "random"))
    with pytest.raises(ValueError, match="unique"):
        list(sync_batches(iter([]), twice, SETTINGS))
    empty = pd.DataFrame({"word": pd.Series([], dtype=object), "word_rank": []})
    assert list(sync_batches(iter([empty]), twice[:1], SETTINGS)) == []


def test_random_weights_are_refused_unless_allowed():
    strict = SyncSettings(precision="fp32", prefer_gpu=False, cpu_threads=0)
    frame = pd.DataFrame({"word": ["a"], "word_rank": [1]})
    with pytest.raises(ValueError, match=re.escape("random_init_ok=True")):
        list(sync_batches(iter([frame]), (SyncModel(TINY, "random"),), strict))


def test_summarize_matches_numpy():
    rng = np.random.default_rng(0)
    rows = []
    for model in ("m1", "m2"):
        for style in STYLES:
            for rank in range(10):
                skipped = rank in (3, 7) or (model == "m2" and style == "white_on_gray")
                rows.append(
                    {
                        "model": model,
                        "style": style,
                        "word": f"w{rank}",
                        "word_rank": rank,
                        "status": "skipped" if skipped else "ok",
                        "reason": "missing_glyph" if skipped else None,
                        "score": np.nan if skipped else float(rng.normal(0.3, 0.05)),
                    }
                )
    df = pd.DataFrame(rows)
    table = summarize(df)
    assert list(table.columns) == ["model", "style", "mean", "std", "count", "skipped"]
    assert table[["model", "style"]].values.tolist() == [
        [m, s] for m in ("m1", "m2") for s in [*STYLES, "all"]
    ]
    for _, row in table.iterrows():
        part = df[df["model"] == row["model"]]
        if row["style"] != "all":
            part = part[part["style"] == row["style"]]
        scores = part.loc[part["status"] == "ok", "score"].to_numpy()
        assert row["count"] == scores.size
        assert row["skipped"] == (part["status"] == "skipped").sum()
        if scores.size:
            assert row["mean"] == pytest.approx(np.mean(scores), abs=1e-12)
            assert row["std"] == pytest.approx(np.std(scores), abs=1e-12)  # ddof=0
        else:
            assert np.isnan(row["mean"]) and np.isnan(row["std"])
    m2_gray = table[(table["model"] == "m2") & (table["style"] == "white_on_gray")].iloc[0]
    assert m2_gray["count"] == 0 and m2_gray["skipped"] == 10
