"""`deparrot run`: every stage of the registry marked `pipeline`, in registry order.

Every stage is itself resumable and only does pending work; `run` also asks each stage
whether it has anything to do (`Stage.skip`) and skips it when not.
"""

from __future__ import annotations

from pyspark.sql import SparkSession

from jobs.config import Config
from jobs.stages import Stage, pipeline_stages


def _say(stage: str, report: object) -> None:
    print(f"[deparrot run] {stage}: {report}", flush=True)


def run(spark: SparkSession, cfg: Config) -> dict[str, object]:
    reports: dict[str, object] = {}
    for stage in pipeline_stages():
        reason = stage.skip(spark, cfg) if stage.skip is not None else None
        reports[stage.name] = f"skipped: {reason}" if reason else stage.run(spark, cfg)
        _say(stage.name, reports[stage.name])
    return reports


STAGES = (Stage("run", "the whole pipeline, skipping stages whose output is complete", run,
                flags={"--input": "ingest.input"}),)
