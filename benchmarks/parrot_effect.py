"""The paper's effect in miniature: parrot captions teach CLIP to spot text.

One generated sample (jobs/sample.py: photo-like images, and text posters whose
captions parrot the words printed on them) goes through the whole pipeline on local
Spark. Then the tiny open_clip model (`deparrot-tiny-vit`, random init) is trained twice
with `deparrot train` (open_clip_train under TorchDistributor, CPU), seeing the same
number of samples:

  (a) baseline: every downloaded pair (`export.source: images`), posters included;
  (b) debiased: the published subset (`export.source: subset`), no text images.

Both checkpoints, and the untrained model as a reference, get the Sync. Score
(udfs/sync_score.py: each word rendered on a plain image vs the word as text) over the
sample's caption 1-gram vocabulary, split into the words printed on posters ("parrot"
words) and the rest. The paper's claim, in miniature: (a) scores higher than (b) on the
parrot words. Without udfs/sync_score.py the script still trains and reports losses.

A tiny model trained for a few hundred steps also moves *every* image-text cosine by a
common offset, which the raw Sync. Score cannot tell from reading. So the script also
reports the "sync gap": the cosine of a word image with its own word minus its mean
cosine with the other words of the vocabulary (0 = the model cannot read the word).
`--image-size 128` trains a variant of the tiny model with 128 px input (the sample's
poster text is ~7 px tall at the default 64 px), registered in every training process
through `train.model_config`.

    .venv/bin/python benchmarks/parrot_effect.py                       # ~10 min, 2 cores
    .venv/bin/python benchmarks/parrot_effect.py --rows 160 --epochs 2 --samples 256
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs import export, pipeline, train  # noqa: E402
from jobs.config import Config, load_config  # noqa: E402
from jobs.demo import serve  # noqa: E402
from jobs.lake import Lake  # noqa: E402
from jobs.sample import WORDS, generate  # noqa: E402
from jobs.session import get_spark  # noqa: E402
from udfs.clip_models import TINY_MODEL_CONFIG, TINY_MODEL_NAME  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def configure(work: Path, args: argparse.Namespace) -> Config:
    """conf/demo.yaml (offline scores, real OCR) with everything under `work`."""
    return load_config(ROOT / "conf" / "demo.yaml", [
        f"storage.root={work / 'lake'}", f"sample.out={work / 'sample'}",
        f"sample.rows={args.rows}", f"sample.seed={args.seed}",
        f"cluster.artifacts={work / 'clusters'}", f"ingest.input={work / 'sample' / 'metadata'}",
        f"spark.conf.spark.sql.warehouse.dir={work / 'warehouse'}",
        "spark.log_level=ERROR",
    ])


def model_for(size: int) -> tuple[str, dict]:
    """The tiny open_clip model at `size` px input: (name, config to register or {})."""
    if size == TINY_MODEL_CONFIG["vision_cfg"]["image_size"]:
        return TINY_MODEL_NAME, {}
    config = copy.deepcopy(TINY_MODEL_CONFIG)
    config["vision_cfg"]["image_size"] = size
    return f"{TINY_MODEL_NAME}-{size}", config


def vocabulary(spark, cfg: Config) -> tuple[list[str], set[str]]:
    """Caption 1-grams of the downloaded sample (first spelling kept), and the parrot ones."""
    texts = [r["text"] for r in Lake(spark, cfg).read("metadata").select("text").collect()]
    seen: dict[str, str] = {}
    for text in texts:
        for word in re.findall(r"[A-Za-z0-9]+", text or ""):
            seen.setdefault(word.lower(), word)
    parrot = {w.lower() for phrase in WORDS for w in phrase.split()}
    return sorted(seen.values(), key=str.lower), parrot


def train_on(spark, cfg: Config, name: str, source: str, work: Path,
             args: argparse.Namespace) -> dict:
    """Export `source` and train the tiny model on it; the report and the exported counts."""
    ex = dataclasses.replace(cfg.export, out=str(work / f"shards-{name}"), source=source,
                             shard_size=args.shard_size)
    model, model_config = model_for(args.image_size)
    tc = dataclasses.replace(
        cfg.train, model=model, model_config=model_config, name=name, logs=str(work / "train"),
        batch_size=args.batch, lr=args.lr, warmup=args.warmup, wd=0.1, epochs=args.epochs,
        train_num_samples=args.samples, workers=0, num_processes=args.processes,
        log_every_n_steps=1, seed=args.seed)
    cfg = dataclasses.replace(cfg, export=ex, train=tc)
    shards = export.run(spark, cfg)
    start = time.perf_counter()
    report = train.run(spark, cfg)
    losses = [loss for _, loss in train.train_losses(Path(report.log).read_text())]
    k = max(1, len(losses) // 5)
    return {"pairs": shards.rows, "checkpoint": report.checkpoint,
            "loss_first": float(np.mean(losses[:k])), "loss_last": float(np.mean(losses[-k:])),
            "train_s": round(time.perf_counter() - start, 1)}


def sync_scores(model: str, checkpoint: str | None, words: list[str], parrot: set[str]
                ) -> dict | None:
    """Sync. Score (mean over word x style) and sync gap: all, parrot and other words."""
    try:
        from udfs.render import RenderSettings, render_word
        from udfs.sync_score import SyncSettings, score_words
    except ImportError:
        return None
    from udfs.clip_models import encode_images, encode_texts, load_clip

    bundle = load_clip(model, checkpoint, "cpu", "fp32", random_init_ok=checkpoint is None)
    settings = SyncSettings(precision="fp32", prefer_gpu=False, random_init_ok=True)
    styles = RenderSettings().styles
    table = np.stack([score_words(bundle, words, s, settings) for s in styles])  # (S, W)
    texts = encode_texts(bundle, words, 64)
    gaps = []
    for style in styles:
        sim = encode_images(bundle, [render_word(w, style) for w in words], 64) @ texts.T
        others = (sim.sum(axis=1) - np.diag(sim)) / (len(words) - 1)
        gaps.append(np.diag(sim) - others)
    gap = np.stack(gaps)  # (S, W)
    is_parrot = np.array([w.lower() in parrot for w in words])
    out: dict = {"words": len(words), "parrot_words": int(is_parrot.sum())}
    for label, mask in (("all", np.ones_like(is_parrot)), ("parrot", is_parrot),
                        ("other", ~is_parrot)):
        out[label] = float(np.nanmean(table[:, mask])) if mask.any() else float("nan")
        out[f"gap_{label}"] = float(np.mean(gap[:, mask])) if mask.any() else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400, help="rows in the generated sample")
    parser.add_argument("--samples", type=int, default=1024, help="samples per epoch")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32, help="per process")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64, help="model input size (px)")
    parser.add_argument("--work", default="", help="working folder (default: a temp dir)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="deparrot-parrot-effect-"))
    cfg = configure(work, args)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    spark, _ = get_spark(cfg.spark)
    spark.sparkContext.setLogLevel("ERROR")
    (work / "sample").mkdir(parents=True, exist_ok=True)
    with serve(work / "sample") as base_url:
        sample = generate(dataclasses.replace(cfg.sample, base_url=base_url))
        pipeline.run(spark, cfg)
    seconds["sample+pipeline"] = round(time.perf_counter() - clock, 1)
    words, parrot = vocabulary(spark, cfg)
    results = {}
    for name, source in (("all_pairs", "images"), ("debiased", "subset")):
        clock = time.perf_counter()
        results[name] = train_on(spark, cfg, name, source, work, args)
        seconds[f"export+train {name}"] = round(time.perf_counter() - clock, 1)
    clock = time.perf_counter()
    model, model_config = model_for(args.image_size)
    if model_config:
        from udfs.clip_models import register_model_config

        register_model_config(model, model_config)
    runs = [("untrained", None)] + [(n, r["checkpoint"]) for n, r in results.items()]
    for name, checkpoint in runs:
        results.setdefault(name, {})["sync"] = sync_scores(model, checkpoint, words, parrot)
    seconds["sync"] = round(time.perf_counter() - clock, 1)
    summary = {"sample": sample.kinds, "samples_seen": args.samples * args.epochs,
               "results": results, "seconds": seconds, "work": str(work)}
    print(json.dumps(summary, indent=2))
    _print_table(results)


def _print_table(results: dict) -> None:
    keys = ("all", "parrot", "other", "gap_all", "gap_parrot", "gap_other")
    print(f"\n{'model':<11} {'pairs':>5} {'loss first->last':>17} "
          + " ".join(f"{k:>10}" for k in keys))
    for name, r in results.items():
        sync = r.get("sync") or {}
        loss = (f"{r['loss_first']:.3f}->{r['loss_last']:.3f}" if "loss_first" in r else "-")
        print(f"{name:<11} {r.get('pairs', '-'):>5} {loss:>17} "
              + " ".join(f"{sync.get(k, float('nan')):>10.4f}" for k in keys))


if __name__ == "__main__":
    main()
