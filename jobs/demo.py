"""`deparrot demo`: the README's main job on the embedded local default.

Generates the sample, runs the pipeline on it with local Spark and Delta tables in a
local folder, then prints where the result is and a SQL query over it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jobs.config import Config
from jobs.sample import generate
from jobs.session import spark_session


def run_demo(cfg: Config) -> None:
    sample = generate(cfg.sample)
    print(f"sample: {sample.rows} rows in {sample.out}: {sample.kinds}")
    cfg = dataclasses.replace(
        cfg, ingest=dataclasses.replace(cfg.ingest, input=str(sample.out / "metadata"))
    )
    from jobs import ingest
    from jobs.lake import Lake

    with spark_session(cfg.spark) as spark:
        spark.sparkContext.setLogLevel("ERROR")
        report = ingest.run(spark, cfg)
        print(f"ingest: {report.input_rows} rows in, {report.kept} kept, "
              f"{report.already_present} already present, rejected {report.rejected}")
        lake = Lake(spark, cfg)
        table = lake.register("metadata")
        rejects = lake.register("rejects")
        where = table.path or table.name
        print(f"\nresult: Delta table {table.name} at {Path(where)}")
        query = (
            f"SELECT family, count(*) AS rows, round(avg(similarity), 3) AS avg_similarity "
            f"FROM {table.name} GROUP BY family"
        )
        print(f"spark.sql> {query}")
        spark.sql(query).show(truncate=False)
        query = (
            f"SELECT stage, reason, count(*) AS rows FROM {rejects.name} "
            f"GROUP BY stage, reason ORDER BY stage, reason"
        )
        print(f"spark.sql> {query}")
        spark.sql(query).show(truncate=False)
