"""`deparrot sync-score` through Spark: equal to a direct computation, trained > random."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jobs import report, sync_score
from jobs.errors import UserError
from jobs.ingest import METADATA_SCHEMA
from jobs.lake import Lake
from tests.support.tiny_clip_training import finetune_on_words, save_state_dict
from udfs import clip_models as cm
from udfs.sync_score import SyncModel

WORDS = ["parrot", "coffee", "sale", "open", "garden", "river", "pizza", "train",
         "music", "winter", "summer", "hotel"]


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> str:
    bundle = cm.load_clip(cm.TINY_MODEL_NAME, "random", "cpu", "fp32", random_init_ok=True)
    model, _losses = finetune_on_words(bundle, WORDS)
    return save_state_dict(model, tmp_path_factory.mktemp("ckpt") / "tiny-words.safetensors")


def _cfg(cfg, tmp_path, checkpoint, **kw):
    vocab = tmp_path / "vocab.csv"
    vocab.write_text("word,count\n" + "".join(f"{w},{9 - i}\n" for i, w in enumerate(WORDS))
                     + "\U0001f99c,1\n")  # an emoji DejaVu Sans cannot draw: skipped
    sc = dataclasses.replace(
        cfg.sync_score, vocabulary=str(vocab), random_init_ok=True, batch_size=8,
        models=(SyncModel(cm.TINY_MODEL_NAME, checkpoint, alias="trained"),
                SyncModel(cm.TINY_MODEL_NAME, "random", alias="random")), **kw)
    return dataclasses.replace(cfg, sync_score=sc)


# slow: the default run keeps the same computation without Spark
# (tests/udfs/test_sync_score.py: test_score_words_matches_direct_computation,
# test_trained_model_spots_text_better_than_random) and this job's settings and vocabulary
@pytest.mark.slow
def test_spark_path_equals_direct_computation_and_trained_beats_random(
        spark, cfg, tmp_path, trained_checkpoint, capsys):
    from udfs.sync_score import score_words

    cfg = _cfg(cfg, tmp_path, trained_checkpoint)
    result = sync_score.run(spark, cfg)
    assert result.words == len(WORDS) + 1
    lake = Lake(spark, cfg)
    rows = lake.read("sync_word_scores").where("model = 'trained'").collect()
    settings = cfg.sync_score.settings()
    bundle = cm.load_clip(cm.TINY_MODEL_NAME, trained_checkpoint, "cpu", "fp32")
    for style in settings.render.styles:
        got = {r["word"]: r["score"] for r in rows if r["style"] == style}
        want = score_words(bundle, WORDS, style, settings)
        np.testing.assert_allclose([got[w] for w in WORDS], want, atol=1e-5)
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert len(skipped) == 4 and {r["reason"] for r in skipped} == {"missing_glyph"}

    summary = {(r["model"], r["style"]): r for r in result.summary}
    trained, random = summary["trained", "all"], summary["random", "all"]
    assert (trained["count"], trained["skipped"]) == (4 * len(WORDS), 4)
    assert trained["mean"] > random["mean"] + 0.1  # the trained model reads its words
    assert summary["trained", "black_on_white"]["count"] == len(WORDS)
    assert "published 1-gram" in capsys.readouterr().out

    again = sync_score.run(spark, dataclasses.replace(cfg, sync_score=dataclasses.replace(
        cfg.sync_score, models=cfg.sync_score.models[1:])))  # one model re-scored: replaced
    assert lake.read("sync_scores").where("model = 'random'").count() == 5
    assert lake.read("sync_scores").where("model = 'trained'").count() == 5
    assert again.words == result.words

    lake.ensure("metadata", METADATA_SCHEMA)  # the report shows the histograms per model
    cfg = dataclasses.replace(cfg, report=dataclasses.replace(cfg.report,
                                                              out=str(tmp_path / "report")))
    page = report.run(spark, cfg)
    assert "sync_" in (tmp_path / "report" / "index.html").read_text() and page.figures >= 2


def test_vocabulary_from_ngrams_top_n_and_seeded_sample(spark, cfg, tmp_path):
    lake = Lake(spark, cfg)
    spark.createDataFrame([("caption_1gram", i + 1, w, 100 - i) for i, w in enumerate(WORDS)],
                          "vocab string, rank int, word string, count long") \
        .write.format("delta").save(lake.ref("ngrams").path)
    sc = dataclasses.replace(cfg.sync_score, top_n=3)
    words, name = sync_score.vocabulary(spark, lake, sc)
    assert [r["word"] for r in words.orderBy("word_rank").collect()] == WORDS[:3]
    assert name.endswith(":caption_1gram")
    sample = dataclasses.replace(cfg.sync_score, sample_n=5, seed=3)
    first = sorted(r["word"] for r in sync_score.vocabulary(spark, lake, sample)[0].collect())
    second = sorted(r["word"] for r in sync_score.vocabulary(spark, lake, sample)[0].collect())
    assert first == second and len(first) == 5


def test_bad_settings_are_one_line_errors(spark, cfg, tmp_path):
    with pytest.raises(UserError, match="refusing randomly initialised"):
        sync_score.run(spark, dataclasses.replace(cfg, sync_score=dataclasses.replace(
            cfg.sync_score, models=(SyncModel(cm.TINY_MODEL_NAME, "random"),))))
    with pytest.raises(UserError, match="no vocabulary"):
        sync_score.run(spark, cfg)
    with pytest.raises(UserError, match="not found"):
        sync_score.read_word_file(str(tmp_path / "missing.csv"))
