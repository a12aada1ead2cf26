"""`deparrot publish`: apply the recipe and write the debiased subset, partition by partition.

Kept: no text found, CLIP score > recipe.min_clip_score, aesthetic > recipe.min_aesthetic,
kept by dedup. Every other decided row goes to `rejects` (stage `publish`) with the first
rule it breaks. The subset has the dataset card's columns plus `part`, the partition
column: `kmeans // publish.clusters_per_partition`. Each partition is one Delta commit
(replaceWhere on its `part`) tagged with a signature of the inputs, so after a crash a
re-run skips the finished partitions and rewrites the others: no row twice, none lost.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

if __package__ in (None, ""):  # `spark-submit jobs/publish.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.config import Config, to_dict
from jobs.lake import Lake
from jobs.recipe import decided, filter_reason, joined

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


def classify(lake: Lake, cfg: Config) -> DataFrame:
    """Decided rows with `reason` (null = kept) and the subset columns."""
    dedup = lake.read("dedup").select(
        "sample_id", F.col("kept").alias("dedup_kept"), F.col("reason").alias("dedup_reason"))
    rows = joined(lake).where(decided()).join(dedup, "sample_id", "left")
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


def signature(lake: Lake, cfg: Config) -> str:
    """What the subset is a function of: input table versions and the recipe settings."""
    versions = {k: lake.version(k) for k in ("metadata", "images", "scores", "clusters", "dedup")}
    payload = {"versions": versions, "recipe": to_dict(cfg)["recipe"],
               "publish": to_dict(cfg)["publish"]}
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()


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
    ref = lake.ensure("subset", SUBSET_SCHEMA, partition_by=("part",))
    if not lake.exists("dedup"):
        raise RuntimeError(f"table {lake.ref('dedup').name} is missing: run `deparrot dedup`")
    sig = signature(lake, cfg)
    rows = classify(lake, cfg)
    rejects = rows.where(F.col("reason").isNotNull()).select(
        F.lit(STAGE).alias("stage"), "reason",
        F.col("sample_id").cast("string").alias("reject_key"), "sample_id",
        F.to_json(F.struct("url", "text", "ocr_box_count", "clip_score", "aesthetic_score",
                           "kmeans")).alias("record"))
    lake.replace_rejects(STAGE, rejects)
    keep = subset_columns(rows.where(F.col("reason").isNull()),
                          cfg.publish.clusters_per_partition)
    parts = sorted(r["part"] for r in keep.select("part").distinct().collect())
    stale = [r["part"] for r in lake.read("subset").select("part").distinct().collect()
             if r["part"] not in set(parts)]
    if stale:
        lake.delta("subset").delete(F.col("part").isin(stale))
    done = finished_parts(lake, sig)
    report = PublishReport(partitions=len(parts), table=ref.name)
    for part in parts:
        if part in done:
            continue
        write_partition(lake, keep.where(F.col("part") == part), part, sig)
        report.partitions_written += 1
    report.kept = lake.read("subset").count()
    for row in lake.read("rejects").where(F.col("stage") == STAGE).groupBy("reason").count() \
            .collect():
        report.rejected[row["reason"]] = row["count"]
    return report


def main(argv: list[str] | None = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(["publish", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
