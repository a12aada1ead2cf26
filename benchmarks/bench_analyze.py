"""`deparrot analyze` throughput and driver memory over generated metadata + OCR rows.

    .venv/bin/python benchmarks/bench_analyze.py --rows 100000 1000000

For each size, in a fresh subprocess (so peak memory is that size's own): generate N
LAION-style metadata rows and N scores rows (a third of the images carry text; half of
those have captions that repeat some of it, with OCR misreads), write them as Delta
tables, then time in the same Spark session:

- baseline: a plain Spark group-by over the same join (count and mean CLIP score per
  has_text and cluster), the floor of any pass over these rows;
- `deparrot analyze`: per-row CoTR (exact, normalised, fuzzy), Tables 1-2, per-cluster
  OCR types, the funnel and the three n-gram vocabularies, written as Delta tables.

Prints rows/s for both, the ratio, and the driver's memory: the Python driver's max RSS
and the JVM driver heap still in use after the run (after a GC). Neither should grow
with rows: nothing but aggregates is collected.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def scores_table(meta: pa.Table, seed: int) -> pa.Table:
    """OCR results for the generated captions: no text, unrelated text, or parroted."""
    rng = np.random.default_rng(seed)
    n = meta.num_rows
    texts = meta.column("TEXT").to_pylist()
    kind = rng.integers(0, 6, n)  # 0-3 no text, 4 unrelated text, 5 parrot
    ocr = np.where(kind == 4, "SALE 50% OFF", "")
    ocr = ocr.astype(object)
    for i in np.flatnonzero(kind == 5):
        words = texts[i].split()[-2:]  # "<thing> <id>": the caption's own words
        ocr[i] = " ".join(w.upper() if rng.random() < 0.5 else w[:-1] + "0" for w in words)
    return pa.table({
        "sample_id": meta.column("SAMPLE_ID"), "status": pa.array(["ok"] * n),
        "ocr_text": pa.array(ocr.tolist(), pa.string()), "has_text": pa.array(kind >= 4),
        "clip_score": pa.array(rng.uniform(0.2, 0.45, n)),
        "kmeans": pa.array(rng.integers(0, 100, n), pa.int64()),
    })


def peak_rss_mib() -> float:
    """This process's own RSS high-water mark (VmHWM). Not ru_maxrss: Linux carries the
    forking parent's high-water mark across exec into it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def generate(rows: int) -> Path:
    """Write the inputs in this (parent) process, so the measured one holds none of them."""
    from jobs.sample import metadata_table

    work = Path(tempfile.mkdtemp(prefix="deparrot-bench-analyze-"))
    meta = metadata_table(rows, seed=1)
    pq.write_table(meta, work / "meta.parquet")
    pq.write_table(scores_table(meta, 2), work / "scores.parquet")
    return work


def one_size(rows: int, work: Path) -> dict[str, float]:
    from pyspark.sql import functions as F

    from jobs import analyze
    from jobs.config import load_config
    from jobs.lake import Lake
    from jobs.session import get_spark
    cfg = load_config(ROOT / "conf" / "local.yaml", [
        f"storage.root={work / 'lake'}", f"spark.conf.spark.sql.warehouse.dir={work / 'wh'}",
        f"analyze.export_dir={work / 'vocab'}"])
    spark, _ = get_spark(cfg.spark)
    spark.sparkContext.setLogLevel("FATAL")
    lake = Lake(spark, cfg)
    raw = spark.read.parquet(str(work / "meta.parquet"))
    raw.select(F.col("SAMPLE_ID").alias("sample_id"), F.col("TEXT").alias("text"),
               F.lit("f").alias("source_file")).write.format("delta").save(
        lake.ref("metadata").path)
    sc = spark.read.parquet(str(work / "scores.parquet"))
    sc.drop("kmeans").write.format("delta").save(lake.ref("scores").path)
    sc.select("sample_id", "kmeans").write.format("delta").save(lake.ref("clusters").path)

    t0 = time.perf_counter()
    joined = lake.read("scores").join(lake.read("metadata"), "sample_id").join(
        lake.read("clusters"), "sample_id")
    joined.groupBy("has_text", "kmeans").agg(F.count("*").alias("n"),
                                             F.avg("clip_score").alias("m")).write \
        .format("delta").mode("overwrite").save(str(work / "baseline"))
    baseline = time.perf_counter() - t0
    before = peak_rss_mib()
    t0 = time.perf_counter()
    report = analyze.run(spark, cfg)
    seconds = time.perf_counter() - t0
    assert report.rows == rows, report.rows
    spark.sparkContext._jvm.java.lang.System.gc()  # what the driver still holds
    jvm = spark.sparkContext._jvm.java.lang.Runtime.getRuntime()
    heap = (jvm.totalMemory() - jvm.freeMemory()) / 2**20
    spark.stop()
    return {"rows": rows, "baseline_s": baseline, "analyze_s": seconds,
            "python_rss_mib": peak_rss_mib(),
            "jvm_heap_mib": heap, "rss_before_mib": before,
            "cotr_text": report.summary.get("cotr_text", 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one_size(args.one, Path(args.work))))
        return
    results = []
    for rows in args.rows:
        work = generate(rows)
        out = subprocess.run([sys.executable, __file__, "--one", str(rows), "--work",
                              str(work)], check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.split("RESULT ", 1)[1]))
    print(f"{'rows':>10}{'baseline s':>12}{'rows/s':>10}{'analyze s':>11}{'rows/s':>10}"
          f"{'ratio':>7}{'py peak MiB':>13}{'(before)':>10}{'JVM heap MiB':>14}")
    for r in results:
        n = r["rows"]
        print(f"{n:>10,}{r['baseline_s']:>12.1f}{n / r['baseline_s']:>10,.0f}"
              f"{r['analyze_s']:>11.1f}{n / r['analyze_s']:>10,.0f}"
              f"{r['baseline_s'] / r['analyze_s']:>7.2f}{r['python_rss_mib']:>13.0f}"
              f"{r['rss_before_mib']:>10.0f}"
              f"{r['jvm_heap_mib']:>14.0f}")


if __name__ == "__main__":
    main()
