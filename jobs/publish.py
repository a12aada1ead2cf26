"""`deparrot publish`: apply the recipe and write the debiased subset, partition by partition.

Kept: passes the text rule of recipe.text_policy (default: no text found), CLIP score >
recipe.min_clip_score, aesthetic > recipe.min_aesthetic, kept by dedup. Every other
decided row goes to `rejects` (stage `publish`) with the first rule it breaks (the text
rule's reason: text_found, parrot_caption or text_dominant; jobs/recipe.py).
The subset has the dataset card's columns plus `part`, the partition
column: `kmeans // publish.clusters_per_partition`. Each partition is one Delta commit
(replaceWhere on its `part`) tagged with a signature of the inputs, so after a crash a
re-run skips the finished partitions and rewrites the others: no row twice, none lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import Config
from jobs.lake import Lake, reject_rows, tally
from jobs.recipe import decided, filter_reason, joined
from jobs.stages import Stage

STAGE = "publish"
SUBSET_SCHEMA = T.StructType([
    T.StructField("SAMPLE_ID", T.LongType(), False),
    T.StructField("URL", T.StringType(), True),
    T.StructField("TEXT", T.StringType(), True),
    T.StructField("HEIGHT", T.DoubleType(), True),
    T.StructField("WIDTH", T.DoubleType(), True),
    T.StructField("LICENSE", T.StringType(), True),
    T.StructField("NSFW", T.StringType(), True),
    T.StructField("similarity", T.DoubleType(), True),  # the CLIP score the recipe used
    T.StructField("ase_scores", T.DoubleType(), True),
    T.StructField("kmeans", T.LongType(), True),
    T.StructField("part", T.IntegerType(), False),  # extra: partition column
])


@dataclass
class PublishReport:
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    partitions: int = 0
    partitions_written: int = 0
    table: str = ""


INPUTS = ("metadata", "images", "scores", "clusters", "dedup")


def classify(lake: Lake, cfg: Config, versions: dict[str, int] | None = None) -> DataFrame:
    """Decided rows with `reason` (null = kept) and the subset columns."""
    dedup = lake.read("dedup", version=(versions or {}).get("dedup")).select(
        "sample_id", F.col("kept").alias("dedup_kept"), F.col("reason").alias("dedup_reason"))
    rows = joined(lake, versions).where(decided()).join(dedup, "sample_id", "left")
    reason = F.coalesce(
        filter_reason(cfg.recipe),
        F.when(F.col("dedup_kept").isNull(), F.lit("not_deduplicated")),
        F.when(~F.col("dedup_kept"), F.col("dedup_reason")),
    )
    return rows.withColumn("reason", reason)


def subset_columns(df: DataFrame, clusters_per_partition: int) -> DataFrame:
    return df.select(
        F.col("sample_id").alias("SAMPLE_ID"), F.col("url").alias("URL"),
        F.col("text").alias("TEXT"),
        F.coalesce("height", F.col("original_height").cast("double")).alias("HEIGHT"),
        F.coalesce("width", F.col("original_width").cast("double")).alias("WIDTH"),
        F.col("license").alias("LICENSE"), F.col("nsfw").alias("NSFW"),
        F.col("clip_score").alias("similarity"), F.col("aesthetic_score").alias("ase_scores"),
        F.col("kmeans").cast("long").alias("kmeans"),
        F.floor(F.col("kmeans") / F.lit(max(1, clusters_per_partition))).cast("int").alias("part"),
    )


def signature(lake: Lake, cfg: Config, versions: dict[str, int] | None = None) -> str:
    """What the subset is a function of: input table versions and the recipe settings."""
    return lake.signature(INPUTS, versions, recipe=cfg.recipe, publish=cfg.publish)


def finished_parts(lake: Lake, sig: str) -> set[int]:
    done = set()
    for row in lake.delta("subset").history().select("userMetadata").collect():
        try:
            meta = json.loads(row["userMetadata"] or "")
        except json.JSONDecodeError:
            continue
        if isinstance(meta, dict) and meta.get("signature") == sig and "part" in meta:
            done.add(int(meta["part"]))
    return done


def write_partition(lake: Lake, rows: DataFrame, part: int, sig: str) -> None:
    """One partition, one atomic commit that replaces whatever that partition held."""
    lake.replace_where("subset", rows, f"part = {part}",
                       user_metadata=json.dumps({"signature": sig, "part": part}))


def run(spark: SparkSession, cfg: Config) -> PublishReport:
    lake = Lake(spark, cfg)
    lake.require("dedup")
    ref = lake.ensure("subset", SUBSET_SCHEMA, partition_by=("part",))
    # One computation of the recipe join, at pinned versions, shared by the rejects and
    # every partition's commit (a concurrent upstream commit cannot split them).
    versions = lake.versions(INPUTS)
    sig = signature(lake, cfg, versions)
    rows = classify(lake, cfg, versions).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return _publish(lake, cfg, rows, sig, ref.name)
    finally:
        rows.unpersist()


def _publish(lake: Lake, cfg: Config, rows: DataFrame, sig: str, table: str) -> PublishReport:
    lake.replace_rejects(STAGE, reject_rows(
        rows.where(F.col("reason").isNotNull()), STAGE, "reason",
        record=("url", "text", "ocr_box_count", "clip_score", "masked_clip_score",
                "aesthetic_score", "kmeans")))
    keep = subset_columns(rows.where(F.col("reason").isNull()),
                          cfg.publish.clusters_per_partition)
    parts = sorted(r["part"] for r in keep.select("part").distinct().collect())
    stale = [r["part"] for r in lake.read("subset").select("part").distinct().collect()
             if r["part"] not in set(parts)]
    if stale:
        lake.delta("subset").delete(F.col("part").isin(stale))
    done = finished_parts(lake, sig)
    report = PublishReport(partitions=len(parts), table=table)
    for part in parts:
        if part in done:
            continue
        write_partition(lake, keep.where(F.col("part") == part), part, sig)
        report.partitions_written += 1
    report.kept = lake.read("subset").count()
    report.rejected = tally(lake.read("rejects").where(F.col("stage") == STAGE), "reason")
    return report


STAGES = (Stage("publish", "apply the recipe; write the subset partition by partition", run,
                pipeline=True, reads=("dedup", "rejects"), writes=("subset", "rejects")),)
