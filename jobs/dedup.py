"""`deparrot dedup`: exact duplicates by URL and image hash, near-duplicates per cluster.

Among the rows that pass the recipe filters, each duplicate group keeps one row: the
highest CLIP score, ties broken by the smallest sample id (independent of input order).
Near-duplicates are connected components of "cosine of ViT-B/32 image embeddings >=
recipe.dedup_threshold" inside one k-means cluster, found block by block so memory
stays bounded for clusters far bigger than an N x N matrix allows (udfs.dedup).
The dedup table is rewritten whole in one commit, so a re-run replaces, never adds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import Config, RecipeConfig
from jobs.lake import Lake, tally
from jobs.recipe import candidates
from jobs.stages import Stage

DEDUP_SCHEMA = T.StructType([
    T.StructField("sample_id", T.LongType(), False),
    T.StructField("kept", T.BooleanType(), False),
    # duplicate_url | duplicate_image | near_duplicate; null when kept
    T.StructField("reason", T.StringType(), True),
    T.StructField("duplicate_of", T.LongType(), True),  # the keeper of its group
    T.StructField("group_size", T.IntegerType(), True),
    T.StructField("max_sim", T.FloatType(), True),  # best cosine to another group member
])


@dataclass
class DedupReport:
    skipped: bool = False
    candidates: int = 0
    kept: int = 0
    removed: dict[str, int] = field(default_factory=dict)


def _exact(df: DataFrame, key: str, reason: str) -> tuple[DataFrame, DataFrame]:
    """Split into (survivors, duplicates of an earlier keeper by `key`)."""
    order = Window.partitionBy(key).orderBy(F.desc_nulls_last("clip_score"), "sample_id")
    marked = df.withColumn("_keeper", F.first("sample_id").over(order)).withColumn(
        "_size", F.count("*").over(Window.partitionBy(key)))
    keyed = F.col(key).isNotNull()
    dups = marked.where(keyed & (F.col("_keeper") != F.col("sample_id"))).select(
        "sample_id", F.lit(False).alias("kept"), F.lit(reason).alias("reason"),
        F.col("_keeper").alias("duplicate_of"), F.col("_size").cast("int").alias("group_size"),
        F.lit(None).cast("float").alias("max_sim"))
    survivors = marked.where(~keyed | (F.col("_keeper") == F.col("sample_id"))).drop(
        "_keeper", "_size")
    return survivors, dups


def transform(cands: DataFrame, recipe: RecipeConfig) -> DataFrame:
    """Candidates (sample_id, url, image_sha256, kmeans, clip_score, image_embedding) rows
    -> DEDUP_SCHEMA rows."""
    from udfs.dedup import dedup_frame

    rest = cands.select("sample_id", "url", "image_sha256", "kmeans", "clip_score",
                       "image_embedding")
    removed = []
    if recipe.dedup_by_url:
        rest, dups = _exact(rest, "url", "duplicate_url")
        removed.append(dups)
    if recipe.dedup_by_image_hash:
        rest, dups = _exact(rest, "image_sha256", "duplicate_image")
        removed.append(dups)
    threshold, block = recipe.dedup_threshold, recipe.dedup_block_size

    def per_cluster(pdf):
        out = dedup_frame(pdf, id_col="sample_id", emb_col="image_embedding",
                          score_col="clip_score", threshold=threshold, block_size=block)
        return out.astype({"group_size": "int32", "max_sim": "float32"})

    near = rest.select("sample_id", "kmeans", "clip_score", "image_embedding").groupBy(
        "kmeans").applyInPandas(
        per_cluster, schema="sample_id long, keeper_id long, group_size int, max_sim float")
    kept = F.col("keeper_id") == F.col("sample_id")
    result = near.select(
        "sample_id", kept.alias("kept"),
        F.when(~kept, F.lit("near_duplicate")).alias("reason"),
        F.when(~kept, F.col("keeper_id")).alias("duplicate_of"), "group_size",
        F.when(F.col("group_size") > 1, F.col("max_sim")).alias("max_sim"))
    for dups in removed:
        result = result.unionByName(dups)
    return result


def inputs_signature(lake: Lake, recipe: RecipeConfig) -> str:
    return lake.signature(("metadata", "images", "scores", "clusters"), recipe=recipe)


def run(spark: SparkSession, cfg: Config, force: bool = False) -> DedupReport:
    """Rewrite the dedup table, unless it already reflects these inputs and settings."""
    lake = Lake(spark, cfg)
    for upstream in ("metadata", "images", "scores", "clusters"):
        lake.require(upstream)
    lake.ensure("dedup", DEDUP_SCHEMA)
    sig = inputs_signature(lake, cfg.recipe)
    report = DedupReport()
    if not force and lake.properties("dedup").get("deparrot.inputs") == sig:
        report.skipped = True
    else:
        result = transform(candidates(lake, cfg.recipe), cfg.recipe)
        conformed = result.select(*[F.col(f.name).cast(f.dataType)
                                    for f in DEDUP_SCHEMA.fields])
        conformed.writeTo(lake.ref("dedup").name).overwrite(F.lit(True))
        lake.set_properties("dedup", {"deparrot.inputs": sig})
    for (kept, reason), count in tally(lake.read("dedup"), "kept", "reason").items():
        report.candidates += count
        if kept:
            report.kept += count
        else:
            report.removed[reason] = count
    return report


STAGES = (Stage("dedup", "exact and near-duplicate removal within clusters", run,
                pipeline=True),)
