"""`jobs/submit.py run` through spark-submit on a real standalone cluster (1 master and
2 one-core workers on 127.0.0.1, separate JVMs), with the built wheel as --py-files and
the Delta jars, and one executor JVM killed (kill -9) after the scores table's first data
commit. Spark re-runs the lost tasks; the tables must come out as the same config's run
in this test's own local session gives them, with no id twice. Marked `cluster`: .ci/run's
second step, with the other deployment shape.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from jobs import pipeline
from jobs.config import load_config
from jobs.demo import serve
from jobs.sample import generate
from jobs.session import DELTA_CATALOG, DELTA_EXTENSION, cached_jars
from tests.support.fast_ocr import FAST_OCR
from tests.support.standalone_cluster import StandaloneCluster, spark_home

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
ROWS = 40
DELTA_PACKAGE = "io.delta:delta-spark_4.2_2.13:4.4.0"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel as `pip wheel .` builds it (setuptools' PEP 517 backend, in a copy of the
    sources so the checkout gets no build/ folder)."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for name in ("pyproject.toml", "README.md", "jobs", "udfs"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-c", "import sys, setuptools.build_meta as b; "
                    "b.build_wheel(sys.argv[1])", str(out)],
                   cwd=src, check=True, capture_output=True)
    (found,) = out.glob("deparrot-*.whl")
    return found


def _config(tmp: Path, lake: Path, metadata: Path) -> Path:
    """conf/cluster.yaml with the demo's small-sample settings and a local lake."""
    demo = yaml.safe_load((ROOT / "conf" / "demo.yaml").read_text())
    for key in ("extends", "spark", "storage", "sample", "ingest"):
        demo.pop(key, None)
    demo["score"].update(rows_per_commit=12, batch_size=4, spotter_options=FAST_OCR)
    demo["download"]["rows_per_commit"] = 20
    path = tmp / f"{lake.name}.yaml"
    path.write_text(yaml.safe_dump({
        "extends": str(ROOT / "conf" / "cluster.yaml"), **demo,
        "storage": {"root": str(lake)}, "ingest": {"input": str(metadata)}}))
    return path


def _submit(cluster: StandaloneCluster, wheel: Path, config: Path, tmp: Path
            ) -> subprocess.Popen:
    jars = cached_jars([])
    deps = ["--jars", ",".join(jars)] if jars else ["--packages", DELTA_PACKAGE]
    argv = [str(spark_home() / "bin" / "spark-submit"), "--master", cluster.url,
            "--deploy-mode", "client", *deps, "--py-files", str(wheel),
            "--conf", f"spark.sql.extensions={DELTA_EXTENSION}",
            "--conf", f"spark.sql.catalog.spark_catalog={DELTA_CATALOG}",
            "--conf", f"spark.pyspark.python={sys.executable}",
            "--conf", "spark.executor.memory=1g", "--conf", "spark.executor.cores=1",
            "--conf", "spark.sql.shuffle.partitions=2",
            "--conf", "spark.default.parallelism=2",
            "--conf", "spark.ui.enabled=false",
            "--conf", f"spark.sql.warehouse.dir={tmp / 'warehouse'}",
            "--conf", "spark.databricks.delta.snapshotPartitions=1",
            "--conf", "spark.task.maxFailures=4",
            str(ROOT / "jobs" / "submit.py"), "run", "--config", str(config)]
    log = (tmp / f"{config.stem}.log").open("w")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
                            env={**cluster.env(), "PYSPARK_PYTHON": sys.executable})


def _wait_done(proc: subprocess.Popen, log: Path, timeout: float = 900) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, log.read_text()[-4000:]


def _tables(spark, lake: Path) -> dict[str, list[tuple]]:
    def rows(name: str, *cols: str) -> list[tuple]:
        df = spark.read.format("delta").load(str(lake / name)).select(*cols)
        return sorted(tuple(r) for r in df.collect())

    return {"subset": rows("laion_debiased", "SAMPLE_ID", "URL", "TEXT", "kmeans"),
            "rejects": rows("rejects", "stage", "reason", "reject_key"),
            "scores": rows("scores", "sample_id", "status", "has_text")}


def test_spark_submit_on_a_standalone_cluster_survives_a_killed_executor(
        spark, wheel, tmp_path):
    sample_dir = tmp_path / "sample"
    sample_dir.mkdir()
    demo_sample = yaml.safe_load((ROOT / "conf" / "demo.yaml").read_text())["sample"]
    from jobs.config import SampleConfig

    with serve(sample_dir) as base_url, StandaloneCluster(tmp_path / "cluster") as cluster:
        generate(SampleConfig(out=str(sample_dir), rows=ROWS, base_url=base_url,
                              image_size=demo_sample.get("image_size", 256)))
        metadata = sample_dir / "metadata"

        # The reference: the same config run in this process (local mode, no failure).
        calm_lake = tmp_path / "calm"
        pipeline.run(spark, load_config(_config(tmp_path, calm_lake, metadata)))

        killed_lake = tmp_path / "killed"
        config = _config(tmp_path, killed_lake, metadata)
        proc = _submit(cluster, wheel, config, tmp_path)
        first_data_commit = killed_lake / "scores" / "_delta_log" / f"{1:020d}.json"
        victim = None
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            if first_data_commit.exists():
                executors = cluster.executor_pids()
                if executors:
                    victim = executors[0]
                    os.kill(victim, signal.SIGKILL)
                    break
            time.sleep(0.1)
        _wait_done(proc, tmp_path / "killed.log")
        assert victim is not None, "the run finished before an executor could be killed"
        # The workers saw the executor die and the master gave the app a new one.
        logs = "".join(p.read_text() for p in (tmp_path / "cluster").glob("worker-*.log"))
        assert "exitStatus 137" in logs
        assert logs.count("Asked to launch executor") >= 3  # 2 + the replacement

    calm, killed = _tables(spark, calm_lake), _tables(spark, killed_lake)
    assert len(calm["subset"]) + len(calm["rejects"]) == ROWS
    assert killed == calm
    for table in (killed["subset"], killed["scores"]):
        ids = [row[0] for row in table]
        assert len(ids) == len(set(ids))
