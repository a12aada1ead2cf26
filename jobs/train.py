"""`deparrot train`: CLIP training on the exported shards with open_clip's own trainer.

The design card named HorovodRunner + petastorm; neither runs in this environment, so:
- data: `deparrot export` writes img2dataset-style webdataset shards (jobs/export.py),
  which open_clip_train reads natively (`--dataset-type webdataset`);
- launcher: `pyspark.ml.torch.distributor.TorchDistributor` runs
  `udfs.train_worker.train_main` -> `open_clip_train.main.main(argv)` in
  `train.num_processes` processes: on the driver with `local_mode: true` (a laptop: CPU
  processes talking gloo; or a single multi-GPU node), or as Spark barrier tasks with
  `local_mode: false` (one process per GPU; needs spark.task.resource.gpu.amount).
  TorchDistributor takes GPUs from Spark's resource scheduling: `use_gpu` with
  `local_mode: true` needs spark.driver.resource.gpu.amount (and a discovery script) in
  the session; precision `auto` is AMP on GPU (NCCL) and fp32 on CPU (gloo).
  deparrot writes no training loop: local loss, gather-with-grad, AMP, the cosine
  schedule, checkpoints and `--resume latest` are open_clip_train's.
  `launcher: in_process` runs the same function in the driver's own Python process
  (one process, no torchrun start-up of ~15 s; the driver's loggers are restored after).
- horovod is refused (`train.launcher: horovod` is a config error, checked by
  TrainConfig before Spark starts): horovod 0.28.1, its last release (June 2023), fails
  to build against torch >= 2.1 ("You need C++17"; the fix is merged upstream but
  unreleased), and Databricks deprecated HorovodRunner for TorchDistributor.
- webdataset is pinned <= 0.2.86 (open_clip_torch[training]'s own cap): later releases
  end every shard with an EOF marker that open_clip_train's reader fails on.

Checkpoints and open_clip's log go to `<train.logs>/<train.name>/` (shared storage on a
cluster); the run name is fixed, so running again resumes from the latest checkpoint and
continues up to `train.epochs`. Each invocation appends a row to the `training_runs`
Delta table: settings, epochs, checkpoint, first/last logged training loss, validation
loss and, when `train.sync_words` names a vocabulary, the Sync. Score of the checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from jobs.config import Config, TrainConfig
from jobs.errors import UserError
from jobs.export import read_manifest
from jobs.lake import Lake
from jobs.stages import Stage
from udfs import storage
from udfs.storage import is_remote, local_path

_TRAIN_LINE = re.compile(r"Train Epoch: (\d+) \[.*?\bLoss: ([-+0-9.eE]+|nan|inf) \(")
_CHECKPOINT = re.compile(r"epoch_(\d+)\.pt$")

TRAINING_RUNS_SCHEMA = T.StructType([
    T.StructField("run_name", T.StringType(), False),
    T.StructField("model", T.StringType(), True),
    T.StructField("pretrained", T.StringType(), True),
    T.StructField("launcher", T.StringType(), True),
    T.StructField("num_processes", T.IntegerType(), True),
    T.StructField("global_batch_size", T.IntegerType(), True),
    T.StructField("train_data", T.StringType(), True),
    T.StructField("train_num_samples", T.LongType(), True),
    T.StructField("export_signature", T.StringType(), True),
    T.StructField("subset_version", T.LongType(), True),
    T.StructField("settings", T.StringType(), True),  # TrainConfig + open_clip argv, JSON
    T.StructField("start_epoch", T.IntegerType(), True),
    T.StructField("final_epoch", T.IntegerType(), True),
    T.StructField("checkpoint", T.StringType(), True),
    T.StructField("loss_start", T.DoubleType(), True),  # first logged train loss of the run
    T.StructField("loss_end", T.DoubleType(), True),  # last logged train loss of the run
    T.StructField("val_loss", T.DoubleType(), True),  # open_clip's clip_val_loss, if any
    T.StructField("sync_score", T.DoubleType(), True),  # mean over words and styles
    T.StructField("sync_words", T.IntegerType(), True),
    T.StructField("started_at", T.TimestampType(), True),
    T.StructField("finished_at", T.TimestampType(), True),
    # Filled by an `evaluate` hook (the miniature experiment, jobs/miniature.py): which
    # dataset the run trained on, its pairs, and whether the model reads and sees.
    T.StructField("dataset", T.StringType(), True),
    T.StructField("pairs", T.LongType(), True),
    T.StructField("sync_gap", T.DoubleType(), True),
    T.StructField("read_top1", T.DoubleType(), True),
    T.StructField("visual_top1", T.DoubleType(), True),
])
# What an evaluate hook may fill in (sync_score too: it then replaces train.sync_words').
EVALUATED = ("dataset", "pairs", "sync_score", "sync_gap", "read_top1", "visual_top1")


@dataclass
class TrainReport:
    run_name: str = ""
    model: str = ""
    num_processes: int = 0
    global_batch_size: int = 0
    train_data: str = ""
    train_num_samples: int = 0
    start_epoch: int = 0
    final_epoch: int = 0
    checkpoint: str = ""
    loss_start: float | None = None
    loss_end: float | None = None
    val_loss: float | None = None
    sync_score: float | None = None
    seconds: float = 0.0
    log: str = ""
    evaluated: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class TrainData:
    train: str
    val: str
    train_samples: int
    val_samples: int
    export_signature: str = ""
    subset_version: int | None = None
    workers: int = 0  # dataloader workers per process that the shards can feed


def shard_count(pattern: str) -> int:
    from braceexpand import braceexpand

    return sum(len(list(braceexpand(p))) for p in pattern.split("::") if p)


def training_data(cfg: Config) -> TrainData:
    """The shards and sample counts: from train.* or else the export's manifest."""
    tc = cfg.train
    manifest: dict[str, Any] = {}
    if not tc.train_data or not tc.train_num_samples:
        manifest = read_manifest(cfg.shared(cfg.export.out))
        if manifest.get("format") != "webdataset" and tc.dataset_type == "webdataset":
            raise UserError(f"the export at {cfg.shared(cfg.export.out)} is "
                            f"{manifest.get('format')}; "
                            "open_clip_train reads webdataset shards: export.format=webdataset")
    splits = manifest.get("splits", {})
    train = tc.train_data or splits.get("train", {}).get("pattern", "")
    if not train:
        raise UserError("no training shards: the export has no train split")
    val = tc.val_data or ("" if tc.train_data else splits.get("val", {}).get("pattern", ""))
    samples = tc.train_num_samples or int(splits.get("train", {}).get("samples", 0))
    return TrainData(train, val, samples, int(splits.get("val", {}).get("samples", 0)),
                     manifest.get("signature", ""), manifest.get("subset_version"),
                     workers=dataloader_workers(tc, train))


def dataloader_workers(tc: TrainConfig, train: str) -> int:
    """At most train.workers per process, and no more than the shards can feed.

    Every webdataset reader (a worker, or the process itself with 0 workers) needs a
    shard of its own; only fewer shards than processes cannot work.
    """
    if tc.dataset_type != "webdataset":
        return tc.workers
    shards = shard_count(train)
    if shards < tc.num_processes:
        raise UserError(f"{shards} training shard(s) for {tc.num_processes} training "
                        "processes: each process reads whole shards; export smaller "
                        "shards (export.shard_size) or train with fewer processes")
    return min(tc.workers, shards // tc.num_processes)


def precision(tc: TrainConfig) -> str:
    if tc.precision != "auto":
        return tc.precision
    return "amp" if tc.use_gpu else "fp32"


def open_clip_argv(tc: TrainConfig, data: TrainData) -> list[str]:
    """open_clip_train's command line for this config."""
    argv = ["--model", tc.model, "--dataset-type", tc.dataset_type,
            "--train-data", data.train, "--train-num-samples", str(data.train_samples),
            "--batch-size", str(tc.batch_size), "--lr", str(tc.lr), "--epochs", str(tc.epochs),
            "--warmup", str(tc.warmup), "--lr-scheduler", tc.lr_scheduler, "--wd", str(tc.wd),
            "--beta1", str(tc.beta1), "--beta2", str(tc.beta2), "--eps", str(tc.eps),
            "--precision", precision(tc), "--workers", str(data.workers),
            "--logs", logs_root(tc), "--name", tc.name, "--seed", str(tc.seed),
            "--save-frequency", str(tc.save_frequency),
            "--log-every-n-steps", str(tc.log_every_n_steps),
            "--device", "cuda" if tc.use_gpu else "cpu"]
    if tc.pretrained:
        argv += ["--pretrained", tc.pretrained]
    if data.val:
        argv += ["--val-data", data.val]
        if data.val_samples:
            argv += ["--val-num-samples", str(data.val_samples)]
    if tc.image_size:
        argv += ["--force-image-size", str(tc.image_size)]
    argv += [flag for on, flag in ((tc.local_loss, "--local-loss"),
                                   (tc.gather_with_grad, "--gather-with-grad")) if on]
    if tc.resume:
        argv += ["--resume", "latest"]
    return argv + list(tc.extra_args)


def logs_root(tc: TrainConfig) -> str:
    return tc.logs if "://" in tc.logs else os.path.abspath(tc.logs)


def on_shared_storage(cfg: Config) -> Config:
    """train.logs and train.sync_words resolved against storage.files (never the cwd).

    open_clip_train writes its logs and checkpoints with plain file calls from every
    process, so the logs folder must be local or mounted (/Volumes/..., /dbfs/...).
    """
    tc = cfg.train
    logs = local_path(cfg.shared(tc.logs))
    if is_remote(logs):
        raise UserError(f"train.logs={tc.logs} is a URL: open_clip_train writes checkpoints "
                        "with file calls, so use a mounted path every training process "
                        "sees (a Unity Catalog Volume /Volumes/..., /dbfs/..., NFS)")
    return dataclasses.replace(cfg, train=dataclasses.replace(
        tc, logs=logs, sync_words=cfg.shared(tc.sync_words)))


def run_folder(tc: TrainConfig) -> Path:
    return Path(logs_root(tc)) / tc.name


def latest_checkpoint(tc: TrainConfig) -> tuple[str, int]:
    """(path, epoch) of the newest epoch_N.pt of this run, ("", 0) when there is none."""
    found = [(int(m.group(1)), p) for p in (run_folder(tc) / "checkpoints").glob("epoch_*.pt")
             if (m := _CHECKPOINT.search(p.name))]
    if not found:
        return "", 0
    epoch, path = max(found)
    return str(path), epoch


def train_losses(log_text: str) -> list[tuple[int, float]]:
    """(epoch, loss) of every training line open_clip_train logged, in order."""
    return [(int(m.group(1)), float(m.group(2))) for m in _TRAIN_LINE.finditer(log_text)]


def _tail(path: Path, offset: int) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", errors="replace")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def val_loss(results: Path, offset: int) -> float | None:
    """The last clip_val_loss open_clip wrote to results.jsonl during this run."""
    lines = [ln for ln in _tail(results, offset).splitlines() if ln.strip()]
    for line in reversed(lines):
        value = json.loads(line).get("clip_val_loss")
        if value is not None:
            return float(value)
    return None


def launch(tc: TrainConfig, argv: list[str]) -> dict[str, Any]:
    """Run open_clip_train in `num_processes` processes through TorchDistributor, or in
    this process (`launcher: in_process`)."""
    from udfs.train_worker import train_in_process, train_main

    configs = {tc.model: dict(tc.model_config)} if tc.model_config else {}
    if tc.launcher == "in_process":
        return train_in_process(argv, configs)
    from pyspark.ml.torch.distributor import TorchDistributor

    distributor = TorchDistributor(num_processes=tc.num_processes, local_mode=tc.local_mode,
                                   use_gpu=tc.use_gpu)
    return distributor.run(train_main, argv, configs) or {}


def read_words(path: str, top_k: int) -> list[str]:
    """The first `top_k` words of a vocabulary CSV (a `word` column, else the first one)."""
    import pandas as pd

    try:
        with storage.open_read(path) as fh:
            table = pd.read_csv(fh, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read train.sync_words {path}: {exc}") from exc
    column = "word" if "word" in table.columns else table.columns[0]
    words = [str(w) for w in table[column].tolist() if str(w).strip()]
    return list(dict.fromkeys(words))[:top_k]


def sync_score_of_checkpoint(spark: SparkSession, tc: TrainConfig, checkpoint: str
                             ) -> tuple[float | None, int]:
    """Hook: mean Sync. Score (every word x style) of `checkpoint`, and how many words.

    (None, 0) when train.sync_words is empty, there is no checkpoint, or the Sync. Score
    executor code (udfs/sync_score.py) is not installed. Runs in Spark tasks, like
    every model in deparrot.
    """
    if not tc.sync_words or not checkpoint:
        return None, 0
    try:
        from udfs.sync_score import (
            ALL_STYLES,
            SYNC_OUTPUT_SCHEMA_DDL,
            SyncModel,
            SyncSettings,
            summarize,
            sync_batches,
        )
    except ImportError:
        return None, 0
    from udfs.train_worker import register_models

    words = read_words(tc.sync_words, tc.sync_top_k)
    if not words:
        return None, 0
    model = SyncModel(tc.model, checkpoint, alias=tc.name)
    settings = SyncSettings(precision="fp16" if tc.use_gpu else "fp32", prefer_gpu=tc.use_gpu)
    configs = {tc.model: dict(tc.model_config)} if tc.model_config else {}

    def body(batches):
        register_models(configs)
        yield from sync_batches(batches, (model,), settings)

    # Every task loads the model: a small vocabulary is one task, a large one spreads out.
    parts = max(1, min(spark.sparkContext.defaultParallelism, math.ceil(len(words) / 256)))
    rows = spark.createDataFrame([(w, i) for i, w in enumerate(words)],
                                 "word string, word_rank long").repartition(parts)
    scores = rows.mapInPandas(body, SYNC_OUTPUT_SCHEMA_DDL).toPandas()
    table = summarize(scores)
    pooled = table[table["style"] == ALL_STYLES]
    scored = int(scores.loc[scores["status"] == "ok", "word"].nunique())
    return float(pooled["mean"].iloc[0]), scored


def record_run(spark: SparkSession, cfg: Config, row: dict[str, Any]) -> None:
    """Append one row to the training_runs table."""
    lake = Lake(spark, cfg)
    ref = lake.ensure("training_runs", TRAINING_RUNS_SCHEMA)
    row = {name: row.get(name) for name in TRAINING_RUNS_SCHEMA.fieldNames()}
    # mergeSchema: a table written before the evaluated columns existed gains them.
    (spark.createDataFrame([row], TRAINING_RUNS_SCHEMA).writeTo(ref.name)
     .option("mergeSchema", "true").append())


def run(spark: SparkSession, cfg: Config,
        evaluate: Callable[[str], dict[str, Any]] | None = None) -> TrainReport:
    """Train (or resume) the configured run, then record it.

    `evaluate(checkpoint)` returns more columns for the run's row (names in EVALUATED).
    """
    cfg = on_shared_storage(cfg)
    tc = cfg.train  # launcher and numbers are checked when the config is built
    data = training_data(cfg)
    argv = open_clip_argv(tc, data)
    folder = run_folder(tc)
    log, results = folder / "out.log", folder / "checkpoints" / "results.jsonl"
    log_offset, results_offset = _size(log), _size(results)
    _, start_epoch = latest_checkpoint(tc) if tc.resume else ("", 0)
    started, clock = datetime.now(timezone.utc), time.monotonic()
    launch(tc, argv)
    finished, seconds = datetime.now(timezone.utc), time.monotonic() - clock
    checkpoint, final_epoch = latest_checkpoint(tc)
    losses = [loss for _, loss in train_losses(_tail(log, log_offset))]
    sync, sync_words = sync_score_of_checkpoint(spark, tc, checkpoint)
    report = TrainReport(
        run_name=tc.name, model=tc.model, num_processes=tc.num_processes,
        global_batch_size=tc.batch_size * tc.num_processes, train_data=data.train,
        train_num_samples=data.train_samples, start_epoch=start_epoch,
        final_epoch=final_epoch, checkpoint=checkpoint,
        loss_start=losses[0] if losses else None, loss_end=losses[-1] if losses else None,
        val_loss=val_loss(results, results_offset), sync_score=sync,
        seconds=round(seconds, 1), log=str(log))
    settings = json.dumps({"train": dataclasses.asdict(tc), "argv": argv}, sort_keys=True)
    evaluated = evaluate(checkpoint) if evaluate and checkpoint else {}
    unknown = set(evaluated) - set(EVALUATED)
    if unknown:
        raise ValueError(f"evaluate returned unknown training_runs columns {sorted(unknown)}")
    if evaluated.get("sync_score") is not None:
        report.sync_score = sync = evaluated["sync_score"]
    report.evaluated = evaluated
    record_run(spark, cfg, {**evaluated,
        "run_name": tc.name, "model": tc.model, "pretrained": tc.pretrained,
        "launcher": tc.launcher, "num_processes": tc.num_processes,
        "global_batch_size": report.global_batch_size, "train_data": data.train,
        "train_num_samples": data.train_samples, "export_signature": data.export_signature,
        "subset_version": data.subset_version, "settings": settings,
        "start_epoch": start_epoch, "final_epoch": final_epoch, "checkpoint": checkpoint,
        "loss_start": report.loss_start, "loss_end": report.loss_end,
        "val_loss": report.val_loss, "sync_score": sync, "sync_words": sync_words,
        "started_at": started, "finished_at": finished})
    return report


STAGES = (Stage("train", "train CLIP on the exported shards: open_clip_train under "
                "TorchDistributor; re-runs resume", run,
                flags={"--name": "train.name", "--model": "train.model",
                       "--epochs": "train.epochs", "--processes": "train.num_processes"},
                gpu=True, writes=("training_runs",)),)
