"""Score-stage throughput through Spark against a bare single-process loop, same run.

    .venv/bin/python benchmarks/bench_score.py --images 96 --models tiny

Both sides decode the same JPEGs and run the same models (real RapidOCR detection +
recognition where text is found, CLIP image + text towers, the aesthetic tower + MLP)
with the same batch size. The bare loop gets every core for its one process; Spark runs
`local[N]` with one thread per task. Models are loaded before timing on both sides
(Spark: a warm-up job on reused Python workers). The Spark time includes Arrow transfer,
the Delta MERGE and the rejects refresh. `--models real` uses ViT-B-32 and ViT-L-14
(random weights here: same compute as the real ones).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs import score  # noqa: E402
from jobs.config import load_config  # noqa: E402
from jobs.download import TABLE_SCHEMA as IMAGES_TABLE  # noqa: E402
from jobs.ingest import METADATA_SCHEMA  # noqa: E402
from jobs.lake import Lake  # noqa: E402
from jobs.sample import WORDS, photo_image, text_image  # noqa: E402
from jobs.session import get_spark  # noqa: E402

MODELS = {
    "tiny": ("deparrot-tiny-vit", "deparrot-tiny-vit"),
    "real": ("ViT-B-32", "ViT-L-14"),
}


def make_images(n: int, size: int) -> list[tuple[int, bytes, str]]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        if i % 3 == 0:
            words = WORDS[i % len(WORDS)]
            img, text = text_image(rng, size, words), f"{words} poster"
        else:
            img, text = photo_image(rng, size), "a photo of a landscape"
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append((i + 1, buf.getvalue(), text))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--models", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    b32, l14 = MODELS[args.models]
    work = Path(tempfile.mkdtemp(prefix="deparrot-bench-score-"))
    # The project's local settings (e.g. Delta snapshot partitions), then the bench's own.
    cfg = load_config(Path(__file__).resolve().parents[1] / "conf" / "local.yaml", [
        f"spark.master=local[{args.cores}]", "spark.conf.spark.ui.showConsoleProgress=false",
        f"spark.conf.spark.sql.shuffle.partitions={args.cores}",
        f"spark.conf.spark.sql.warehouse.dir={work / 'warehouse'}",
        f"storage.root={work / 'lake'}", f"score.clip_model={b32}",
        "score.clip_pretrained=random", f"score.aesthetic_clip_model={l14}",
        "score.aesthetic_clip_pretrained=random", "score.aesthetic_weights=random",
        "score.random_init_ok=true", f"score.batch_size={args.batch_size}",
        f"score.arrow_batch_size={args.batch_size * 4}", f"score.partitions={args.cores}",
    ])
    images = make_images(args.images, args.size)

    # Bare loop: one process, all cores, the stage's own per-batch function.
    from udfs.score import _score_part

    bare_settings = dataclasses.replace(score.score_settings(cfg.score), cpu_threads=args.cores)
    frame = pd.DataFrame({"sample_id": [i for i, _, _ in images],
                          "image": [b for _, b, _ in images], "text": [t for *_, t in images],
                          "similarity": [None] * len(images), "aesthetic": [None] * len(images)})
    _score_part(frame.iloc[:2], bare_settings)  # load the models
    t0 = time.perf_counter()
    rows = []
    for start in range(0, len(frame), args.batch_size):
        rows += _score_part(frame.iloc[start:start + args.batch_size], bare_settings)
    bare = time.perf_counter() - t0
    assert len(rows) == len(images)

    spark, _ = get_spark(cfg.spark)
    spark.sparkContext.setLogLevel("ERROR")
    lake = Lake(spark, cfg)
    lake.ensure("metadata", METADATA_SCHEMA)
    lake.ensure("images", IMAGES_TABLE)

    def load(batch):
        spark.createDataFrame(
            [(i, f"http://x/{i}", t, "laion400m", "f", i) for i, _, t in batch],
            "sample_id long, url string, text string, family string, source_file string, "
            "source_row long").writeTo(lake.ref("metadata").name).append()
        spark.createDataFrame([(i, b, "ok") for i, b, _ in batch],
                              "sample_id long, image binary, status string") \
            .writeTo(lake.ref("images").name).append()

    warm = [(10_000_000 + i, b, t) for i, b, t in images[: 2 * args.cores]]
    load(warm)
    score.run(spark, cfg)  # loads the models in every reused Python worker
    load(images)
    t0 = time.perf_counter()
    report = score.run(spark, cfg)
    on_spark = time.perf_counter() - t0
    assert report.pending == len(images), report
    print(f"Spark stage phases (s): {report.seconds}")

    n = len(images)
    print(f"{n} images {args.size}px, models={args.models} ({b32} + {l14}), "
          f"batch {args.batch_size}, {args.cores} cores")
    print(f"{'run':<34}{'seconds':>9}{'images/s':>10}{'ratio':>8}")
    print(f"{'bare loop (1 process, all cores)':<34}{bare:>9.1f}{n / bare:>10.2f}{1:>8.2f}")
    print(f"{'Spark score stage':<34}{on_spark:>9.1f}{n / on_spark:>10.2f}"
          f"{bare / on_spark:>8.2f}")
    inner = report.seconds["score_and_write"]
    print(f"{'  of which scoring + Delta append':<34}{inner:>9.1f}{n / inner:>10.2f}"
          f"{bare / inner:>8.2f}")
    spark.stop()


if __name__ == "__main__":
    main()
