import dataclasses
import functools
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs import score
from jobs.download import TABLE_SCHEMA as IMAGES_TABLE
from jobs.ingest import METADATA_SCHEMA
from jobs.lake import Lake
from jobs.sample import photo_image, text_image
from tests.support.fast_ocr import FAST_OCR
from udfs.clip_models import TINY_MODEL_NAME, save_random_checkpoint


def _jpeg(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture
def scored_inputs(spark, cfg):
    """Metadata and images tables with text images, plain photos and one corrupt file."""
    rng = np.random.default_rng(3)
    images = {
        1: (_jpeg(text_image(rng, 256, "GRAND OPENING")), "GRAND OPENING poster", 0.33, 6.1),
        2: (_jpeg(text_image(rng, 256, "FREE WIFI")), "FREE WIFI sign", None, None),
        3: (_jpeg(photo_image(rng, 256)), "a photo of a red flower", 0.31, None),
        4: (_jpeg(photo_image(rng, 256)), "a picture of a forest path", None, 4.9),
        5: (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "corrupt bytes in the table", None, None),
    }
    lake = Lake(spark, cfg)
    lake.ensure("metadata", METADATA_SCHEMA)
    lake.ensure("images", IMAGES_TABLE)
    meta = [(sid, f"http://x.example/{sid}.jpg", text, 256.0, 256.0, sim, aes, "laion400m",
             "f", sid) for sid, (_, text, sim, aes) in images.items()]
    spark.createDataFrame(
        meta, "sample_id long, url string, text string, width double, height double, "
              "similarity double, aesthetic double, family string, source_file string, "
              "source_row long",
    ).writeTo(lake.ref("metadata").name).append()
    rows = [(sid, data, "ok") for sid, (data, *_rest) in images.items()]
    spark.createDataFrame(rows, "sample_id long, image binary, status string") \
        .writeTo(lake.ref("images").name).append()
    return cfg


@functools.cache
def _tiny_checkpoint() -> str:
    """One tiny random CLIP checkpoint for the test run: equal settings across tests, so
    the Python workers keep their loaded models from one test to the next."""
    folder = tempfile.mkdtemp(prefix="deparrot-test-models-")
    return save_random_checkpoint(TINY_MODEL_NAME, Path(folder) / "b32.safetensors")


def _score_cfg(cfg, tmp_path, **kw):
    base = dict(clip_model=TINY_MODEL_NAME, clip_pretrained=_tiny_checkpoint(),
                aesthetic_clip_model=TINY_MODEL_NAME, aesthetic_clip_pretrained="random",
                aesthetic_weights="", random_init_ok=True, batch_size=4, arrow_batch_size=8)
    if "spotter" not in kw:  # the real spotter, test-sized unless a test names its options
        base["spotter_options"] = FAST_OCR
    base.update(kw)
    return dataclasses.replace(cfg, score=dataclasses.replace(cfg.score, **base))


def test_score_stage_through_spark(spark, scored_inputs, tmp_path):
    from jobs.session import ARROW_BATCH

    cfg = _score_cfg(scored_inputs, tmp_path, reuse_similarity=True, reuse_aesthetic=True,
                     spotter_options={})  # the default spotter setting, in Spark
    before = spark.conf.get(ARROW_BATCH, None)
    report = score.run(spark, cfg)
    # Its Arrow batch size was the stage's own: the next stage of `deparrot run` in this
    # session sees the setting as it was.
    assert spark.conf.get(ARROW_BATCH, None) == before
    assert report.pending == 5 and report.ok == 4
    assert report.errors == {"decode:decode_error": 1}
    assert report.random_init  # the aesthetic head is random: the run must say so

    lake = Lake(spark, cfg)
    got = {r["sample_id"]: r for r in lake.read("scores").collect()}
    assert got[1]["has_text"] and got[2]["has_text"]
    assert got[1]["ocr_box_count"] >= 1 and got[1]["ocr_text_area"] > 0
    assert "OPENING" in got[1]["ocr_text"].upper()  # recognised where boxes were found
    assert not got[3]["has_text"] and not got[4]["has_text"]
    # A plain image: no box counts (a weak candidate over the whole image may stay in
    # ocr_boxes as evidence, read as nothing).
    assert got[3]["ocr_text"] == "" and got[3]["ocr_box_count"] == 0
    assert got[3]["ocr_text_area"] == 0.0
    assert all(not b["text"] for b in got[3]["ocr_boxes"])
    # Reused metadata scores where present, computed ones elsewhere.
    assert (got[1]["clip_score"], got[1]["clip_score_source"]) == (0.33, "metadata")
    assert got[2]["clip_score_source"] == "computed" and -1 <= got[2]["clip_score"] <= 1
    assert (got[4]["aesthetic_score"], got[4]["aesthetic_source"]) == (4.9, "metadata")
    assert got[3]["aesthetic_source"] == "computed"
    emb = np.array(got[3]["image_embedding"])
    assert emb.shape == (32,) and abs(np.linalg.norm(emb) - 1) < 1e-4
    # T-MARS: masked scores where boxes were found (computed even when the clip score is
    # LAION's), the clip score itself where none were, null on the error row.
    assert -1 <= got[1]["masked_clip_score"] <= 1 and got[1]["masked_clip_score"] != 0.33
    assert got[3]["masked_clip_score"] == got[3]["clip_score"]
    assert got[5]["status"] == "error" and got[5]["masked_clip_score"] is None
    rejects = lake.read("rejects").where("stage = 'score'").collect()
    assert [(r["sample_id"], r["reason"]) for r in rejects] == [(5, "decode:decode_error")]
    props = {r["key"]: r["value"] for r in
             spark.sql(f"SHOW TBLPROPERTIES {lake.ref('scores').name}").collect()}
    assert props["deparrot.random_init"] == "true" and "meaningless" in props["deparrot.warning"]

    again = score.run(spark, cfg)  # nothing left to do; nothing duplicated
    assert again.pending == 0 and lake.read("scores").count() == 5


def test_embeddings_match_a_direct_model_call(spark, scored_inputs, tmp_path):
    """The Spark path gives the same B/32 embeddings and scores as calling the model."""
    from udfs.clip_models import clip_scores, encode_images, encode_texts, load_clip
    from udfs.decode import decode_image

    cfg = _score_cfg(scored_inputs, tmp_path, recognize="none")
    score.run(spark, cfg)
    lake = Lake(spark, cfg)
    row = lake.read("scores").where(F.col("sample_id") == 4).first()
    image = lake.read("images").where(F.col("sample_id") == 4).first()["image"]
    bundle = load_clip(TINY_MODEL_NAME, cfg.score.clip_pretrained, "cpu", "fp32")
    arr = np.asarray(decode_image(image).image)
    emb = encode_images(bundle, [arr])
    txt = encode_texts(bundle, ["a picture of a forest path"])
    np.testing.assert_allclose(row["image_embedding"], emb[0], atol=1e-5)
    assert row["clip_score"] == pytest.approx(float(clip_scores(emb, txt)[0]), abs=1e-5)


def test_random_weights_are_refused_unless_allowed(spark, scored_inputs, tmp_path):
    cfg = _score_cfg(scored_inputs, tmp_path, random_init_ok=False)
    with pytest.raises(Exception, match="random"):
        score.run(spark, cfg)


EXECUTOR_ONLY_SPOTTER = '''
import numpy as np

from udfs.ocr import OcrBox, OcrResult


class MarkerSpotter:
    """Calls every image with an even-valued top-left pixel 'text' and reads `word`."""

    def __init__(self, word, device=None, cpu_threads=0):
        self.word = word

    def spot(self, images, recognize=False):
        out = []
        for img in images:
            h, w = img.shape[:2]
            box = OcrBox([(0, 0), (w / 2, 0), (w / 2, h / 2), (0, h / 2)],
                         self.word if recognize else None, 0.99)
            out.append(OcrResult([box], h, w))
        return out


def make(word, device=None, cpu_threads=0):
    return MarkerSpotter(word, device=device, cpu_threads=cpu_threads)
'''


@pytest.mark.slow  # default: the flaky_spotters_q tests name shipped spotter modules the same way
def test_third_party_spotter_named_by_import_path_runs_on_executors(
        spark, scored_inputs, tmp_path):
    """A spotter module the driver never imports, shipped the way a cluster ships code."""
    import sys

    module = tmp_path / "third_party_spotter_xyz.py"
    module.write_text(EXECUTOR_ONLY_SPOTTER)
    spark.sparkContext.addPyFile(str(module))
    cfg = _score_cfg(scored_inputs, tmp_path, reuse_similarity=True, reuse_aesthetic=True,
                     spotter="third_party_spotter_xyz:make",
                     spotter_options={"word": "PARROTWORD"})
    score.run(spark, cfg)
    assert "third_party_spotter_xyz" not in sys.modules  # only the executors imported it
    got = {r["sample_id"]: r for r in Lake(spark, cfg).read("scores").collect()}
    for sid in (1, 2, 3, 4):  # every decodable image went through the custom spotter
        assert got[sid]["has_text"] and got[sid]["ocr_text"] == "PARROTWORD"
        assert got[sid]["ocr_text_area"] == pytest.approx(0.25, abs=0.02)
    assert got[5]["status"] == "error"


COUNTING_SPOTTER = '''
import os

from udfs.ocr import OcrResult


class CountingSpotter:
    """Finds no text; appends one line per image it sees to `log` (from any process)."""

    def __init__(self, log):
        self.log = log

    def spot(self, images, recognize=False):
        with open(self.log, "a") as f:
            f.write("".join(f"{os.getpid()}\\n" for _ in images))
        return [OcrResult([], img.shape[0], img.shape[1]) for img in images]


def make(log, device=None, cpu_threads=0):
    return CountingSpotter(log)
'''


@pytest.mark.parametrize("rows_per_commit,retried", [
    pytest.param(100, False, marks=pytest.mark.slow),  # one chunk
    pytest.param(2, False, marks=pytest.mark.slow),  # chunks, new ids only
    (2, True),  # chunks with retried ids: the update MERGE, the costliest path
])
def test_each_image_goes_through_the_models_once(spark, scored_inputs, tmp_path,
                                                 rows_per_commit, retried):
    """Insert-only and replacing MERGEs alike read one stored copy of the chunk: a MERGE
    from a persisted source re-ran the models on every row (Delta copies a MERGE's
    source from its plan, past the cache)."""
    if retried:  # a retryable error from an earlier run: scored again, and replaced
        lake = Lake(spark, scored_inputs)
        lake.ensure("scores", score.TABLE_SCHEMA)
        spark.createDataFrame([(1, "error", "oom", True)],
                              "sample_id long, status string, error string, retryable boolean"
                              ).writeTo(lake.ref("scores").name).append()
    module = tmp_path / "counting_spotter_xyz.py"
    module.write_text(COUNTING_SPOTTER)
    spark.sparkContext.addPyFile(str(module))
    log = tmp_path / "spotted.log"
    cfg = _score_cfg(scored_inputs, tmp_path, reuse_similarity=True, reuse_aesthetic=True,
                     spotter="counting_spotter_xyz:make", spotter_options={"log": str(log)},
                     rows_per_commit=rows_per_commit)
    report = score.run(spark, cfg)
    assert report.ok == 4 and (report.chunks > 1) == (rows_per_commit == 2)
    assert len(log.read_text().splitlines()) == 4  # the 4 decodable images, once each
    ids = [r["sample_id"] for r in Lake(spark, cfg).read("scores").collect()]
    assert sorted(ids) == [1, 2, 3, 4, 5]


PUNCTUATION_SPOTTER = '''
from udfs.ocr import OcrBox, OcrResult


class PunctuationSpotter:
    """Finds one box per image and reads it as punctuation: no letter, no digit."""

    def spot(self, images, recognize=False):
        out = []
        for img in images:
            h, w = img.shape[:2]
            box = OcrBox([(0, 0), (w / 4, 0), (w / 4, h / 4), (0, h / 4)],
                         "..." if recognize else None, 0.97)
            out.append(OcrResult([box], h, w))
        return out


def make(device=None, cpu_threads=0):
    return PunctuationSpotter()
'''


@pytest.mark.slow  # default: tests/udfs/test_score.py::test_has_text_follows_the_text_rule
def test_has_text_needs_text_read_not_boxes_found(spark, scored_inputs, tmp_path):
    """Boxes read as punctuation stay in ocr_boxes but do not make has_text (nor count in
    ocr_box_count, which counts the text rule's boxes)."""
    module = tmp_path / "punctuation_spotter_xyz.py"
    module.write_text(PUNCTUATION_SPOTTER)
    spark.sparkContext.addPyFile(str(module))
    cfg = _score_cfg(scored_inputs, tmp_path, reuse_similarity=True, reuse_aesthetic=True,
                     spotter="punctuation_spotter_xyz:make")
    report = score.run(spark, cfg)
    assert report.ok == 4 and report.with_text == 0
    got = {r["sample_id"]: r for r in Lake(spark, cfg).read("scores").collect()}
    for sid in (1, 2, 3, 4):
        assert got[sid]["ocr_box_count"] == 0 and not got[sid]["has_text"]
        assert [b["text"] for b in got[sid]["ocr_boxes"]] == ["..."]


SLOW_SPOTTER = '''
import time

from udfs.ocr import OcrResult


class SlowSpotter:
    """Finds no text, slowly: two runs started together both plan before either commits."""

    def __init__(self, delay_s):
        self.delay_s = delay_s

    def spot(self, images, recognize=False):
        time.sleep(self.delay_s)
        return [OcrResult([], *img.shape[:2]) for img in images]


def make(device=None, cpu_threads=0, delay_s=2.0):
    return SlowSpotter(delay_s)
'''


@pytest.mark.slow  # the lake-level race: tests/jobs/test_cli_errors.py (default run)
def test_two_score_runs_at_once_store_each_id_once(spark, scored_inputs, tmp_path):
    import threading

    module = tmp_path / "slow_spotter_abc.py"
    module.write_text(SLOW_SPOTTER)
    spark.sparkContext.addPyFile(str(module))
    cfg = _score_cfg(scored_inputs, tmp_path, reuse_similarity=True, reuse_aesthetic=True,
                     spotter="slow_spotter_abc:make", spotter_options={"delay_s": 6.0})
    Lake(spark, cfg).ensure("scores", score.TABLE_SCHEMA)  # both runs see it
    reports, failures = [], []

    def one_run():
        try:
            reports.append(score.run(spark, cfg))
        except Exception as exc:  # pragma: no cover - shown by the assert below
            failures.append(exc)

    runs = [threading.Thread(target=one_run) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=600)
    assert not failures, failures
    assert [r.pending for r in reports] == [5, 5]  # both planned every row
    ids = [r["sample_id"] for r in Lake(spark, cfg).read("scores").collect()]
    assert sorted(ids) == [1, 2, 3, 4, 5]  # one row per id


FLAKY_SPOTTERS = '''
import numpy as np

from udfs.ocr import OcrResult


def _none(images):
    return [OcrResult([], *img.shape[:2]) for img in images]


class BigBatchOom:
    """Out of memory on batches of more than one image, like a card that is too small."""

    def spot(self, images, recognize=False):
        if len(images) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return _none(images)


class AlwaysOom:
    def spot(self, images, recognize=False):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


class HatesGreen:
    """A model bug on one kind of image: that image's error is final."""

    def spot(self, images, recognize=False):
        if any(img[..., 1].mean() > img[..., 0].mean() + 40 for img in images):
            raise ValueError("cannot handle this image")
        return _none(images)


class Broken:
    """A library regression: every image raises the same error."""

    def spot(self, images, recognize=False):
        raise KeyError("det_limit_side_len")


def broken(device=None, cpu_threads=0):
    return Broken()


def big_batch_oom(device=None, cpu_threads=0):
    return BigBatchOom()


def always_oom(device=None, cpu_threads=0):
    return AlwaysOom()


def hates_green(device=None, cpu_threads=0):
    return HatesGreen()
'''


@pytest.fixture
def flaky(spark, tmp_path):
    module = tmp_path / "flaky_spotters_q.py"
    module.write_text(FLAKY_SPOTTERS)
    spark.sparkContext.addPyFile(str(module))
    return "flaky_spotters_q"


def _scores(spark, cfg) -> dict:
    return {r["sample_id"]: r for r in Lake(spark, cfg).read("scores").collect()}


def test_out_of_memory_halves_the_batch_and_scores_every_image(
        spark, scored_inputs, tmp_path, flaky):
    cfg = _score_cfg(scored_inputs, tmp_path, reuse_similarity=True, reuse_aesthetic=True,
                     spotter=f"{flaky}:big_batch_oom")
    report = score.run(spark, cfg)
    assert report.ok == 4 and report.errors == {"decode:decode_error": 1}


# slow: a full stage run twice; default:
# test_out_of_memory_halves_the_batch_and_scores_every_image and
# test_resource_errors_fail_the_task_while_spark_can_still_retry_it
@pytest.mark.slow
def test_persistent_resource_errors_are_retryable_and_the_next_run_retries_them(
        spark, scored_inputs, tmp_path, flaky):
    # local[2] runs a task once: its (only) attempt is the last, so the rows are stored
    # as retryable errors instead of failing the job.
    cfg = _score_cfg(scored_inputs, tmp_path, reuse_similarity=True, reuse_aesthetic=True,
                     spotter=f"{flaky}:always_oom")
    report = score.run(spark, cfg)
    assert report.ok == 0
    assert report.errors == {"score:resource:RuntimeError": 4, "decode:decode_error": 1}
    got = _scores(spark, cfg)
    assert [sid for sid, r in sorted(got.items()) if r["retryable"]] == [1, 2, 3, 4]
    assert got[5]["retryable"] is False  # a corrupt file stays a final error
    again = score.run(spark, dataclasses.replace(
        cfg, score=dataclasses.replace(cfg.score, spotter="batched")))
    assert again.pending == 4 and again.ok == 4
    got = _scores(spark, cfg)
    assert len(got) == 5 and all(got[s]["status"] == "ok" for s in (1, 2, 3, 4))
    assert score.run(spark, cfg).pending == 0  # nothing left to retry


def test_resource_errors_fail_the_task_while_spark_can_still_retry_it():
    import pandas as pd

    from udfs import score as executor

    frame = pd.DataFrame({"sample_id": [1], "image": [_jpeg(
        photo_image(np.random.default_rng(0), 64))], "text": ["x"], "similarity": [0.5],
        "aesthetic": [5.0]})
    settings = executor.ScoreSettings(
        spotter="tests.jobs.test_score:_always_oom_spotter", clip_model=TINY_MODEL_NAME,
        clip_pretrained="random", aesthetic_clip_model=TINY_MODEL_NAME,
        aesthetic_clip_pretrained="random", random_init_ok=True, reuse_similarity=True,
        reuse_aesthetic=True, prefer_gpu=False)
    with pytest.raises(executor.RetryableScoreError, match="after 0 split"):
        list(executor.score_batches(iter([frame]), settings, task_attempts=4))


def _always_oom_spotter(device=None, cpu_threads=0):
    class Oom:
        def spot(self, images, recognize=False):
            raise MemoryError("Failed to allocate memory for requested buffer")

    return Oom()


def test_a_model_error_on_one_image_is_final_for_that_image_only(
        spark, scored_inputs, tmp_path, flaky):
    cfg = _score_cfg(scored_inputs, tmp_path, reuse_similarity=True, reuse_aesthetic=True,
                     spotter=f"{flaky}:hates_green")
    score.run(spark, cfg)
    got = _scores(spark, cfg)
    final = {sid for sid, r in got.items() if r["status"] == "error" and not r["retryable"]}
    assert final == {3, 5} and got[3]["error"] == "score:ValueError"  # 3: the green photo
    assert all(got[s]["status"] == "ok" for s in (1, 2, 4))
    assert not any(r["retryable"] for r in got.values())
    # The error keeps its words, in the row and in the reject.
    assert got[3]["error_detail"] == "ValueError: cannot handle this image"
    rejects = {r["sample_id"]: r for r in Lake(spark, cfg).read("rejects").where(
        "stage = 'score'").collect()}
    assert set(rejects) == {3, 5} and rejects[3]["reason"] == "score:ValueError"
    assert rejects[3]["detail"] == "ValueError: cannot handle this image"
    assert score.run(spark, cfg).pending == 0


def test_an_injected_bug_fails_the_stage_instead_of_rejecting_every_image(
        spark, scored_inputs, tmp_path, flaky):
    """A spotter that raises on every image is a bug, not four bad images: the stage
    fails, nothing is written, and the run after the fix scores every image."""
    cfg = _score_cfg(scored_inputs, tmp_path, reuse_similarity=True, reuse_aesthetic=True,
                     spotter=f"{flaky}:broken")
    with pytest.raises(Exception, match="SuspectedBugError") as failed:
        score.run(spark, cfg)
    assert "rows of a batch failed with KeyError: 'det_limit_side_len'" in str(failed.value)
    lake = Lake(spark, cfg)
    assert lake.read("scores").count() == 0  # no row became a permanent error
    assert not lake.exists("rejects") or not lake.read("rejects").where(
        "stage = 'score'").count()
    fixed = _score_cfg(scored_inputs, tmp_path, reuse_similarity=True, reuse_aesthetic=True)
    report = score.run(spark, fixed)
    assert (report.pending, report.ok, report.errors) == (5, 4, {"decode:decode_error": 1})


# slow: default: test_each_image_goes_through_the_models_once[2-True] runs chunked MERGEs
@pytest.mark.slow
def test_chunks_are_planned_once_and_each_reads_only_its_own_rows(
        spark, scored_inputs, tmp_path):
    from jobs.work_queue import staged

    cfg = _score_cfg(scored_inputs, tmp_path, reuse_similarity=True, reuse_aesthetic=True,
                     rows_per_commit=2)
    lake = Lake(spark, cfg)
    lake.ensure("scores", score.TABLE_SCHEMA)
    todo = score.pending(lake.read("images"), lake.read("metadata"), lake.read("scores"))
    seen = []
    with staged(lake, todo, 3, "score") as chunks:
        assert chunks.count == 3
        for k in range(3):
            part = chunks(k)
            files = part.inputFiles()
            assert files and all(f"_chunk={k}/" in f for f in files)  # its partition only
            ids = [r["sample_id"] for r in part.select("sample_id").collect()]
            # Chunks are key ranges: the MERGE filter holds for the chunk's rows only.
            where = chunks.target_filter(k, alias="s")
            assert part.alias("s").where(where).count() == len(ids)
            assert todo.alias("s").where(where).count() == len(ids)
            seen += ids
    assert sorted(seen) == [1, 2, 3, 4, 5]
    scratch = tmp_path / "lake" / "_scratch"
    assert not scratch.exists() or not list(scratch.iterdir())  # dropped afterwards

    report = score.run(spark, cfg)
    assert (report.chunks, report.pending, report.ok) == (3, 5, 4)
    ids = [r["sample_id"] for r in lake.read("scores").collect()]
    assert sorted(ids) == [1, 2, 3, 4, 5]
    assert not scratch.exists() or not list(scratch.iterdir())


@pytest.mark.slow  # an old lake migrating; default: new tables have the column
def test_a_scores_table_from_before_masked_clip_score_gets_the_column(spark, cfg):
    from jobs.recipe import joined

    lake = Lake(spark, cfg)
    old = T.StructType([f for f in score.TABLE_SCHEMA.fields
                        if f.name != "masked_clip_score"])
    lake.ensure("scores", old)
    spark.createDataFrame([(1, "ok", 2, True, "SALE", 0.4)],
                          "sample_id long, status string, ocr_box_count int, has_text boolean, "
                          "ocr_text string, clip_score double").writeTo(
        lake.ref("scores").name).append()
    for key, schema in (("metadata", METADATA_SCHEMA), ("images", IMAGES_TABLE)):
        lake.ensure(key, schema)
    spark.createDataFrame([(1, 0, 0.0, "x")], "sample_id long, kmeans long, "
                          "kmeans_distance float, centroids_sha1 string").write.format(
        "delta").save(lake.ref("clusters").path)
    spark.createDataFrame([(1, "http://x.example/1", "a sale", "laion400m", "f", 1)],
                          "sample_id long, url string, text string, family string, "
                          "source_file string, source_row long").writeTo(
        lake.ref("metadata").name).append()
    # The recipe reads an old table as it is (no masked score yet) ...
    assert joined(lake).first()["masked_clip_score"] is None
    lake.add_missing_columns("scores", score.TABLE_SCHEMA)  # ... the stage migrates it.
    assert "masked_clip_score" in lake.read("scores").columns
    assert lake.read("scores").first()["masked_clip_score"] is None
