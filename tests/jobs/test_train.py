"""`deparrot train`: open_clip_train on exported shards, launched by TorchDistributor (CPU)."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw
from pyspark.sql import types as T

from jobs import export, train
from jobs.config import load_config
from jobs.download import TABLE_SCHEMA as IMAGES_TABLE
from jobs.errors import UserError
from jobs.lake import Lake
from jobs.publish import SUBSET_SCHEMA
from udfs.clip_models import TINY_MODEL_NAME, load_clip
from udfs.shards import ShardSettings, write_shards

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
          "yellow": (240, 220, 30), "black": (10, 10, 10), "white": (245, 245, 245),
          "purple": (140, 30, 160), "orange": (250, 140, 20)}
SHAPES = ("circle", "square", "triangle", "stripe")


def _pair(i: int) -> tuple[bytes, str]:
    """A drawn image and the caption that says what it shows (colour, shape, background)."""
    names = list(COLORS)
    color, shape = names[i % 8], SHAPES[(i // 8) % 4]
    background = names[(i // 32 + i + 3) % 8]
    img = Image.new("RGB", (64, 64), COLORS[background])
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        draw.ellipse([12, 12, 52, 52], fill=COLORS[color])
    elif shape == "square":
        draw.rectangle([14, 14, 50, 50], fill=COLORS[color])
    elif shape == "triangle":
        draw.polygon([(32, 8), (56, 56), (8, 56)], fill=COLORS[color])
    else:
        draw.rectangle([0, 26, 64, 38], fill=COLORS[color])
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue(), f"a {color} {shape} on {background}"


def build_tables(spark, cfg, n: int) -> None:
    lake = Lake(spark, cfg)
    lake.ensure("subset", SUBSET_SCHEMA, partition_by=("part",))
    lake.ensure("images", IMAGES_TABLE)
    pairs = [_pair(i) for i in range(n)]
    spark.createDataFrame(
        [(100 + i, f"http://x.example/{i}.jpg", text, 64.0, 64.0, 0.35, 5.5, i % 2, i % 2)
         for i, (_, text) in enumerate(pairs)],
        "SAMPLE_ID long, URL string, TEXT string, HEIGHT double, WIDTH double, "
        "similarity double, ase_scores double, kmeans long, part int",
    ).writeTo(lake.ref("subset").name).append()
    spark.createDataFrame(
        [(100 + i, f"http://x.example/{i}.jpg", jpg, "jpg", 64, 64, "ok")
         for i, (jpg, _) in enumerate(pairs)],
        "sample_id long, url string, image binary, format string, width int, height int, "
        "status string",
    ).writeTo(lake.ref("images").name).append()


def _configure(cfg, tmp_path, n=64, **train_kw):
    ex = dataclasses.replace(cfg.export, out=str(tmp_path / "shards"), shard_size=n // 4)
    settings = dict(model=TINY_MODEL_NAME, batch_size=8, lr=2e-3, warmup=2, wd=0.0, workers=0,
                    log_every_n_steps=1, logs=str(tmp_path / "logs"), name="tiny")
    tc = dataclasses.replace(cfg.train, **{**settings, **train_kw})
    return dataclasses.replace(cfg, export=ex, train=tc)


def _halves(losses: list[float]) -> tuple[float, float]:
    k = max(1, len(losses) // 3)
    return float(np.mean(losses[:k])), float(np.mean(losses[-k:]))


def test_horovod_is_refused_with_the_reason():
    with pytest.raises(UserError, match="C\\+\\+17"):
        load_config(None, ["train.launcher=horovod"])
    with pytest.raises(UserError, match="num_processes"):
        load_config(None, ["train.num_processes=0"])
    with pytest.raises(UserError, match="in_process runs one process"):
        load_config(None, ["train.launcher=in_process", "train.num_processes=2"])


def _fake_export(root, train_shards=4, val_shards=1, fmt="webdataset") -> None:
    """A manifest as `deparrot export` writes it (the shards themselves are not read)."""
    splits = {split: {"samples": 8 * n, "shards": n,
                      "pattern": f"{root}/{split}/{{00000..{n - 1:05d}}}.tar"}
              for split, n in (("train", train_shards), ("val", val_shards))}
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps(
        {"format": fmt, "signature": "abc", "subset_version": 3, "splits": splits}))


def test_argv_from_the_manifest(cfg, tmp_path):
    cfg = _configure(cfg, tmp_path, n=32, num_processes=2, workers=2)
    _fake_export(tmp_path / "shards")
    data = train.training_data(cfg)
    assert (data.train_samples, data.val_samples, data.subset_version) == (32, 8, 3)
    argv = train.open_clip_argv(cfg.train, data)
    assert argv[argv.index("--train-data") + 1] == f"{tmp_path}/shards/train/{{00000..00003}}.tar"
    assert argv[argv.index("--val-data") + 1].endswith("/val/{00000..00000}.tar")
    assert {"--local-loss", "--gather-with-grad"} <= set(argv)
    assert argv[argv.index("--precision") + 1] == "fp32"
    assert argv[argv.index("--device") + 1] == "cpu"
    assert argv[-2:] == ["--resume", "latest"]
    assert argv[argv.index("--workers") + 1] == "2"
    # 4 shards feed 2 processes x 2 readers: 4 workers asked for become 2.
    many = train.training_data(dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, workers=4)))
    assert many.workers == 2
    assert train.open_clip_argv(cfg.train, many)[argv.index("--workers") + 1] == "2"


def test_fewer_shards_than_processes_is_the_only_shard_error(cfg, tmp_path):
    cfg = _configure(cfg, tmp_path, n=32, num_processes=2, workers=2)
    _fake_export(tmp_path / "shards", train_shards=1)
    with pytest.raises(UserError, match="1 training shard.*2 training processes"):
        train.training_data(cfg)
    one = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, num_processes=1))
    assert train.training_data(one).workers == 1  # the demo's single shard trains


def test_missing_export_or_parquet_export_is_a_user_error(cfg, tmp_path):
    cfg = _configure(cfg, tmp_path)
    with pytest.raises(UserError, match="deparrot export"):
        train.training_data(cfg)
    _fake_export(tmp_path / "shards", fmt="parquet")
    with pytest.raises(UserError, match="webdataset"):
        train.training_data(cfg)


def _runs(spark, cfg) -> list:
    return Lake(spark, cfg).read("training_runs").orderBy("started_at").collect()


def write_shards_directly(cfg, n: int) -> None:
    """What `deparrot export` writes, from the executor code alone (no Delta tables)."""
    pairs = [_pair(i) for i in range(n)]
    settings = ShardSettings(root=cfg.export.out, shard_size=cfg.export.shard_size)
    rows = pd.DataFrame({
        "split": "train", "shard": [i // settings.shard_size for i in range(n)],
        "rank": range(n), "SAMPLE_ID": [100 + i for i in range(n)],
        "url": [f"http://x.example/{i}.jpg" for i in range(n)],
        "caption": [text for _, text in pairs], "image": [jpg for jpg, _ in pairs],
        "format": "jpg", "width": 64, "height": 64, "original_width": 64,
        "original_height": 64, "similarity": 0.35, "ase_scores": 5.5, "kmeans": 0})
    stats = [r for df in write_shards(iter([rows]), settings) for r in df.to_dict("records")]
    export.write_manifest(export._fs(settings.root), settings, cfg.export,
                          {"subset_version": 0}, {"train": n}, stats)


# slow: default: test_in_process_launcher_trains_resumes_and_leaves_the_drivers_logging_alone;
# CI step 2 trains through databricks.yml
@pytest.mark.slow
def test_one_process_trains_records_and_loads(spark, cfg, tmp_path):
    """The quick path: 1 CPU process, 4 steps, a checkpoint open_clip loads, a run row."""
    cfg = _configure(cfg, tmp_path, n=32, epochs=1, train_num_samples=32)
    write_shards_directly(cfg, 32)
    report = train.run(spark, cfg)
    assert (report.start_epoch, report.final_epoch) == (0, 1)
    assert report.loss_start is not None and report.loss_end is not None
    assert report.sync_score is None  # no train.sync_words
    bundle = load_clip(TINY_MODEL_NAME, report.checkpoint, "cpu", "fp32")
    assert not bundle.random_init
    (row,) = _runs(spark, cfg)
    assert row["run_name"] == "tiny" and row["final_epoch"] == 1
    assert row["checkpoint"] == report.checkpoint and row["sync_score"] is None
    assert json.loads(row["settings"])["train"]["batch_size"] == 8
    assert row["finished_at"] >= row["started_at"]
    assert row["dataset"] is None and row["read_top1"] is None  # no evaluate hook


def test_in_process_launcher_trains_resumes_and_leaves_the_drivers_logging_alone(
        spark, cfg, tmp_path):
    """launcher in_process: open_clip_train in this process; loggers are put back, so a
    second run neither floods py4j's logger nor writes into the first run's log; the
    same seed gives the same model (open_clip_train's sample shuffle is seeded)."""
    import logging

    cfg = _configure(cfg, tmp_path, n=32, epochs=1, train_num_samples=32,
                     launcher="in_process")
    write_shards_directly(cfg, 32)
    py4j = logging.getLogger("py4j")
    py4j.setLevel(logging.WARNING)
    handlers = list(logging.root.handlers)
    first = train.run(spark, cfg)
    assert (first.start_epoch, first.final_epoch) == (0, 1) and first.loss_end is not None
    assert not load_clip(TINY_MODEL_NAME, first.checkpoint, "cpu", "fp32").random_init
    assert py4j.level == logging.WARNING and logging.root.handlers == handlers
    log = tmp_path / "logs" / "tiny" / "out.log"
    size = log.stat().st_size
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, name="other"))
    again = train.run(spark, other)
    assert log.stat().st_size == size  # the second run logged to its own out.log only
    weights = [load_clip(TINY_MODEL_NAME, r.checkpoint, "cpu", "fp32").model.state_dict()
               for r in (first, again)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    more = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2))
    second = train.run(spark, more)
    assert (second.start_epoch, second.final_epoch) == (1, 2)
    assert [r["launcher"] for r in _runs(spark, cfg)] == ["in_process"] * 3


def test_evaluate_hook_fills_the_run_row_and_old_tables_gain_its_columns(spark, cfg):
    """A training_runs table from before the evaluated columns gets them on append."""
    old = T.StructType([f for f in train.TRAINING_RUNS_SCHEMA.fields
                        if f.name not in train.EVALUATED])
    Lake(spark, cfg).ensure("training_runs", old)
    train.record_run(spark, cfg, {"run_name": "old-style"})
    train.record_run(spark, cfg, {"run_name": "evaluated", "dataset": "raw", "pairs": 12,
                                  "read_top1": 0.75, "visual_top1": 0.5, "sync_gap": 0.2})
    rows = {r["run_name"]: r for r in _runs(spark, cfg)}
    assert rows["evaluated"]["read_top1"] == 0.75 and rows["evaluated"]["pairs"] == 12
    assert rows["old-style"]["dataset"] is None


def test_sync_words_csv(tmp_path):
    words = tmp_path / "words.csv"
    words.write_text("word,count\nred,9\ncircle,7\nred,5\n,1\nblue,1\n")
    assert train.read_words(str(words), 10) == ["red", "circle", "blue"]
    assert train.read_words(str(words), 2) == ["red", "circle"]
    with pytest.raises(UserError, match="sync_words"):
        train.read_words(str(tmp_path / "nope.csv"), 10)


@pytest.mark.slow
def test_two_cpu_processes_learn_checkpoint_and_resume(spark, cfg, tmp_path):
    build_tables(spark, cfg, 72)
    words = tmp_path / "words.csv"
    words.write_text("word,count\nred,9\ncircle,7\nblue,5\n")
    cfg = _configure(cfg, tmp_path, n=64, num_processes=2, epochs=2, train_num_samples=256,
                     sync_words=str(words))
    cfg = dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, val_fraction=0.15))
    shards = export.run(spark, cfg)
    assert shards.samples["val"] > 0
    first = train.run(spark, cfg)
    assert (first.start_epoch, first.final_epoch) == (0, 2)
    assert first.checkpoint.endswith("epoch_2.pt") and first.val_loss is not None
    log = tmp_path / "logs" / "tiny" / "out.log"
    losses = [loss for _, loss in train.train_losses(log.read_text())]
    start, end = _halves(losses)
    print(f"2 processes: {len(losses)} logged steps, loss {start:.3f} -> {end:.3f}")
    assert end < start - 0.2  # chance level is ln(16) = 2.77 for a global batch of 16
    state = load_clip(TINY_MODEL_NAME, first.checkpoint, "cpu", "fp32").model.state_dict()
    assert not any(k.startswith("module.") for k in state)
    assert first.sync_score is not None and -1.0 <= first.sync_score <= 1.0

    more = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=3))
    second = train.run(spark, more)
    assert (second.start_epoch, second.final_epoch) == (2, 3)
    assert "resuming checkpoint" in log.read_text() and "(epoch 2)" in log.read_text()
    runs = _runs(spark, cfg)
    assert [r["final_epoch"] for r in runs] == [2, 3]
    assert [r["sync_words"] for r in runs] == [3, 3]
    assert runs[0]["sync_score"] == pytest.approx(first.sync_score)


@pytest.mark.parametrize("verbose", [False, True])
def test_a_run_shows_one_progress_line_and_verbose_brings_open_clips_lines_back(
        spark, cfg, tmp_path, capfd, monkeypatch, verbose):
    """A person sees one progress line per run, not open_clip's model printout and a
    line per step; out.log keeps every line (the losses are read from it)."""
    if verbose:
        monkeypatch.setenv("DEPARROT_VERBOSE", "1")
    else:
        monkeypatch.delenv("DEPARROT_VERBOSE", raising=False)
    cfg = _configure(cfg, tmp_path, n=32, epochs=2, train_num_samples=32,
                     launcher="in_process")
    write_shards_directly(cfg, 32)
    capfd.readouterr()
    report = train.run(spark, cfg)
    shown = capfd.readouterr()
    lines = (shown.out + shown.err).splitlines()
    log = (tmp_path / "logs" / "tiny" / "out.log").read_text()
    assert log.count("Train Epoch:") >= 2 and report.loss_end is not None
    steps = [ln for ln in lines if "Train Epoch:" in ln]
    progress = [ln for ln in lines if ln.startswith("[train] ")]
    if verbose:
        assert steps and not progress
    else:
        assert not steps and not any("Model:" in ln for ln in lines)
        assert len(progress) == 1 and progress[0].startswith("[train] 2 epoch(s) in ")
        assert "samples/s" in progress[0]
