"""`deparrot run` end to end on the generated sample, served from a local HTTP server.

The pipeline runs once for the module (`ran`), and each test asserts on its tables.
"""

import dataclasses
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from jobs import pipeline
from jobs.config import load_config
from jobs.demo import serve
from jobs.lake import Lake
from jobs.sample import generate
from tests.support.fast_ocr import FAST_OCR

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Ran:
    cfg: object
    reports: dict
    sample_dir: Path
    rows: int
    tmp: Path


# Tables a re-run with nothing to do must not commit to (not even an equal rewrite).
COMMITTED_ONCE = ("metadata", "images", "scores", "dedup", "subset", "rejects")


@pytest.fixture(scope="module")
def ran(spark, tmp_path_factory):
    """The demo config (offline models, small clusters, loopback opted in) over 48
    generated rows, run once, then run again: the second run must find nothing to do.
    The image server stays up for the module (the sample's URLs name its port)."""
    tmp = tmp_path_factory.mktemp("pipeline")
    demo = load_config(ROOT / "conf" / "demo.yaml")
    sample_dir = tmp / "sample"
    sample_dir.mkdir()
    with serve(sample_dir) as base_url:
        sample = generate(dataclasses.replace(demo.sample, out=str(sample_dir), rows=48,
                                              base_url=base_url))
        cfg = dataclasses.replace(
            demo, spark=load_config(None).spark,
            storage=dataclasses.replace(load_config(None).storage, root=str(tmp / "lake"),
                                        schema="t_pipeline"),
            ingest=dataclasses.replace(demo.ingest, input=str(sample_dir / "metadata")),
            score=dataclasses.replace(demo.score, spotter_options=FAST_OCR),
            cluster=dataclasses.replace(demo.cluster, artifacts=str(tmp / "clusters"), k=2),
        )
        reports = pipeline.run(spark, cfg)
        lake = Lake(spark, cfg)
        before = _outcome(lake)
        versions = {t: lake.version(t) for t in COMMITTED_ONCE}
        again = pipeline.run(spark, cfg)
        yield Ran(cfg, {"first": reports, "again": again, "before_again": before,
                        "versions": (versions, {t: lake.version(t) for t in COMMITTED_ONCE})},
                  sample_dir, sample.rows, tmp)


def test_run_accounts_for_every_input_row(spark, ran):
    lake = Lake(spark, ran.cfg)
    reports = ran.reports["first"]
    subset = lake.read("subset")
    rejects = lake.read("rejects")
    assert subset.count() + rejects.count() == ran.rows == 48
    assert reports["publish"].kept == subset.count() > 0

    truth = pq.read_table(ran.sample_dir / "truth.parquet").to_pandas()
    kinds = dict(zip(truth["SAMPLE_ID"], truth["kind"], strict=True))
    kept_ids = {r["SAMPLE_ID"] for r in subset.select("SAMPLE_ID").collect()}
    assert all(kinds[i] in ("photo", "near_dup", "exact_dup") for i in kept_ids)
    texted = [i for i, k in kinds.items() if k == "text"]
    text_rejects = {r["sample_id"] for r in rejects.where(
        (F.col("stage") == "publish") & (F.col("reason") == "text_found")).collect()}
    assert set(texted) <= text_rejects  # OCR found the text in every text image
    by_stage = {(r["stage"], r["reason"]): r["count"]
                for r in rejects.groupBy("stage", "reason").count().collect()}
    assert sum(v for (stage, _), v in by_stage.items() if stage == "download") == sum(
        1 for k in kinds.values() if k.startswith("broken:"))
    assert sum(v for (stage, _), v in by_stage.items() if stage == "ingest") == sum(
        1 for k in kinds.values() if k.startswith("invalid:"))
    name = lake.ref("subset").name
    assert spark.sql(f"SELECT count(*) AS n FROM {name}").first()["n"] == len(kept_ids)


def test_a_rerun_adds_nothing(spark, ran):
    again = ran.reports["again"]
    assert isinstance(again["ingest"], str) and "skipped" in again["ingest"]
    assert again["download"].pending == 0 and again["score"].pending == 0
    assert again["download"].chunks == 0 and again["score"].chunks == 0  # no empty chunk
    assert again["dedup"].skipped
    assert _outcome(Lake(spark, ran.cfg)) == ran.reports["before_again"]
    before, after = ran.reports["versions"]
    assert after == before  # no commit: the rejects are rewritten only when they differ


@pytest.mark.slow  # a second whole pipeline run in chunks
def test_chunks_of_8_rows_give_the_same_subset_and_rejects(spark, ran):
    """No per-image result depends on the rows it was chunked or batched with."""
    cfg = ran.cfg
    small = dataclasses.replace(
        cfg, storage=dataclasses.replace(cfg.storage, root=str(ran.tmp / "lake8"),
                                         schema=cfg.storage.schema + "_8"),
        download=dataclasses.replace(cfg.download, rows_per_commit=8),
        score=dataclasses.replace(cfg.score, rows_per_commit=8),
        cluster=dataclasses.replace(cfg.cluster, artifacts=str(ran.tmp / "clusters8")))
    chunked = pipeline.run(spark, small)
    assert chunked["score"].chunks > 1 and chunked["download"].chunks > 1
    assert _outcome(Lake(spark, small)) == _outcome(Lake(spark, cfg))


def _outcome(lake: Lake) -> tuple[list, list]:
    subset = sorted(tuple(r) for r in lake.read("subset").select(
        "SAMPLE_ID", "URL", "TEXT", "similarity", "ase_scores").collect())
    rejects = sorted(tuple(r) for r in lake.read("rejects").select(
        "stage", "reason", "reject_key").collect())
    return subset, rejects


@pytest.mark.slow  # a whole pipeline run; its ingest: tests/jobs/test_ingest_text.py
def test_url_caption_csv_reaches_the_subset_or_a_reason_through_the_cli(spark, cfg, tmp_path):
    """img2dataset's URL + caption shape (no WIDTH/HEIGHT, no scores), as CSV, through
    `deparrot sample` and `deparrot run`: every input row ends in the subset or in
    rejects with a reason, and no row is rejected for the sizes its file lacks."""
    from jobs import cli

    demo = str(ROOT / "conf" / "demo.yaml")
    sample_dir = tmp_path / "sample"
    sample_dir.mkdir()
    where = ["--set", f"storage.root={cfg.storage.root}",
             "--set", f"storage.schema={cfg.storage.schema}"]
    with serve(sample_dir) as base_url:
        assert cli.main(["sample", "--config", demo, "--out", str(sample_dir), "--rows", "24",
                         "--shape", "url_caption", "--format", "csv",
                         "--set", f"sample.base_url={base_url}"]) == 0
        assert cli.main(["run", "--config", demo, *where,
                         "--set", f"ingest.input={sample_dir / 'metadata'}",
                         "--set", f"cluster.artifacts={tmp_path / 'clusters'}",
                         "--set", "cluster.k=2"]) == 0
    lake = Lake(spark, cfg)
    rejects = lake.read("rejects")
    assert lake.read("subset").count() + rejects.count() == 24
    reasons = {r["reason"] for r in rejects.collect()}
    assert not any(r.startswith("missing_number") for r in reasons)
    truth = pq.read_table(sample_dir / "truth.parquet").to_pandas()
    invalid = sum(k.startswith("invalid:") for k in truth["kind"])
    assert rejects.where(F.col("stage") == "ingest").count() == invalid
    assert lake.read("metadata").where(F.col("width").isNotNull()).count() == 0
