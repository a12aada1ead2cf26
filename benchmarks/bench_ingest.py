"""Ingest throughput over generated LAION-400M metadata, against a plain copy baseline.

    .venv/bin/python benchmarks/bench_ingest.py --rows 1000000 --files 8

Baseline: the same parquet read and written to a Delta table with no validation, no
dedup and no MERGE, in the same Spark session: the floor any ingest pays. The ratio says
what the row accounting (validation, duplicate ids, idempotent MERGE, rejects) costs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs import ingest  # noqa: E402
from jobs.config import load_config  # noqa: E402
from jobs.sample import metadata_table  # noqa: E402
from jobs.session import get_spark  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="deparrot-bench-ingest-"))
    src = work / "metadata"
    src.mkdir()
    per = -(-args.rows // args.files)
    t0 = time.perf_counter()
    for f in range(args.files):
        n = min(per, args.rows - f * per)
        pq.write_table(metadata_table(n, seed=f, start_id=f * per), src / f"part-{f:05d}.parquet")
    print(f"generated {args.rows:,} rows in {args.files} files in {time.perf_counter() - t0:.1f}s")

    # The project's local settings (e.g. Delta snapshot partitions), then the bench's own.
    cfg = load_config(Path(__file__).resolve().parents[1] / "conf" / "local.yaml", [
        f"spark.master={args.master}", "spark.conf.spark.sql.shuffle.partitions=8",
        "spark.conf.spark.ui.showConsoleProgress=false", "spark.conf.spark.driver.memory=6g",
        f"spark.conf.spark.sql.warehouse.dir={work / 'warehouse'}",
        f"storage.root={work / 'lake'}", f"ingest.input={src}",
    ])
    spark, _ = get_spark(cfg.spark)
    spark.sparkContext.setLogLevel("ERROR")
    spark.read.parquet(str(src)).count()  # warm the JVM and the file listing for both runs

    t0 = time.perf_counter()
    spark.read.parquet(str(src)).write.format("delta").save(str(work / "baseline"))
    baseline = time.perf_counter() - t0

    t0 = time.perf_counter()
    report = ingest.run(spark, cfg)
    first = time.perf_counter() - t0
    assert report.input_rows == args.rows == report.kept + report.rejected_total

    t0 = time.perf_counter()
    rerun = ingest.run(spark, dataclasses.replace(cfg))
    again = time.perf_counter() - t0
    assert rerun.kept == 0 and rerun.already_present == report.kept

    print(f"rows: {args.rows:,}  kept: {report.kept:,}  rejected: {report.rejected}")
    print(f"{'run':<28}{'seconds':>10}{'rows/s':>14}{'vs baseline':>14}")
    for name, secs in (("baseline parquet->delta", baseline), ("deparrot ingest", first),
                       ("deparrot ingest (re-run)", again)):
        print(f"{name:<28}{secs:>10.1f}{args.rows / secs:>14,.0f}{secs / baseline:>13.2f}x")
    spark.stop()


if __name__ == "__main__":
    main()
