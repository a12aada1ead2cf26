"""`deparrot run`: ingest -> download -> score -> cluster -> dedup -> publish.

Every stage is itself resumable and only does pending work; `run` also skips stages
whose output is already complete (ingest when every input row is accounted for,
cluster-train when artifacts exist, dedup when its inputs have not changed).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

if __package__ in (None, ""):  # `spark-submit jobs/pipeline.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs import cluster, dedup, download, ingest, publish, score
from jobs.config import Config
from jobs.lake import Lake


def ingest_complete(spark: SparkSession, cfg: Config) -> bool:
    """Every input file's rows are all in metadata or ingest rejects (the invariant)."""
    lake = Lake(spark, cfg)
    if not lake.exists("metadata") or not lake.exists("rejects"):
        return False
    given = ingest.read_input(spark, cfg.ingest.input).groupBy(
        F.col("_source_file").alias("source_file")).count()
    kept = lake.read("metadata").groupBy("source_file").count()
    rejected = lake.read("rejects").where(F.col("stage") == ingest.STAGE).groupBy(
        "source_file").count()
    have = kept.unionByName(rejected).groupBy("source_file").agg(F.sum("count").alias("have"))
    missing = given.join(have, "source_file", "left").where(
        F.coalesce(F.col("have"), F.lit(0)) != F.col("count"))
    return missing.limit(1).count() == 0


def _say(stage: str, report: object) -> None:
    print(f"[deparrot run] {stage}: {report}", flush=True)


def run(spark: SparkSession, cfg: Config) -> dict[str, object]:
    reports: dict[str, object] = {}
    if cfg.ingest.input and ingest_complete(spark, cfg):
        reports["ingest"] = "skipped: every input row is already accounted for"
    else:
        reports["ingest"] = ingest.run(spark, cfg)
    _say("ingest", reports["ingest"])
    reports["download"] = download.run(spark, cfg)
    _say("download", reports["download"])
    reports["score"] = score.run(spark, cfg)
    _say("score", reports["score"])
    if cluster.published(cfg.cluster):
        reports["cluster-train"] = "skipped: using the published PCA and centroids"
    elif (Path(cfg.cluster.artifacts) / "centroids.npy").is_file():
        reports["cluster-train"] = f"skipped: artifacts exist in {cfg.cluster.artifacts}"
    else:
        reports["cluster-train"] = cluster.train(spark, cfg)
    _say("cluster-train", reports["cluster-train"])
    reports["cluster-assign"] = cluster.assign(spark, cfg)
    _say("cluster-assign", reports["cluster-assign"])
    reports["dedup"] = dedup.run(spark, cfg)
    _say("dedup", reports["dedup"])
    reports["publish"] = publish.run(spark, cfg)
    _say("publish", reports["publish"])
    return reports


def main(argv: list[str] | None = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(["run", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
