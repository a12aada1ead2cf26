"""The Databricks notebooks (notebooks/*.py), run here cell by cell so they cannot rot.

Each notebook is Databricks' source format: cells split by `# COMMAND ----------`,
markdown and `%pip` cells as `# MAGIC` lines (skipped here: the test environment has the
packages). Every Python cell runs in one namespace holding this suite's Spark session
and stand-ins for what Databricks provides: `dbutils.widgets` (with the values a test
sets), `display` (collects the DataFrame) and `displayHTML` (records the HTML). The
tests assert on what the notebooks displayed. The quickstart runs in
tests/jobs/test_pipeline.py, as that module's pipeline run. A notebook no test runs
fails `test_every_notebook_is_run`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from benchmarks.explore_lake import LakeShape, write_lake
from tests.support.notebooks import HEADER, cells, funnel_parts, is_magic, run_notebook

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
# The notebooks a test runs; a new notebook must join them. quickstart.py is the pipeline
# module's one pipeline run (tests/jobs/test_pipeline.py, every test there asserts on it).
RUN = {"explore.py", "quickstart.py"}


# --------------------------------------------------------------------- every notebook

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_databricks_source_and_python(path):
    text = path.read_text()
    assert text.startswith(HEADER + "\n")
    ast.parse(text, filename=str(path))
    for cell in cells(path):
        assert cell.strip(), f"{path.name}: an empty cell"
        if is_magic(cell):  # Databricks reads a cell as markdown only if every line is
            assert all(line.startswith("# MAGIC") for line in cell.splitlines()), cell


def test_every_notebook_is_run():
    assert {p.name for p in NOTEBOOKS} == RUN


# --------------------------------------------------------------------- explore.py

@pytest.fixture(scope="module")
def synthetic_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("notebook_explore") / "lake"
    return root, write_lake(str(root), LakeShape(rows=100, seed=3))


def test_explore_notebook_shows_funnel_boxes_and_whatif(spark, synthetic_lake, monkeypatch):
    root, counts = synthetic_lake
    ran = run_notebook("explore.py", spark, {
        "config": "conf/local.yaml", "catalog": "", "schema": "t_nb_explore",
        "storage_root": str(root), "min_clip_score": "0.32", "text_policy": "parrots",
    }, monkeypatch)

    funnel = next(h for h in ran.html if 'id="funnel"' in h)
    parts = funnel_parts(funnel)
    assert parts["input"] == counts["input"] == 100 + counts["ingest_rejects"]
    assert parts["input"] == parts["kept"] + parts["rejects"] + parts["pending"]
    assert parts["kept"] == counts["kept"]

    gallery = next(h for h in ran.html if 'id="gallery"' in h)
    assert gallery.count("data:image/jpeg;base64,") >= 3
    details = [h for h in ran.html if 'id="boxes"' in h]
    assert len(details) == 3
    assert all("<polygon points=" in h and "data:image/jpeg;base64," in h for h in details)
    assert not any('href="/' in h or "/static/" in h for h in ran.html)  # nothing to serve

    whatif = next(h for h in ran.html if 'id="set-line"' in h)
    line = re.search(r'<pre id="set-line">(.*?)</pre>', whatif, re.S)[1]
    assert line.startswith("deparrot publish --config conf/local.yaml ")
    assert "--set recipe.min_clip_score=0.32" in line
    assert "--set recipe.text_policy=parrots" in line
    result = ran.namespace["result"]
    assert result["kept"] < result["kept_before"] == counts["kept"]

    families, rejects, clusters = ran.displayed
    assert sum(r["rows"] for r in families) == counts["metadata"]
    assert sum(r["rows"] for r in rejects) == parts["rejects"]
    assert sum(r["rows"] for r in clusters) == counts["kept"]


def test_spark_source_reads_what_delta_source_reads(spark, synthetic_lake):
    """The notebook's source and the app's answer alike: same tables, properties and
    versions, one row by id, and nothing for a table that is not there."""
    from jobs.config import load_config
    from jobs.explore.spark_source import SparkSource
    from jobs.explore.tables import DeltaSource

    root, _ = synthetic_lake
    cfg = load_config(ROOT / "conf" / "local.yaml",
                      [f"storage.root={root}", "storage.schema=t_nb_source"])
    ours, theirs = SparkSource(spark, cfg), DeltaSource(cfg)
    cols = ("sample_id", "ocr_box_count", "clip_score", "no_such_column")
    a, b = ours.read("scores", cols), theirs.read("scores", cols)
    assert a.column_names == list(cols)
    assert sorted(a.to_pylist(), key=lambda r: r["sample_id"]) == sorted(
        b.to_pylist(), key=lambda r: r["sample_id"])
    assert ours.read("scores", cols) is a  # read once
    sid = a.column("sample_id")[0].as_py()
    assert ours.lookup("scores", sid, ("ocr_boxes", "no_such_column")) == theirs.lookup(
        "scores", sid, ("ocr_boxes", "no_such_column"))
    assert ours.lookup("scores", -1, ("ocr_boxes",)) is None
    image = theirs.image(sid)
    assert ours.images([sid, -1]) == {sid: image, -1: None}
    assert ours.image(sid) == image
    assert ours.properties("scores")["deparrot.clip_model"] == theirs.properties(
        "scores")["deparrot.clip_model"]
    assert ours.version("scores") == theirs.version("scores") >= 0
    assert ours.read("reviews") is None and ours.version("reviews") == -1
    assert ours.properties("reviews") == {} and ours.lookup("reviews", sid, ("label",)) is None
