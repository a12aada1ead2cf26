"""`deparrot miniature`: the paper's effect, and the text policies, shown on a laptop.

Parrot captions teach CLIP to spot text; a model trained on the curated subset does
not learn to. The experiment:

1. generates the miniature world (jobs/miniature_world.py: visual, parrot and mixed
   pairs) and serves it over HTTP; ingest and download fetch it as any LAION shard;
2. trains `raw` on every downloaded pair (`export.source: images`);
3. scores the images with the real OCR and, as the CLIP of the filter, the `raw` model
   itself: the paper's and T-MARS' filters use a CLIP trained on raw web data (OpenAI's),
   which reads; a random CLIP would make the masked score (tmars) meaningless;
4. clusters, dedups and publishes one subset per `recipe.text_policy` (tables
   `<tables.subset>_<policy>`);
5. trains one model per subset, every run seeing `miniature.samples` samples;
6. measures every model (udfs/reading_metrics.py): Sync. Score, sync gap and read
   top-1 on words rendered at the model's input size; visual top-1 on held-out visual
   images. Each run's row in `training_runs` carries them; `deparrot report` plots them.

The effect counts as shown when raw reads (read top-1 >= 0.5, gap >= 0.1), the paper's
subset does not (top-1 within 0.1 of chance, gap <= 0.02) and both see about as well
(visual top-1 within 0.15). `--quick` publishes every policy but trains raw and the
paper's subset only, on a smaller world, for the slow test set.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import SparkSession

from jobs import cluster, dedup, download, export, ingest, publish, score, train
from jobs.config import Config, MiniatureConfig
from jobs.errors import UserError
from jobs.stages import Stage
from udfs.storage import local_path
from udfs.timing import Laps

PAPER_POLICY = "any_text"


@dataclass
class Verdict:
    """The effect's criteria, each with the figure it was decided on."""

    raw_reads: bool
    subset_blind: bool
    sees_alike: bool

    @property
    def shown(self) -> bool:
        return self.raw_reads and self.subset_blind and self.sees_alike


@dataclass
class MiniatureReport:
    world: dict[str, int]
    words: int
    kept: dict[str, dict[str, int]] = field(default_factory=dict)  # policy -> kind -> pairs
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    verdict: Verdict | None = None

    def table(self) -> str:
        """The runs as a Markdown table (what docs/measurements.md shows)."""
        head = ("| run | pairs | Sync. Score | sync gap | read top-1 | visual top-1 |\n"
                "|---|---|---|---|---|---|")
        lines = [head] + [
            f"| {name} | {r['pairs']} | {r['sync_score']:.3f} | {r['sync_gap']:.3f} | "
            f"{r['read_top1']:.2f} | {r['visual_top1']:.2f} |"
            for name, r in self.runs.items()]
        return "\n".join(lines)


def judge(runs: dict[str, dict[str, Any]], words: int) -> Verdict:
    """The issue's criteria on the raw run and the paper's subset."""
    raw, paper = runs["raw"], runs[PAPER_POLICY]
    chance = 1.0 / words
    return Verdict(
        raw_reads=raw["read_top1"] >= 0.5 and raw["sync_gap"] >= 0.1,
        subset_blind=paper["read_top1"] <= chance + 0.1 and paper["sync_gap"] <= 0.02,
        sees_alike=abs(raw["visual_top1"] - paper["visual_top1"]) <= 0.15,
    )


def settings(cfg: Config, quick: bool) -> MiniatureConfig:
    mc = cfg.miniature
    if not quick:
        return mc
    return dataclasses.replace(mc, rows=mc.quick_rows, samples=mc.quick_samples)


def trained_policies(mc: MiniatureConfig, quick: bool) -> list[str]:
    """Every policy is published and counted; --quick trains on the paper's only."""
    return [PAPER_POLICY] if quick else list(mc.policies)


def world_config(cfg: Config, mc: MiniatureConfig) -> Config:
    """cfg with everything under miniature.out: world, lake, shards, training logs."""
    out = miniature_folder(mc)
    storage = dataclasses.replace(cfg.storage, root=str(out / "lake"))
    sample = dataclasses.replace(cfg.sample, out=str(out / "world"), rows=mc.rows,
                                 seed=mc.seed, image_size=mc.image_size)
    ing = dataclasses.replace(cfg.ingest, input=str(out / "world" / "metadata"))
    return dataclasses.replace(cfg, storage=storage, sample=sample, ingest=ing)


def miniature_folder(mc: MiniatureConfig) -> Path:
    """A local folder (open_clip_train writes its checkpoints with plain file calls)."""
    return Path(local_path(mc.out)).absolute()


def train_on(spark: SparkSession, cfg: Config, mc: MiniatureConfig, name: str, source: str,
             evaluate) -> dict[str, Any]:
    """Export `source` (images | subset) and train model `name` on it: one epoch of
    mc.samples, so one cosine schedule over the same samples for every run."""
    out = miniature_folder(mc)
    ex = dataclasses.replace(cfg.export, out=str(out / "shards" / name), source=source,
                             shard_size=256, val_fraction=0.0)
    tc = dataclasses.replace(
        cfg.train, model=mc.model, pretrained="", model_config={}, name=name,
        logs=str(out / "train"), batch_size=mc.batch_size, lr=mc.lr, warmup=mc.warmup,
        wd=0.1, epochs=1, train_num_samples=mc.samples, workers=1,
        num_processes=1, launcher="in_process", local_mode=True, log_every_n_steps=25,
        seed=mc.seed, resume=False, sync_words="")
    run_cfg = dataclasses.replace(cfg, export=ex, train=tc)
    shards = export.run(spark, run_cfg)
    if shards.rows < mc.batch_size:
        raise UserError(f"miniature: {name} has {shards.rows} pairs, fewer than one batch "
                        f"({mc.batch_size}); raise miniature.rows")
    report = train.run(spark, run_cfg,
                       evaluate=lambda ckpt: {"dataset": name, "pairs": shards.rows,
                                              **evaluate(ckpt)})
    return {"pairs": shards.rows, "checkpoint": report.checkpoint, "seconds": report.seconds,
            "loss_start": report.loss_start, "loss_end": report.loss_end,
            **{k: v for k, v in report.evaluated.items() if k not in ("dataset", "pairs")}}


def evaluator(mc: MiniatureConfig):
    """checkpoint -> reading and seeing metrics of mc.model (built once per run here)."""
    from jobs.miniature_world import (
        POSTER_FONT_SHARE,
        VOCABULARY,
        visual_classes,
        visual_eval_set,
    )
    from udfs.clip_models import load_clip
    from udfs.reading_metrics import reading, seeing
    from udfs.render import RenderSettings

    size = mc.model_input
    render = RenderSettings(image_size=size, font_size=round(size * np.mean(POSTER_FONT_SHARE)),
                            font_path=mc.render_font())
    images, labels = visual_eval_set(mc.image_size, mc.eval_per_class, mc.seed)
    arrays = [np.asarray(img, dtype=np.uint8) for img in images]
    classes = visual_classes()

    def evaluate(checkpoint: str | None) -> dict[str, float]:
        bundle = load_clip(mc.model, checkpoint or "random", "cpu", "fp32",
                           random_init_ok=checkpoint is None)
        return {**reading(bundle, list(VOCABULARY), render),
                "visual_top1": seeing(bundle, arrays, labels, classes)}

    return evaluate


def kept_by_kind(spark: SparkSession, cfg: Config) -> dict[str, int]:
    """Pairs of each world kind (truth.parquet) in cfg's subset table."""
    from jobs.lake import Lake

    truth = spark.read.parquet(str(Path(cfg.sample.out) / "truth.parquet"))
    ids = Lake(spark, cfg).read("subset").select("sample_id")
    rows = truth.join(ids, truth["SAMPLE_ID"] == ids["sample_id"]).groupBy("kind").count()
    return {r["kind"]: int(r["count"]) for r in rows.collect()}


def curate(spark: SparkSession, cfg: Config, mc: MiniatureConfig, scorer: str
           ) -> dict[str, dict[str, int]]:
    """Score with `scorer` (the raw checkpoint), cluster; dedup and publish each policy;
    the pairs each policy keeps, by world kind."""
    scored = dataclasses.replace(cfg, score=dataclasses.replace(
        cfg.score, clip_model=mc.model, clip_pretrained=scorer))
    score.run(spark, scored)
    cluster.train(spark, scored)
    cluster.assign(spark, scored)
    kept = {}
    # The paper's policy last, so the lake's rejects table is the default one's.
    for policy in sorted(mc.policies, key=lambda p: p == PAPER_POLICY):
        pc = subset_config(scored, policy)
        # dedup's candidates follow the policy (its signature includes the recipe).
        dedup.run(spark, pc)
        publish.run(spark, pc)
        kept[policy] = kept_by_kind(spark, pc)
    return kept


def subset_config(cfg: Config, policy: str) -> Config:
    return dataclasses.replace(
        cfg, recipe=dataclasses.replace(cfg.recipe, text_policy=policy),
        tables=dataclasses.replace(cfg.tables, subset=f"{cfg.tables.subset}_{policy}"))


def run(spark: SparkSession, cfg: Config, quick: bool = False) -> MiniatureReport:
    from jobs.demo import serve
    from jobs.miniature_world import VOCABULARY, WorldMix, generate_world

    mc = settings(cfg, quick)
    cfg = world_config(cfg, mc)
    out = miniature_folder(mc)
    if out.exists():  # a fresh world each time: the URLs name this run's server port
        shutil.rmtree(out)
    seconds: dict[str, float] = {}
    laps = Laps(seconds, digits=1)

    def lap(name: str) -> None:
        laps(name)
        print(f"miniature: {name} done in {seconds[name]:.0f} s", flush=True)

    with serve(Path(cfg.sample.out)) as base_url:
        world = generate_world(dataclasses.replace(cfg.sample, base_url=base_url),
                               WorldMix(parrot=mc.parrot_share, mixed=mc.mixed_share))
        ingest.run(spark, cfg)
        download.run(spark, cfg)
    lap("world + ingest + download")
    evaluate = evaluator(mc)
    report = MiniatureReport(world=world.kinds, words=len(VOCABULARY), seconds=seconds)
    report.runs["untrained"] = {"pairs": 0, **evaluate(None)}
    report.runs["raw"] = train_on(spark, cfg, mc, "raw", "images", evaluate)
    lap("train raw")
    report.kept = curate(spark, cfg, mc, report.runs["raw"]["checkpoint"])
    lap("score + cluster + dedup + publish")
    for policy in trained_policies(mc, quick):
        pc = subset_config(cfg, policy)
        report.runs[policy] = train_on(spark, pc, mc, policy, "subset", evaluate)
        lap(f"train {policy}")
    report.verdict = judge(report.runs, report.words)
    print(summary(report), flush=True)
    return report


def summary(report: MiniatureReport) -> str:
    """What a person reads at the end: the runs, the pairs each policy kept, the verdict."""
    v = report.verdict
    kinds = ", ".join(f"{n} {k}" for k, n in report.world.items())
    lines = [f"miniature world: {kinds}; {report.words} words (chance top-1 "
             f"{1 / report.words:.3f})", "", report.table(), "",
             "pairs kept by each text policy (world kind: kept):"]
    lines += [f"  {p}: " + ", ".join(f"{k} {n}/{report.world.get(k, 0)}"
                                    for k, n in sorted(kept.items()))
              for p, kept in report.kept.items()]
    if v is not None:
        lines += ["", f"raw model reads (top-1 >= 0.5, gap >= 0.1): {v.raw_reads}",
                  f"paper-subset model does not (top-1 near chance, gap <= 0.02): "
                  f"{v.subset_blind}",
                  f"both see alike (visual top-1 within 0.15): {v.sees_alike}",
                  f"effect shown: {v.shown}"]
    return "\n".join(lines)


run.cli_arguments = {  # type: ignore[attr-defined]
    "--quick": {"action": "store_true",
                "help": "a smaller world, raw and the paper's subset only (<= 5 min)"},
}

STAGES = (Stage("miniature", "the paper's effect in miniature: train on raw pairs and on "
                "each text policy's subset, then measure reading and seeing", run,
                reads=("subset",)),)
