"""`deparrot run` end to end on the generated sample, as the quickstart notebook runs it.

The module's one pipeline run is notebooks/quickstart.py, cell by cell, in this suite's
session (tests/support/notebooks.py): it generates the sample, serves it from the driver,
runs every stage and shows the workbench's funnel; each test asserts on its tables. The
slow tests run the pipeline again over them, and in chunks of 8 rows.
"""

import dataclasses
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest
import yaml
from pyspark.sql import functions as F

from jobs import pipeline
from jobs.demo import serve
from jobs.lake import Lake
from tests.support.fast_ocr import FAST_OCR
from tests.support.notebooks import funnel_parts, run_notebook

ROOT = Path(__file__).resolve().parents[2]
ROWS = 26  # the quickstart's smallest sample: photos, text, duplicates, broken, invalid


@dataclasses.dataclass
class Ran:
    cfg: object
    reports: dict
    sample_dir: Path
    rows: int
    tmp: Path
    html: list


# Tables a re-run with nothing to do must not commit to (not even an equal rewrite).
COMMITTED_ONCE = ("metadata", "images", "scores", "dedup", "subset", "rejects")


def serving_again(cfg):
    """The sample's image server again, at the address its URLs name."""
    where = urlsplit(cfg.sample.base_url)
    return serve(Path(cfg.sample.out), where.hostname, where.port)


@pytest.fixture(scope="module")
def ran(spark, tmp_path_factory):
    """The quickstart notebook over 26 generated rows with the demo's settings (offline
    models, small clusters; the stage-test OCR setting)."""
    tmp = tmp_path_factory.mktemp("pipeline")
    config = tmp / "quickstart.yaml"
    config.write_text(yaml.safe_dump({"extends": str(ROOT / "conf" / "demo.yaml"),
                                      "score": {"spotter_options": FAST_OCR}}))
    with pytest.MonkeyPatch.context() as monkeypatch:
        notebook = run_notebook("quickstart.py", spark, {
            "config": str(config), "rows": str(ROWS), "storage_root": str(tmp / "lake"),
            "catalog": "", "schema": "t_pipeline"}, monkeypatch)
    cfg, sample = notebook.namespace["cfg"], notebook.namespace["sample"]
    return Ran(cfg, notebook.namespace["reports"], Path(sample.out), sample.rows, tmp,
               notebook.html)


@pytest.fixture(scope="module")
def again(spark, ran):
    """The pipeline once more over the finished lake: outcome and table versions before,
    the run's reports, and the versions after."""
    lake = Lake(spark, ran.cfg)
    before = _outcome(lake)
    versions = {t: lake.version(t) for t in COMMITTED_ONCE}
    with serving_again(ran.cfg):
        reports = pipeline.run(spark, ran.cfg)
    return before, reports, (versions, {t: lake.version(t) for t in COMMITTED_ONCE})


def test_the_quickstart_notebook_shows_where_every_row_went(ran):
    """The notebook's last cell: the workbench's funnel through SparkSource."""
    parts = funnel_parts(next(h for h in ran.html if 'id="funnel"' in h))
    assert parts == {**parts, "input": ROWS, "pending": 0}
    assert parts["input"] == parts["kept"] + parts["rejects"]
    assert parts["kept"] > 0 and parts["rejects"] > 0
    assert ran.reports["publish"].kept == parts["kept"]


def test_run_accounts_for_every_input_row(spark, ran):
    lake = Lake(spark, ran.cfg)
    reports = ran.reports
    subset = lake.read("subset")
    rejects = lake.read("rejects")
    assert subset.count() + rejects.count() == ran.rows == ROWS
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


# slow: a second whole pipeline run; the default run re-runs each stage in its own
# module (ingest's idempotent rerun, download's retry-only rerun, score's nothing-pending
# run, dedup's skip, publish's crash resume)
@pytest.mark.slow
def test_a_rerun_adds_nothing(spark, ran, again):
    before_again, again, versions = again
    assert isinstance(again["ingest"], str) and "skipped" in again["ingest"]
    assert again["download"].pending == 0 and again["score"].pending == 0
    assert again["download"].chunks == 0 and again["score"].chunks == 0  # no empty chunk
    assert again["dedup"].skipped
    assert _outcome(Lake(spark, ran.cfg)) == before_again
    before, after = versions
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
    with serving_again(cfg):
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
