"""recipe.text_policy end to end over tiny tables: dedup's candidates, publish's subset and
reasons, and analyze's policy_counts, for each policy on the same data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pyspark.sql import functions as F

from jobs import dedup, publish, text_policy
from jobs.cluster import CLUSTERS_SCHEMA
from jobs.download import TABLE_SCHEMA as IMAGES_TABLE
from jobs.ingest import METADATA_SCHEMA
from jobs.lake import Lake
from jobs.score import TABLE_SCHEMA as SCORES_TABLE

# sample_id: (caption, ocr_text, has_text, boxes, clip_score, masked_clip_score)
ROWS = {
    1: ("a forest path in autumn", "", False, 0, 0.35, 0.35),
    2: ("a red car parked on a street", "EXIT 7", True, 1, 0.34, 0.33),  # photo, small sign
    3: ("Grand opening!", "GRAND OPENING", True, 2, 0.40, 0.12),  # a poster read aloud
    4: ("the exit of a subway station", "EXIT", True, 1, 0.36, 0.34),  # parrots one word
    5: ("cheap flights to rome", "SALE 50%", True, 1, 0.33, 0.20),  # text is all it has
    6: ("a dark room", "", False, 0, 0.20, 0.20),  # low CLIP score
    7: ("a shop front", "OPEN", True, 1, 0.35, None),  # scored without the masked score
    8: ("a grey wall", "", False, 1, 0.35, 0.31),  # a box read as nothing: no text
    9: ("a red car", "", False, 0, 0.32, 0.32),  # near-duplicate image of 2, lower score
}
DIM = 16


def _embeddings() -> dict[int, list[float]]:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(ROWS) + 1, DIM))
    emb[9] = emb[2] + 0.001 * rng.normal(size=DIM)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return {i: emb[i].astype(np.float32).tolist() for i in ROWS}


@pytest.fixture
def tables(spark, cfg):
    lake = Lake(spark, cfg)
    for key, schema in (("metadata", METADATA_SCHEMA), ("images", IMAGES_TABLE),
                        ("scores", SCORES_TABLE), ("clusters", CLUSTERS_SCHEMA)):
        lake.ensure(key, schema)
    spark.createDataFrame(
        [(i, f"http://x.example/{i}", c, 64.0, 48.0, "laion400m", "f", i)
         for i, (c, *_r) in ROWS.items()],
        "sample_id long, url string, text string, width double, height double, "
        "family string, source_file string, source_row long",
    ).writeTo(lake.ref("metadata").name).append()
    spark.createDataFrame([(i, "ok", f"h{i}") for i in ROWS],
                          "sample_id long, status string, sha256 string") \
        .writeTo(lake.ref("images").name).append()
    emb = _embeddings()
    spark.createDataFrame(
        [(i, "ok", b, o, t, c, m, 5.0, emb[i]) for i, (_c, o, t, b, c, m) in ROWS.items()],
        "sample_id long, status string, ocr_box_count int, ocr_text string, has_text boolean, "
        "clip_score double, masked_clip_score double, aesthetic_score double, "
        "image_embedding array<float>",
    ).writeTo(lake.ref("scores").name).append()
    spark.createDataFrame([(i, 0, 0.0, "c") for i in ROWS],
                          "sample_id long, kmeans long, kmeans_distance float, "
                          "centroids_sha1 string").writeTo(lake.ref("clusters").name).append()
    return cfg


def _with_policy(cfg, policy):
    return dataclasses.replace(cfg, recipe=dataclasses.replace(cfg.recipe, text_policy=policy))


EXPECTED = {  # kept, {rejected id: reason}
    "any_text": ({1, 8, 9}, {2: "text_found", 3: "text_found", 4: "text_found",
                             5: "text_found", 6: "low_clip_score", 7: "text_found"}),
    "parrots": ({1, 2, 5, 7, 8}, {3: "parrot_caption", 4: "parrot_caption",
                                  6: "low_clip_score", 9: "near_duplicate"}),
    "tmars": ({1, 2, 4, 8}, {3: "text_dominant", 5: "text_dominant", 6: "low_clip_score",
                             7: "no_masked_clip_score", 9: "near_duplicate"}),
}


def test_publish_keeps_and_rejects_by_the_default_policy(spark, tables):
    """any_text on fresh tables (the default run; every policy in turn: the slow test
    below)."""
    lake = Lake(spark, tables)
    kept, rejected = EXPECTED["any_text"]
    assert dedup.run(spark, tables).candidates == len(kept)
    report = publish.run(spark, tables)
    got_kept = {r["SAMPLE_ID"] for r in lake.read("subset").collect()}
    got_rejected = {r["sample_id"]: r["reason"] for r in lake.read("rejects").where(
        F.col("stage") == "publish").collect()}
    assert (got_kept, got_rejected) == (kept, rejected)
    assert report.kept == len(kept) and len(got_kept) + len(got_rejected) == len(ROWS)


# slow: three dedup and publish runs (the default run: any_text above, and parrots through
# the workbench's what-if line in tests/jobs/test_explore.py)
@pytest.mark.slow
def test_publish_keeps_and_rejects_by_the_configured_policy(spark, tables):
    """One table set, published under each policy in turn: the subset and the reasons
    follow the policy, and so do dedup's candidates (9 duplicates 2, which only competes
    when its text is allowed)."""
    lake = Lake(spark, tables)
    for policy, (kept, rejected) in EXPECTED.items():
        cfg = _with_policy(tables, policy)
        assert dedup.run(spark, cfg).candidates == len(kept) + sum(
            r == "near_duplicate" for r in rejected.values()), policy
        report = publish.run(spark, cfg)
        got_kept = {r["SAMPLE_ID"] for r in lake.read("subset").collect()}
        got_rejected = {r["sample_id"]: r["reason"] for r in lake.read("rejects").where(
            F.col("stage") == "publish").collect()}
        assert (got_kept, got_rejected) == (kept, rejected), policy
        assert report.kept == len(kept) and len(got_kept) + len(got_rejected) == len(ROWS)


def test_policy_counts_compare_every_policy_in_one_table(spark, tables):
    lake = Lake(spark, tables)
    assert text_policy.write_policy_counts(lake, tables)
    got = {r["policy"]: r.asDict() for r in lake.read("policy_counts").collect()}
    n = len(ROWS)
    for policy, (kept, rejected) in EXPECTED.items():
        # Before dedup: the near-duplicate 9 still counts as kept.
        before_dedup = kept | {i for i, r in rejected.items() if r == "near_duplicate"}
        text = sum(r not in ("low_clip_score", "near_duplicate") for r in rejected.values())
        assert got[policy] == {"policy": policy, "kept": len(before_dedup),
                               "rejected": n - len(before_dedup), "rejected_text": text,
                               "share_kept": pytest.approx(len(before_dedup) / n)}

    # analyze passes its parrot table: the same counts from its CoTR, no second pass.
    from jobs import analyze

    parrot = analyze.parrot_rows(analyze.measures(analyze.captions(lake), tables))
    assert text_policy.write_policy_counts(lake, tables, parrot)
    again = {r["policy"]: r.asDict() for r in lake.read("policy_counts").collect()}
    assert again == got
