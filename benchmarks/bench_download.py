"""Download-stage throughput against a local HTTP server, with a bare loop baseline.

    .venv/bin/python benchmarks/bench_download.py --images 400

A threaded server on 127.0.0.1 serves generated JPEGs (`--size` px, default 512, resized
to 256 by the stage as img2dataset would). Baseline: one process running the same
fetch + decode + resize + encode code (`udfs.images`) with the same concurrency, no
Spark. Then `deparrot download` over a metadata table of the same URLs on local[N].
Prints images/s, images/s per core and the ratio, after a warm-up run on other ids.
The server shares the cores.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs import download  # noqa: E402
from jobs.config import load_config  # noqa: E402
from jobs.demo import serve  # noqa: E402
from jobs.ingest import METADATA_SCHEMA  # noqa: E402
from jobs.lake import Lake  # noqa: E402
from jobs.sample import photo_image  # noqa: E402
from jobs.session import get_spark  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="deparrot-bench-download-"))
    files = work / "images"
    files.mkdir()
    rng = np.random.default_rng(0)
    for i in range(args.images):
        buf = io.BytesIO()
        photo_image(rng, args.size).save(buf, "JPEG", quality=90)
        (files / f"{i}.jpg").write_bytes(buf.getvalue())

    with serve(work) as base:
        urls = [f"{base}images/{i}.jpg" for i in range(args.images)]
        # The project's local settings (e.g. Delta snapshot partitions), then the bench's own.
        cfg = load_config(Path(__file__).resolve().parents[1] / "conf" / "local.yaml", [
            f"spark.master=local[{args.cores}]",
            "spark.conf.spark.ui.showConsoleProgress=false",
            f"spark.conf.spark.sql.shuffle.partitions={args.cores}",
            f"spark.conf.spark.sql.warehouse.dir={work / 'warehouse'}",
            f"storage.root={work / 'lake'}", "download.fetch.allowed_networks=[127.0.0.1/32]",
            f"download.concurrency={args.concurrency}", f"download.partitions={args.cores}",
        ])

        from udfs.images import download_batches

        fetch, settings = download.fetch_settings(cfg.download), download.image_settings(
            cfg.download)
        frame = pd.DataFrame({"sample_id": range(args.images), "url": urls})
        t0 = time.perf_counter()
        rows = sum(len(b) for b in download_batches(iter([frame]), fetch, settings,
                                                     args.concurrency))
        bare = time.perf_counter() - t0
        assert rows == args.images

        spark, _ = get_spark(cfg.spark)
        spark.sparkContext.setLogLevel("ERROR")
        lake = Lake(spark, cfg)
        lake.ensure("metadata", METADATA_SCHEMA)

        def add_metadata(rows):
            spark.createDataFrame(
                [(i, u, "t", "laion400m", "f", i) for i, u in rows],
                "sample_id long, url string, text string, family string, source_file string, "
                "source_row long").writeTo(lake.ref("metadata").name).append()

        # Warm-up on other ids: JVM, Delta tables, Python workers and connection pools.
        add_metadata([(10_000_000 + i, u) for i, u in enumerate(urls[:20])])
        download.run(spark, cfg)
        add_metadata(list(enumerate(urls)))
        t0 = time.perf_counter()
        report = download.run(spark, cfg)
        on_spark = time.perf_counter() - t0
        assert report.pending == args.images, report
    print(f"Spark stage phases (s): {report.seconds}")

    n, c = args.images, args.cores
    print(f"{n} images of {args.size}px -> 256px JPEG, concurrency {args.concurrency}, "
          f"{c} cores (server on the same cores)")
    print(f"{'run':<30}{'seconds':>9}{'images/s':>10}{'per core':>10}{'ratio':>8}")
    print(f"{'bare loop (1 process)':<30}{bare:>9.1f}{n / bare:>10.1f}{n / bare / c:>10.1f}"
          f"{1:>8.2f}")
    print(f"{'Spark download stage':<30}{on_spark:>9.1f}{n / on_spark:>10.1f}"
          f"{n / on_spark / c:>10.1f}{bare / on_spark:>8.2f}")
    fetch = report.seconds["work_and_write"]
    print(f"{'  of which fetch+resize+commit':<30}{fetch:>9.1f}{n / fetch:>10.1f}"
          f"{n / fetch / c:>10.1f}{bare / fetch:>8.2f}")
    spark.stop()


if __name__ == "__main__":
    main()
