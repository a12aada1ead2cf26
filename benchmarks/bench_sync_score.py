"""Sync. Score throughput through Spark against a bare single-process loop, same run.

    .venv/bin/python benchmarks/bench_sync_score.py --words 200 --model tiny
    .venv/bin/python benchmarks/bench_sync_score.py --words 400 --model real  # ViT-B-32

Both sides render the same words in the four styles and run the same model (random
weights: the same compute as trained ones) with the same batch size. The bare loop is
one process with every core (`udfs.sync_score.sync_batches` over one pandas frame);
Spark is `deparrot sync-score` on `local[N]`, one thread per task, including the Delta
writes of both tables. Models are loaded before timing on both sides (Spark: a warm-up
run on reused Python workers). A "word" is one word in all four styles.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs import sync_score  # noqa: E402
from jobs.config import load_config  # noqa: E402
from jobs.session import get_spark  # noqa: E402
from udfs.sync_score import sync_batches  # noqa: E402

MODELS = {"tiny": "deparrot-tiny-vit", "real": "ViT-B-32"}


def words(n: int) -> list[str]:
    from jobs.sample import WORDS

    base = [w for phrase in WORDS for w in phrase.split()]
    return [f"{base[i % len(base)].lower()}{i // len(base) or ''}" for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=200)
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="deparrot-bench-sync-"))
    vocab = work / "vocab.txt"
    vocab.write_text("\n".join(words(args.words)) + "\n")
    cfg = load_config(Path(__file__).resolve().parents[1] / "conf" / "local.yaml", [
        f"spark.master=local[{args.cores}]",
        f"spark.conf.spark.sql.shuffle.partitions={args.cores}",
        f"spark.conf.spark.sql.warehouse.dir={work / 'warehouse'}",
        f"storage.root={work / 'lake'}", f"sync_score.vocabulary={vocab}",
        f"sync_score.models=[{{model: {MODELS[args.model]}, pretrained: random}}]",
        "sync_score.random_init_ok=true", f"sync_score.batch_size={args.batch_size}",
        f"sync_score.partitions={args.cores}", f"sync_score.arrow_batch_size={args.batch_size}",
    ])
    sc = cfg.sync_score
    bare_settings = dataclasses.replace(sc.settings(), cpu_threads=args.cores)
    frame = pd.DataFrame({"word": words(args.words), "word_rank": range(args.words)})
    list(sync_batches(iter([frame.iloc[:2]]), tuple(sc.models), bare_settings))  # load
    t0 = time.perf_counter()
    out = pd.concat(list(sync_batches(iter([frame]), tuple(sc.models), bare_settings)))
    bare = time.perf_counter() - t0
    assert len(out) == 4 * args.words

    spark, _ = get_spark(cfg.spark)
    spark.sparkContext.setLogLevel("FATAL")
    warm = dataclasses.replace(cfg, sync_score=dataclasses.replace(sc, top_n=4 * args.cores))
    sync_score.run(spark, warm)  # loads the model in every reused Python worker
    t0 = time.perf_counter()
    report = sync_score.run(spark, cfg)
    on_spark = time.perf_counter() - t0
    assert report.words == args.words

    n = args.words
    print(f"\n{n} words x 4 styles, model={MODELS[args.model]}, batch {args.batch_size}, "
          f"{args.cores} cores")
    print(f"{'run':<36}{'seconds':>9}{'words/s':>10}{'images/s':>10}{'ratio':>8}")
    for name, secs in (("bare loop (1 process, all cores)", bare),
                       ("Spark sync-score (with Delta)", on_spark)):
        print(f"{name:<36}{secs:>9.1f}{n / secs:>10.2f}{4 * n / secs:>10.2f}"
              f"{bare / secs:>8.2f}")
    spark.stop()


if __name__ == "__main__":
    main()
