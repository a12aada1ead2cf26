"""`deparrot report`: the static HTML report (jobs/report_html.py) from the Delta tables.

Spark aggregates everything (histograms are binned in Spark, n-grams come from the
vocabulary tables); the driver receives a few hundred rows and two dozen thumbnails.
Run `deparrot analyze` first for the parrot sections; missing tables leave their section
empty with a note instead of failing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import Config
from jobs.lake import Lake
from jobs.recipe import TEXT_REASONS, text_found
from jobs.stages import Stage
from udfs.storage import is_remote, join


@dataclass
class ReportReport:
    path: str
    figures: int


def histogram(df: DataFrame, column: str, bins: int, by: str | None = None,
              lo: float | None = None, hi: float | None = None) -> pd.DataFrame:
    """Equal-width bins of `column` computed in Spark: bin_left, bin_right, rows[, by]."""
    values = df.where(F.col(column).isNotNull() & ~F.isnan(column))
    if lo is None or hi is None:
        stats = values.agg(F.min(column).alias("lo"), F.max(column).alias("hi")).first()
        if stats["lo"] is None:
            return pd.DataFrame(columns=["bin_left", "bin_right", "rows", *([by] if by else [])])
        lo, hi = float(stats["lo"]), float(stats["hi"])
    width = (hi - lo) / bins if hi > lo else 1.0
    index = F.least(F.floor((F.col(column) - F.lit(lo)) / F.lit(width)), F.lit(bins - 1))
    keys = [index.cast("int").alias("bin"), *([F.col(by)] if by else [])]
    counts = values.groupBy(*keys).agg(F.count("*").alias("rows")).toPandas()
    counts["bin_left"] = lo + counts["bin"] * width
    counts["bin_right"] = counts["bin_left"] + width
    return counts.drop(columns="bin").sort_values("bin_left").reset_index(drop=True)


def score_histograms(lake: Lake, bins: int) -> pd.DataFrame:
    """CLIP and aesthetic scores of decided rows, kept (in the subset) vs removed."""
    if not (lake.exists("scores") and lake.exists("subset")):
        return pd.DataFrame(columns=["metric", "kept", "bin_left", "bin_right", "rows"])
    kept = lake.read("subset").select(F.col("SAMPLE_ID").alias("sample_id"),
                                      F.lit(True).alias("kept"))
    scores = lake.read("scores").where(F.col("status") == "ok").join(kept, "sample_id", "left") \
        .withColumn("kept", F.coalesce("kept", F.lit(False)))
    frames = []
    for metric in ("clip_score", "aesthetic_score"):
        h = histogram(scores, metric, bins, by="kept")
        h["metric"] = metric
        frames.append(h)
    return pd.concat(frames, ignore_index=True)


def contact_sheet(lake: Lake, per_group: int) -> pd.DataFrame:
    """Thumbnails: images removed for text next to kept ones (stable pick by id hash)."""
    if not (lake.exists("rejects") and lake.exists("subset") and lake.exists("images")):
        return pd.DataFrame(columns=["sample_id", "group", "caption", "image"])
    for_text = F.col("reason").isin(*TEXT_REASONS.values())  # under any text policy
    removed = lake.read("rejects").where((F.col("stage") == "publish") & for_text).select(
        "sample_id")
    kept = lake.read("subset").select(F.col("SAMPLE_ID").alias("sample_id"))
    images = lake.read("images").select("sample_id", "image")
    captions = lake.read("metadata").select("sample_id", F.col("text").alias("caption"))
    frames = []
    for group, ids in (("removed_text", removed), ("kept", kept)):
        pick = ids.orderBy(F.xxhash64("sample_id"), "sample_id").limit(per_group)
        rows = pick.join(images, "sample_id").join(captions, "sample_id", "left")
        frame = rows.toPandas()
        frame["group"] = group
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _table(lake: Lake, key: str, columns: list[str]) -> pd.DataFrame:
    if not lake.exists(key):
        return pd.DataFrame(columns=columns)
    return lake.read(key).toPandas()


def parrot_sections(lake: Lake, cfg: Config) -> dict[str, object]:
    rc = cfg.report
    out: dict[str, object] = {}
    summary = _table(lake, "parrot_summary", ["measure", "value", "how"])
    out["parrot_summary"] = summary.rename(columns={"measure": "name"})
    out["clip_by_text"] = _table(lake, "clip_by_text", ["group", "mean", "std"])
    out["cluster_ocr"] = _table(lake, "cluster_ocr", ["kmeans", "ocr_type", "rows"])
    if lake.exists("policy_counts"):
        out["policy_counts"] = lake.read("policy_counts").toPandas()
    if lake.exists("parrot"):
        text = lake.read("parrot").where(F.col("ocr_type") != "no_text")
        out["cotr_hist"] = histogram(text, "cotr", rc.cotr_bins, lo=0.0, hi=1.0)
    if lake.exists("ngrams"):
        top = lake.read("ngrams").where(F.col("rank") <= rc.top_ngrams).toPandas()
        out["top_ngrams"] = {v: g.sort_values("rank")[["word", "count"]]
                             for v, g in top.groupby("vocab")}
    return out


def funnel_sections(lake: Lake) -> dict[str, pd.DataFrame]:
    if lake.exists("funnel"):
        f = lake.read("funnel").toPandas()
        left = f[f["step"] < 100].sort_values("step")[["stage", "rows"]]
        rejects = f[f["step"] >= 100][["stage", "reason", "rows"]]
        return {"funnel": left.reset_index(drop=True), "rejects": rejects}
    if lake.exists("rejects"):
        r = lake.read("rejects").groupBy("stage", "reason").agg(F.count("*").alias("rows"))
        return {"rejects": r.toPandas()}
    return {}


def review_quality(lake: Lake, cfg: Config) -> dict | None:
    """The text filter's precision and recall (and dedup's precision) on the curators'
    reviews (`deparrot explore`), counted by the workbench's own function."""
    from jobs.explore.reviews import DUP_LABELS, TEXT_LABELS, quality_of

    if not (lake.exists("reviews") and lake.exists("scores")):
        return None
    reviews = lake.read("reviews")
    latest = reviews.groupBy("sample_id").agg(
        F.max_by(F.when(F.col("label").isin(*TEXT_LABELS), F.col("label")),
                 F.when(F.col("label").isin(*TEXT_LABELS), F.col("reviewed_at")))
        .alias("text_label"),
        F.max_by(F.when(F.col("label").isin(*DUP_LABELS), F.col("label")),
                 F.when(F.col("label").isin(*DUP_LABELS), F.col("reviewed_at")))
        .alias("dup_label"))
    scores = lake.read("scores").select(
        "sample_id", F.coalesce(text_found(cfg.recipe), F.lit(False)).alias("found"),
        (F.col("status") == "ok").alias("scored"))
    rows = latest.join(scores, "sample_id", "left")
    if lake.exists("dedup"):
        dedup = lake.read("dedup").select("sample_id", (~F.col("kept")).alias("removed"))
        rows = rows.join(dedup, "sample_id", "left")
    else:
        rows = rows.withColumn("removed", F.lit(False))
    return quality_of(rows.select("found", "scored", "removed", "text_label",
                                  "dup_label").toPandas())


def inputs(lake: Lake, cfg: Config) -> tuple[dict[str, str], list[str]]:
    """What the report is a function of: table versions and the recipe; warnings."""
    shown = {}
    for key in ("metadata", "images", "scores", "clusters", "dedup", "subset", "parrot"):
        if lake.exists(key):
            shown[f"{lake.ref(key).name} version"] = str(lake.version(key))
    shown["recipe"] = json.dumps(vars(cfg.recipe))
    warnings = []
    if lake.exists("scores"):
        props = lake.properties("scores")
        if props.get("deparrot.random_init") == "true":
            warnings.append(props.get("deparrot.warning", "random CLIP weights"))
        shown["CLIP model"] = props.get("deparrot.clip_model", "")
    return shown, warnings


def run(spark: SparkSession, cfg: Config) -> ReportReport:
    from jobs.report_html import ReportData, report_figures, write_report

    lake = Lake(spark, cfg)
    lake.require("metadata")
    shown, warnings = inputs(lake, cfg)
    data = ReportData(
        inputs=shown, warnings=warnings,
        score_hist=score_histograms(lake, cfg.report.score_bins),
        thresholds={"min_clip_score": cfg.recipe.min_clip_score,
                    "min_aesthetic": cfg.recipe.min_aesthetic},
        contact_sheet=contact_sheet(lake, cfg.report.contact_sheet),
        top_clusters=cfg.report.top_clusters,
        training_runs=training_runs(lake),
        review_quality=review_quality(lake, cfg),
        **funnel_sections(lake), **parrot_sections(lake, cfg), **sync_sections(lake))
    if lake.exists("clusters"):
        data.cluster_sizes = lake.read("clusters").groupBy("kmeans").agg(
            F.count("*").alias("rows")).toPandas()
    out = cfg.shared(cfg.report.out)
    page = write_report(data, out)
    figures = report_figures(page.read_text(encoding="utf-8"))
    where = str(page) if not is_remote(out) else join(out, "index.html")
    print(f"report: {where}")
    return ReportReport(path=where, figures=len(figures))


TRAINING_COLUMNS = ("run_name", "dataset", "pairs", "train_num_samples", "final_epoch",
                    "loss_end", "sync_score", "sync_gap", "read_top1", "visual_top1")


def training_runs(lake: Lake) -> pd.DataFrame | None:
    """The latest row of each training run (a run resumed twice has three rows)."""
    if not lake.exists("training_runs"):
        return None
    df = lake.read("training_runs")
    latest = df.groupBy("run_name").agg(F.max("finished_at").alias("finished_at"))
    rows = df.join(latest, ["run_name", "finished_at"]).orderBy("started_at")
    return rows.select(*[c for c in TRAINING_COLUMNS if c in df.columns]).toPandas()


def sync_sections(lake: Lake) -> dict[str, pd.DataFrame]:
    """Per-word Sync. Scores and their summary, when `deparrot sync-score` has run."""
    out: dict[str, pd.DataFrame] = {}
    if lake.exists("sync_scores"):
        out["sync_summary"] = lake.read("sync_scores").toPandas()
    if lake.exists("sync_word_scores"):
        words = lake.read("sync_word_scores").where(F.col("status") == "ok")
        out["sync_scores"] = words.select("model", "style", "score").limit(200_000).toPandas()
    return out


STAGES = (Stage("report", "a static HTML report with plots (funnel, scores, clusters, parrot "
                          "statistics, n-grams, thumbnails)", run, flags={"--out": "report.out"},
                reads=("metadata", "images", "scores", "clusters", "subset", "rejects", "funnel",
                       "ngrams", "parrot", "policy_counts", "sync_scores", "sync_word_scores",
                       "training_runs", "reviews")),)
