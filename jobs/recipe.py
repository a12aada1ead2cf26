"""The paper's filters, shared by dedup (which rows compete) and publish (who is kept).

Dedup only compares rows that pass the filters: a duplicate must not be dropped in
favour of a keeper that publish would then reject for low scores.

Which images with text go is `recipe.text_policy` (`text_reason`): every one
(`any_text`, the paper), only those whose caption repeats their text (`parrots`), or only
those whose CLIP score falls once the text is masked (`tmars`, T-MARS). Images without
text pass the text rule under every policy.
"""

from __future__ import annotations

from functools import lru_cache

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.config import RecipeConfig
from jobs.lake import Lake

# The publish reject reason of each text policy.
TEXT_REASONS = {"any_text": "text_found", "parrots": "parrot_caption",
                "tmars": "text_dominant"}
# tmars on a text image scored without masked_clip_score (score.masked_clip_score off, or
# scored before the column existed): undecidable, so not kept, and named as such.
NO_MASKED_SCORE = "no_masked_clip_score"


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
    scores = read("scores")
    if "masked_clip_score" not in scores.columns:  # a table the score stage has not migrated
        scores = scores.withColumn("masked_clip_score", F.lit(None).cast("double"))
    scores = scores.select(
        "sample_id", F.col("status").alias("score_status"), "ocr_box_count", "has_text",
        "ocr_text", "clip_score", "masked_clip_score", "aesthetic_score", "image_embedding")
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


@lru_cache(maxsize=1)
def _cotr_udf():
    """Normalised CoTR of (caption, OCR text), vectorised over Arrow batches, with the
    tokeniser of the parrot statistics (udfs.parrot), so `parrots` drops exactly the
    pairs analyze counts as co-emb."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("double")
    def cotr_norm(caption: pd.Series, ocr_text: pd.Series) -> pd.Series:
        from udfs.parrot import cotr_norm_series

        return cotr_norm_series(caption, ocr_text)

    return cotr_norm


def caption_cotr(recipe: RecipeConfig) -> Column:
    """Normalised CoTR of rows whose image has text (`text_found`); 0.0 elsewhere, where
    the OCR text is not even sent to Python."""
    found = text_found(recipe)
    return _cotr_udf()(F.when(found, F.col("text")), F.when(found, F.col("ocr_text")))


def text_reason(recipe: RecipeConfig, policy: str | None = None,
                cotr: Column | None = None) -> Column:
    """The text rule of `policy` (default recipe.text_policy): its reject reason, or null.

    Needs `text` and `ocr_text` (parrots) or `masked_clip_score` (tmars) besides the
    columns of `text_found`. `cotr`: an already computed `caption_cotr` column.
    """
    policy = policy or recipe.text_policy
    found = text_found(recipe)
    reason = F.lit(TEXT_REASONS[policy])
    if policy == "any_text":
        return F.when(found, reason)
    if policy == "parrots":
        cotr = caption_cotr(recipe) if cotr is None else cotr
        return F.when(found & (cotr > recipe.max_cotr), reason)
    if policy == "tmars":
        masked = F.col("masked_clip_score")
        return (F.when(found & masked.isNull(), F.lit(NO_MASKED_SCORE))
                .when(found & (masked < recipe.min_masked_clip_score), reason))
    raise ValueError(f"unknown text policy {policy!r}")


def filter_reason(recipe: RecipeConfig, policy: str | None = None,
                  cotr: Column | None = None) -> Column:
    """The first recipe filter a decided row fails, or null (the text rule of `policy`,
    default recipe.text_policy, first)."""
    return F.coalesce(
        text_reason(recipe, policy, cotr),
        F.when(F.col("clip_score").isNull() | (F.col("clip_score") <= recipe.min_clip_score),
               F.lit("low_clip_score"))
        .when(F.col("aesthetic_score").isNull()
              | (F.col("aesthetic_score") <= recipe.min_aesthetic), F.lit("low_aesthetic")),
    )


def candidates(lake: Lake, recipe: RecipeConfig) -> DataFrame:
    return joined(lake).where(decided() & filter_reason(recipe).isNull())
