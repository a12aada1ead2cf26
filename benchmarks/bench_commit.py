"""What one chunk commit costs, whatever the chunk holds: the constant behind
`rows_per_commit`.

    .venv/bin/python benchmarks/bench_commit.py                  # 10 commits of 2,000 rows
    .venv/bin/python benchmarks/bench_commit.py --rows 20000 --commits 5

Each mode commits `--commits` chunks of new sample_ids, in key ranges, into a scores
table with the score stage's schema, through the project's own Lake methods:

- append: a blind append, the baseline. It is the cheapest Delta commit, and it guards
  against nothing: two concurrent runs would both store the same ids.
- insert_new: what the score stage commits a chunk of new ids with (an insert-only MERGE
  whose condition names the chunk's key range, jobs/work_queue.py).
- upsert: what it commits a chunk with when the chunk holds retried ids (a full MERGE).

Printed: the median seconds per commit (the first commit of each mode warms up and is
left out; Delta writes a checkpoint every 10th commit, which is kept in, as it is in a
stage), the ratio to the append, and the commit's share of a chunk whose own work costs
`--work-ms-per-row` per row (default: the score data path on the 2-core development
machine, 1.4 ms per row per core on 2 cores, from the scale ladder's score tasks).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("append", "insert_new", "upsert")


def chunk_rows(spark, lo: int, rows: int, dim: int):
    """`rows` new score rows with ids lo..lo+rows-1 (an embedding of `dim` floats)."""
    from pyspark.sql import functions as F
    from scale_ladder import conform

    from jobs.score import TABLE_SCHEMA

    df = spark.range(lo, lo + rows, numPartitions=2).select(
        F.col("id").alias("sample_id"), F.lit("ok").alias("status"),
        F.array(*[F.rand(seed=k).cast("float") for k in range(dim)]).alias("image_embedding"),
        F.current_timestamp().alias("scored_at"))
    return conform(df, TABLE_SCHEMA)


def commit_seconds(lake, mode: str, rows: int, commits: int, dim: int) -> list[float]:
    from jobs.score import TABLE_SCHEMA

    lake.ensure("scores", TABLE_SCHEMA)
    out = []
    for k in range(commits + 1):
        lo = k * rows
        df = chunk_rows(lake.spark, lo, rows, dim)
        target = f"t.`sample_id` >= {lo} AND t.`sample_id` < {lo + rows}"
        t0 = time.perf_counter()
        if mode == "append":
            df.write.format("delta").mode("append").save(lake.ref("scores").path)
        elif mode == "insert_new":
            lake.insert_new("scores", df, on=["sample_id"], target_filter=target)
        else:
            lake.upsert("scores", df, on=["sample_id"], target_filter=target)
        out.append(time.perf_counter() - t0)
    return out[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000, help="rows per commit")
    parser.add_argument("--commits", type=int, default=10)
    parser.add_argument("--dim", type=int, default=32, help="embedding floats per row")
    parser.add_argument("--work-ms-per-row", type=float, default=0.7,
                        help="the chunk's own work per row, to put the commit beside")
    args = parser.parse_args()

    from jobs.config import load_config
    from jobs.lake import Lake
    from jobs.session import get_spark

    root = Path(tempfile.mkdtemp(prefix="deparrot-bench-commit-"))
    medians = {}
    for mode in MODES:
        cfg = load_config(ROOT / "conf" / "local.yaml", [
            f"storage.root={root / mode}", f"storage.schema=bench_commit_{mode}",
            "spark.conf.spark.ui.showConsoleProgress=false",
            f"spark.conf.spark.sql.warehouse.dir={root / 'warehouse'}"])
        spark, _ = get_spark(cfg.spark)
        spark.sparkContext.setLogLevel("ERROR")
        seconds = commit_seconds(Lake(spark, cfg), mode, args.rows, args.commits, args.dim)
        medians[mode] = statistics.median(seconds)
        print(f"{mode:<11} {args.commits} commits of {args.rows:,} rows: median "
              f"{medians[mode]:.2f} s (min {min(seconds):.2f}, max {max(seconds):.2f})",
              flush=True)
    work = args.rows * args.work_ms_per_row / 1000
    print(f"\nchunk's own work at {args.work_ms_per_row} ms/row: {work:.2f} s")
    for mode in MODES:
        print(f"{mode:<11} {medians[mode] / medians['append']:.2f}x append; "
              f"{medians[mode] / work:.0%} of the chunk's work")


if __name__ == "__main__":
    main()
