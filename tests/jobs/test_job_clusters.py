"""databricks.yml's jobs in the shape Databricks runs them: one job cluster per task.

Each task runs as its own process from its own empty working directory (a job cluster's
driver has a disk the next task never sees), with the parameters databricks.yml declares.
What a Databricks runtime provides is supplied here instead: the workspace's conf/ files
extend the repository's with a local master and a metastore-free lake (path tables under
one folder), the catalog variable is empty and the Volume is a local folder. The sample's
size needs the demo's small-sample settings (tiny random models, 2 clusters).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from jobs.config import load_config
from jobs.demo import serve
from jobs.sample import generate
from tests.support.fast_ocr import FAST_OCR
from udfs.clip_models import TINY_MODEL_NAME

ROOT = Path(__file__).resolve().parents[2]
DEPARROT = Path(sys.executable).with_name("deparrot")


def _bundle() -> dict:
    return yaml.safe_load((ROOT / "databricks.yml").read_text())


def _ordered(tasks: list[dict]) -> list[dict]:
    """Tasks in an order that respects depends_on (as the Jobs scheduler runs them)."""
    done: list[str] = []
    order: list[dict] = []
    pending = list(tasks)
    while pending:
        ready = [t for t in pending
                 if all(d["task_key"] in done for d in t.get("depends_on", []))]
        assert ready, "depends_on has a cycle"
        for task in ready:
            order.append(task)
            done.append(task["task_key"])
            pending.remove(task)
    return order


def _argv(task: dict, variables: dict[str, str], workspace: Path) -> list[str]:
    out = []
    for value in task["python_wheel_task"]["parameters"]:
        value = str(value).replace("${workspace.file_path}", str(workspace))
        out.append(re.sub(r"\$\{var\.(\w+)\}", lambda m: str(variables[m[1]]), value))
    return out


def _runtime_overlay(tmp: Path) -> dict:
    """What the Databricks runtime would provide, plus the demo's small-sample settings."""
    demo = yaml.safe_load((ROOT / "conf" / "demo.yaml").read_text())
    for key in ("extends", "spark", "storage", "sample", "ingest"):
        demo.pop(key, None)
    demo["score"] = {**demo["score"], "spotter_options": FAST_OCR}
    return {**demo,
            "spark": {"master": "local[2]", "conf": {
                "spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2",
                "spark.ui.enabled": "false",
                "spark.databricks.delta.snapshotPartitions": "1",
                "spark.sql.warehouse.dir": str(tmp / "warehouse"),
                "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"}},
            "storage": {"root": str(tmp / "lake")}}


def _workspace(tmp: Path) -> Path:
    """The bundle's workspace: conf/ files that extend the repository's own."""
    conf = tmp / "workspace" / "conf"
    conf.mkdir(parents=True)
    overlay = _runtime_overlay(tmp)
    (conf / "databricks.yaml").write_text(yaml.safe_dump(
        {"extends": str(ROOT / "conf" / "databricks.yaml"), **overlay}))
    training = {
        "spark": overlay["spark"], "storage": overlay["storage"],
        "train": {"model": TINY_MODEL_NAME, "batch_size": 4, "num_processes": 1,
                  "local_mode": True, "use_gpu": False, "precision": "fp32", "epochs": 1,
                  "warmup": 1, "log_every_n_steps": 1, "image_size": 0}}
    (conf / "databricks_train.yaml").write_text(yaml.safe_dump(
        {"extends": str(ROOT / "conf" / "databricks_train.yaml"), **training}))
    return conf.parent


def _run_task(task: dict, variables: dict[str, str], workspace: Path, tmp: Path) -> str:
    cwd = tmp / "drivers" / task["task_key"]
    cwd.mkdir(parents=True)
    env = {**os.environ, "CI": "true"}
    started = time.monotonic()
    done = subprocess.run([str(DEPARROT), *_argv(task, variables, workspace)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    print(f"{task['task_key']}: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, (task["task_key"], done.stdout[-3000:], done.stderr[-3000:])
    assert os.listdir(cwd) == [], (task["task_key"], "left files on the driver's disk",
                                   os.listdir(cwd))
    return done.stdout + done.stderr


@pytest.mark.cluster  # a deployment shape: CI's second step, beside the standalone cluster
def test_every_task_on_its_own_job_cluster(spark, tmp_path):
    workspace = _workspace(tmp_path)
    volume = tmp_path / "volume"
    sample_dir = tmp_path / "sample"
    sample_dir.mkdir()
    demo = load_config(ROOT / "conf" / "demo.yaml")
    bundle = _bundle()
    with serve(sample_dir) as base_url:
        sample = generate(dataclasses.replace(demo.sample, out=str(sample_dir), rows=40,
                                              base_url=base_url))
        variables = {k: v["default"] for k, v in bundle["variables"].items()}
        variables.update(
            catalog="", schema="deparrot_jobs", volume=str(volume),
            metadata_path=str(sample_dir / "metadata"), clip_model=TINY_MODEL_NAME,
            clip_pretrained="random", aesthetic_clip_model=TINY_MODEL_NAME,
            aesthetic_clip_pretrained="random", aesthetic_weights="random")
        pipeline = bundle["resources"]["jobs"]["deparrot_pipeline"]["tasks"]
        ran = []
        for task in _ordered(pipeline):
            output = _run_task(task, variables, workspace, tmp_path)
            ran.append(task["task_key"])
            assert "Traceback" not in output, (task["task_key"], output[-3000:])
    assert ran[:3] == ["ingest", "download", "score"] and ran[-1] == "report"

    lake = tmp_path / "lake"
    subset = spark.read.format("delta").load(str(lake / "laion_debiased")).count()
    rejects = spark.read.format("delta").load(str(lake / "rejects")).count()
    assert subset > 0 and subset + rejects == sample.rows == 40
    # Everything that is not a table is on the volume, where the next cluster looks.
    assert (volume / "clusters" / "manifest.json").is_file()
    assert (volume / "report" / "index.html").is_file()
    assert (volume / "vocab" / "caption_1gram.csv").is_file()

    training = bundle["resources"]["jobs"]["deparrot_training"]["tasks"]
    for task in _ordered(training):
        _run_task(task, variables, workspace, tmp_path)
    assert (volume / "shards" / "manifest.json").is_file()
    checkpoints = list((volume / "train").glob("*/checkpoints/epoch_1.pt"))
    assert checkpoints, sorted(str(p) for p in volume.rglob("*"))[:50]


@pytest.mark.parametrize("stage, needs", [
    ("download", "ingest"), ("score", "ingest"), ("cluster-train", "score"),
    ("cluster-assign", "score"), ("dedup", "ingest"), ("publish", "dedup"),
    ("analyze", "ingest"), ("report", "ingest"), ("export", "download"),
])
def test_a_missing_upstream_table_is_one_line(spark, cfg, capsys, stage, needs):
    from jobs import cli

    argv = [stage, "--set", f"storage.root={cfg.storage.root}",
            "--set", f"storage.schema={cfg.storage.schema}"]
    if stage == "score":  # settings are checked first; these are valid ones
        argv += ["--config", str(ROOT / "conf" / "demo.yaml")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"deparrot {stage}: table ") and "does not exist under" in err
    assert f"run `deparrot {needs}` first" in err


def test_train_without_an_export_is_one_line(spark, cfg, capsys):
    from jobs import cli

    argv = ["train", "--set", f"storage.root={cfg.storage.root}"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run `deparrot export` first" in err
    assert f"{cfg.storage.root}/_files/shards/manifest.json" in err
