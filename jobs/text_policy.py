"""How many pairs each `recipe.text_policy` would keep: the `policy_counts` table.

Written by `deparrot analyze` so the policies can be compared on one's own data before
choosing one (publish applies only the configured policy). Counts are over the recipe's
decided rows (downloaded, scored, clustered), with the full recipe filters (text rule,
CLIP score, aesthetics) and before dedup, which only ran under the configured policy:
`kept` is the candidate set dedup would see under that policy.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.config import TEXT_POLICIES, Config, RecipeConfig
from jobs.lake import Lake
from jobs.recipe import (
    caption_cotr,
    decided,
    filter_reason,
    joined,
    text_found,
    text_reason,
)

INPUTS = ("metadata", "images", "scores", "clusters")


def policy_counts(rows: DataFrame, recipe: RecipeConfig,
                  cotr: Column | None = None) -> DataFrame:
    """(policy, kept, rejected, rejected_text, share_kept) for every policy, in one
    aggregation over decided `rows` (recipe.joined columns). `rejected_text`: rows the
    policy's own text rule rejects. `cotr`: the rows' normalised CoTR when known already
    (analyze has it in the parrot table); else computed (a Python pass over text rows)."""
    with_cotr = rows.withColumn("_cotr", caption_cotr(recipe) if cotr is None else cotr)
    cotr = F.col("_cotr")
    reasons = with_cotr.select(
        *[filter_reason(recipe, p, cotr).alias(f"{p}_reason") for p in TEXT_POLICIES],
        *[text_reason(recipe, p, cotr).alias(f"{p}_text") for p in TEXT_POLICIES])
    totals = reasons.agg(
        F.count(F.lit(1)).alias("rows"),
        *[F.count(F.when(F.col(f"{p}_reason").isNull(), 1)).alias(f"{p}_kept")
          for p in TEXT_POLICIES],
        *[F.count(F.col(f"{p}_text")).alias(f"{p}_text") for p in TEXT_POLICIES])
    structs = [F.struct(
        F.lit(p).alias("policy"), F.col(f"{p}_kept").alias("kept"),
        (F.col("rows") - F.col(f"{p}_kept")).alias("rejected"),
        F.col(f"{p}_text").alias("rejected_text"),
        F.when(F.col("rows") > 0, F.col(f"{p}_kept") / F.col("rows")).alias("share_kept"),
    ) for p in TEXT_POLICIES]
    return totals.select(F.explode(F.array(*structs)).alias("c")).select("c.*")


def write_policy_counts(lake: Lake, cfg: Config, parrot: DataFrame | None = None) -> bool:
    """Overwrite `policy_counts` when the recipe's inputs exist; False when they do not
    (analyze also runs before cluster-assign). With `parrot` (analyze's table) its
    `cotr_norm` is reused, so analyze stays one Python pass over the rows."""
    if not all(lake.exists(k) for k in INPUTS):
        return False
    rows, cotr = joined(lake).where(decided()), None
    if parrot is not None:
        rows = rows.join(parrot.select("sample_id", F.col("cotr_norm").alias("_parrot_cotr")),
                         "sample_id", "left")
        cotr = F.when(text_found(cfg.recipe), F.coalesce("_parrot_cotr", F.lit(0.0))
                      ).otherwise(F.lit(0.0))
    lake.overwrite("policy_counts", policy_counts(rows, cfg.recipe, cotr).drop("_parrot_cotr"))
    return True
