"""`deparrot analyze`, `report` and `sql` on small hand-made tables."""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pyspark.sql import functions as F

from jobs import analyze, report
from jobs.config import Config, load_config
from jobs.download import TABLE_SCHEMA as IMAGES_TABLE
from jobs.ingest import METADATA_SCHEMA
from jobs.lake import REJECTS_SCHEMA, Lake
from jobs.publish import SUBSET_SCHEMA
from jobs.score import TABLE_SCHEMA as SCORES_TABLE
from udfs.parrot import words_normalised

ROOT = Path(__file__).resolve().parents[2]

# sample_id: (caption, ocr_text, has_text, clip_score, kmeans)
ROWS = {
    1: ("Buy the BEST coffee, today", "BEST coffee", True, 0.34, 0),
    2: ("GRAND OPENING poster", "GRAND OPENING", True, 0.36, 0),
    3: ("a red flower in a garden", "", False, 0.31, 0),
    4: ("a forest path in autumn", "", False, 0.33, 1),
    5: ("cheap flights to rome", "SALE 50%", True, 0.30, 1),
    6: ("fresh cofee beans", "COFFEE", True, 0.32, 1),
    7: ("a red flower", "", False, 0.35, 1),
}


def _jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (value, 80, 160)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def analysed(spark, tmp_path_factory):
    """Hand-made tables, analysed once for the module (`analysed.result`); the tests
    assert on what that run wrote."""
    tmp_path = tmp_path_factory.mktemp("analyze")
    cfg = load_config(None, [f"storage.root={tmp_path / 'lake'}", "storage.schema=t_analyze"])
    lake = Lake(spark, cfg)
    for key, schema in (("metadata", METADATA_SCHEMA), ("images", IMAGES_TABLE),
                        ("scores", SCORES_TABLE), ("subset", SUBSET_SCHEMA)):
        lake.ensure(key, schema)
    spark.createDataFrame(
        [(i, f"http://x.example/{i}.jpg", c, "laion400m", "f", i)
         for i, (c, *_r) in ROWS.items()],
        "sample_id long, url string, text string, family string, source_file string, "
        "source_row long").writeTo(lake.ref("metadata").name).append()
    spark.createDataFrame([(i, _jpeg(i * 20), "ok") for i in ROWS],
                          "sample_id long, image binary, status string") \
        .writeTo(lake.ref("images").name).append()
    spark.createDataFrame(
        [(i, "ok", o, t, s, 5.0, int(t)) for i, (_c, o, t, s, _k) in ROWS.items()],
        "sample_id long, status string, ocr_text string, has_text boolean, "
        "clip_score double, aesthetic_score double, ocr_box_count int",
    ).writeTo(lake.ref("scores").name).append()
    spark.createDataFrame([(i, k) for i, (*_r, k) in ROWS.items()],
                          "sample_id long, kmeans long").write.format("delta").save(
        lake.ref("clusters").path)
    spark.createDataFrame([(i, ROWS[i][0], 0.3, 5.0, ROWS[i][4], 0) for i in (3, 4, 7)],
                          "SAMPLE_ID long, TEXT string, similarity double, ase_scores double, "
                          "kmeans long, part int").writeTo(lake.ref("subset").name).append()
    lake.ensure("rejects", REJECTS_SCHEMA, partition_by=("stage",))
    spark.createDataFrame([("publish", "text_found", str(i), i) for i in (1, 2, 5, 6)],
                          "stage string, reason string, reject_key string, sample_id long") \
        .writeTo(lake.ref("rejects").name).append()
    cfg = dataclasses.replace(
        cfg, analyze=dataclasses.replace(cfg.analyze, top_k=5,
                                         export_dir=str(tmp_path / "vocab")),
        report=dataclasses.replace(cfg.report, out=str(tmp_path / "report")))
    return Analysed(cfg, analyze.run(spark, cfg))


@dataclasses.dataclass
class Analysed:
    cfg: Config
    result: analyze.AnalyzeReport


def test_analyze_tables_equal_hand_and_pandas_computations(spark, analysed):
    result = analysed.result
    lake = Lake(spark, analysed.cfg)
    rows = {r["sample_id"]: r for r in lake.read("parrot").collect()}
    assert result.rows == len(ROWS) == len(rows)
    # Hand-computed: exact splits keep "coffee," apart from "coffee"; normalised does not.
    assert rows[1]["cotr"] == pytest.approx(1 / 5)
    assert rows[1]["cotr_norm"] == pytest.approx(2 / 5)
    assert rows[2]["cotr"] == pytest.approx(2 / 3) and rows[2]["parrots"]
    assert rows[6]["cotr"] == 0 and rows[6]["cotr_norm"] == 0  # "cofee" vs "COFFEE"
    assert rows[6]["cotr_fuzzy"] == pytest.approx(1 / 3)  # within one edit
    types = {i: r["ocr_type"] for i, r in rows.items()}
    assert types == {1: "co_emb", 2: "co_emb", 3: "no_text", 4: "no_text",
                     5: "text_no_overlap", 6: "text_no_overlap", 7: "no_text"}

    df = pd.DataFrame([r.asDict() for r in rows.values()])
    text = df[df["ocr_type"] != "no_text"]
    expected = {
        "images": len(df), "images_with_text_share": len(text) / len(df),
        "images_with_co_emb_text_share": (df["ocr_type"] == "co_emb").mean(),
        "cotr_all": df["cotr"].mean(), "cotr_text": text["cotr"].mean(),
        "cotr_fuzzy_text": text["cotr_fuzzy"].mean(),
    }
    for name, value in expected.items():
        assert result.summary[name] == pytest.approx(value), name

    table2 = {r["group"]: r for r in lake.read("clip_by_text").collect()}
    per_cluster = df.assign(group=np.where(df["ocr_type"] == "no_text", "no_text",
                                           "with_text")).groupby(["group", "kmeans"])[
        "clip_score"].mean()
    for group in ("no_text", "with_text"):
        means = per_cluster[group]
        assert table2[group]["mean"] == pytest.approx(means.mean())
        assert table2[group]["std"] == pytest.approx(means.std(ddof=0))
    shares = {(r["kmeans"], r["ocr_type"]): r["share"] for r in lake.read("cluster_ocr").collect()}
    assert shares[(0, "co_emb")] == pytest.approx(2 / 3)
    funnel = {r["stage"]: r["rows"] for r in lake.read("funnel").where("step < 100").collect()}
    assert funnel["publish"] == 3 and funnel["score"] == 7


def test_ngrams_equal_a_plain_python_count_and_round_trip_csv(spark, analysed):
    result = analysed.result
    lake = Lake(spark, analysed.cfg)
    one, two = collections.Counter(), collections.Counter()
    for caption, *_ in ROWS.values():
        words = words_normalised(caption)
        one.update(words)
        two.update(f"{a} {b}" for a, b in zip(words, words[1:], strict=False))

    def top(counter, k=5):
        return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:k]

    got = {}
    for v in analyze.VOCABS:
        ranked = lake.read("ngrams").where(F.col("vocab") == v).orderBy("rank").collect()
        got[v] = [(r["word"], r["count"]) for r in ranked]
    assert got["caption_1gram"] == top(one)
    assert got["caption_2gram"] == top(two)
    assert got["co_emb_1gram"] == [("best", 1), ("coffee", 1), ("grand", 1), ("opening", 1)]
    assert len(got["caption_1gram"]) == 5 < len(one)  # the top-K cut
    with open(result.csv["caption_1gram"], newline="", encoding="utf-8") as fh:
        back = [(w, int(c)) for w, c in list(csv.reader(fh))[1:]]
    assert back == got["caption_1gram"]


@pytest.mark.slow  # a second analyze run (the default run asserts what the first wrote)
def test_analyze_again_recomputes_and_never_appends(spark, analysed):
    result = analysed.result
    again = analyze.run(spark, analysed.cfg)
    assert again.rows == result.rows and Lake(spark, analysed.cfg).read("ngrams").count() == sum(
        result.vocab_sizes.values())


@pytest.mark.slow  # default: tests/jobs/test_report_html.py; CI step 2 runs the report task
def test_report_figures_exist_and_numbers_match_tables(spark, analysed):
    from jobs.report_html import report_figures

    out = report.run(spark, analysed.cfg)
    page = Path(out.path)
    html = page.read_text(encoding="utf-8")
    figures = report_figures(html)
    assert out.figures == len(figures) and len(figures) >= 6
    for src in figures:
        with Image.open(page.parent / src) as img:
            img.verify()
    lake = Lake(spark, analysed.cfg)
    share = lake.read("parrot_summary").where("measure = 'images_with_text_share'").first()
    assert f"{share['value']:.4f}" in html
    assert "removed for text" in html.lower() or "removed_text" in html
    assert "cofee" in html  # a kept/removed caption in the contact sheet or n-grams


@pytest.mark.slow  # a second JVM; the default run: test_sql_registers_views_and_reports_bad_queries
def test_sql_in_a_new_process_sees_tables_written_earlier(spark, analysed):
    name = Lake(spark, analysed.cfg).ref("parrot").name
    cmd = [sys.executable, "-m", "jobs.cli", "sql", "--set",
           f"storage.root={analysed.cfg.storage.root}", "--set",
           f"storage.schema={analysed.cfg.storage.schema}",
           f"SELECT count(*) AS n FROM {name} WHERE ocr_type = 'no_text'"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"^\|n\s*\|$", done.stdout, re.M)
    assert re.search(r"^\|3\s*\|$", done.stdout, re.M), done.stdout


def test_sql_registers_views_and_reports_bad_queries(spark, analysed, capsys):
    from jobs import sql
    from jobs.errors import UserError

    names = sql.register_all(spark, analysed.cfg)
    schema = analysed.cfg.storage.schema
    assert f"{schema}.reject_reasons" in names and f"{schema}.metadata" in names
    sql.run(spark, analysed.cfg, f"SELECT * FROM {schema}.reject_reasons")
    assert "text_found" in capsys.readouterr().out
    with pytest.raises(UserError, match="query failed"):
        sql.run(spark, analysed.cfg, "SELECT * FROM no_such_table")


@pytest.mark.slow
def test_report_renders_in_a_real_browser(spark, analysed, tmp_path):
    """Headless Chromium draws the page (scripts/screenshot_report.sh), not only parses."""
    import shutil

    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("no Chromium (apt-get install chromium)")
    report.run(spark, analysed.cfg)
    shot = tmp_path / "shot.png"
    subprocess.run(["bash", str(ROOT / "scripts/screenshot_report.sh"), analysed.cfg.report.out,
                    str(shot)], check=True, timeout=120)
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("L"))
    assert img.size[0] == 1280 and pixels.std() > 10  # drawn content, not a blank page
