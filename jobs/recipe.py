"""The paper's filters, shared by dedup (which rows compete) and publish (who is kept).

Dedup only compares rows that pass the filters: a duplicate must not be dropped in
favour of a keeper that publish would then reject for low scores.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.config import RecipeConfig
from jobs.lake import Lake


def joined(lake: Lake, versions: dict[str, int] | None = None) -> DataFrame:
    """Every metadata row with its image, score and cluster columns (null where missing),
    read at `versions` when given (one consistent snapshot for several Spark jobs)."""
    pinned = versions or {}

    def read(key: str) -> DataFrame:
        return lake.read(key, version=pinned.get(key))

    meta = read("metadata")
    images = read("images").select(
        "sample_id", F.col("status").alias("image_status"),
        F.col("sha256").alias("image_sha256"), "original_width",
        "original_height")
    scores = read("scores").select(
        "sample_id", F.col("status").alias("score_status"), "ocr_box_count", "has_text",
        "clip_score", "aesthetic_score", "image_embedding")
    clusters = read("clusters").select("sample_id", "kmeans")
    return (meta.join(images, "sample_id", "left").join(scores, "sample_id", "left")
            .join(clusters, "sample_id", "left"))


def decided() -> Column:
    """Rows the earlier stages finished with (not pending) and did not reject already."""
    return (
        (F.col("image_status") == "ok") & (F.col("score_status") == "ok")
        & F.col("kmeans").isNotNull()
    )


def text_found(recipe: RecipeConfig) -> Column:
    """The paper's "empty OCR results" rule on the score stage's `has_text`.

    `has_text` is the stage's text rule (text read in a box, or any box in
    detection-only mode). `recipe.max_text_boxes` (default 0) tolerates images with
    text that have at most that many OCR boxes. Rows without `has_text` (tables written
    before it was set) fall back to "any box".
    """
    has_text = F.coalesce(F.col("has_text"), F.col("ocr_box_count") > 0)
    return has_text & (F.col("ocr_box_count") > recipe.max_text_boxes)


def filter_reason(recipe: RecipeConfig) -> Column:
    """The first recipe filter a decided row fails, or null."""
    return (
        F.when(text_found(recipe), F.lit("text_found"))
        .when(F.col("clip_score").isNull() | (F.col("clip_score") <= recipe.min_clip_score),
              F.lit("low_clip_score"))
        .when(F.col("aesthetic_score").isNull()
              | (F.col("aesthetic_score") <= recipe.min_aesthetic), F.lit("low_aesthetic"))
    )


def candidates(lake: Lake, recipe: RecipeConfig) -> DataFrame:
    return joined(lake).where(decided() & filter_reason(recipe).isNull())
