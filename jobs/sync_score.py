"""`deparrot sync-score`: the paper's synthetic text-spotting benchmark for open_clip models.

Each vocabulary word is rendered on a plain 224 x 224 image in four styles and scored by
the cosine similarity of the image and the bare word (udfs/render.py, udfs/sync_score.py).
Rendering and scoring run in the same Spark task (a mapInPandas body: models load once
per Python worker, on the task's GPU when there is one), so a 400,000-word vocabulary x
4 styles x several models is one job. The paper used Arial, which cannot be shipped;
deparrot renders with DejaVu Sans (matplotlib's bundled, freely licensed font) unless
`sync_score.render.font_path` names another TrueType file, so absolute numbers can
differ slightly from the paper's.

Tables: `sync_word_scores` (model, style, word, word_rank, status, reason, score) and
`sync_scores` (one row per model x style plus an `all` row: mean, std over words,
count, skipped, vocabulary, rendering settings, when). A run replaces the rows of the
models it scored, so several models accumulate side by side.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import Config, SyncScoreConfig
from jobs.errors import UserError
from jobs.lake import Lake
from jobs.session import ARROW_BATCH, scoped_conf
from jobs.stages import Stage
from udfs import storage
from udfs.checkpoint_files import is_random


@dataclass
class SyncReport:
    vocabulary: str = ""
    words: int = 0
    summary: list[dict[str, object]] = field(default_factory=list)
    table: str = ""


def vocabulary(spark: SparkSession, lake: Lake, sc: SyncScoreConfig) -> tuple[DataFrame, str]:
    """(word, word_rank) rows and a name for the vocabulary they came from."""
    if not sc.vocabulary:
        if not lake.exists("ngrams"):
            raise UserError(f"no vocabulary: table ngrams does not exist {lake.location()}: "
                            "run `deparrot analyze` first, or set sync_score.vocabulary to a "
                            "CSV or text file")
        words = lake.read("ngrams").where(F.col("vocab") == sc.vocab).select(
            "word", F.col("rank").cast("long").alias("word_rank"))
        name = f"{lake.ref('ngrams').name}:{sc.vocab}"
    else:
        words = spark.createDataFrame(read_word_file(sc.vocabulary), "word string, word_rank long")
        name = sc.vocabulary
    if sc.sample_n:
        words = words.orderBy(F.xxhash64("word", F.lit(sc.seed))).limit(sc.sample_n)
    elif sc.top_n:
        words = words.orderBy("word_rank").limit(sc.top_n)
    return words, name


def read_word_file(path: str) -> list[tuple[str, int]]:
    """A CSV (word in the first column, optional `word` header) or one word per line."""
    if not storage.isfile(path):
        raise UserError(f"vocabulary file not found: {path}")
    with io.StringIO(storage.read_text(path), newline="") as fh:
        if path.lower().endswith(".csv"):
            rows = [r[0] for r in csv.reader(fh) if r]
            if rows and rows[0].strip().lower() == "word":
                rows = rows[1:]
        else:
            rows = [line.rstrip("\n") for line in fh if line.strip()]
    if not rows:
        raise UserError(f"vocabulary file {path} has no words")
    return [(w, i + 1) for i, w in enumerate(rows)]


def check_models(sc: SyncScoreConfig) -> None:
    if not sc.models:
        raise UserError("sync_score.models is empty: name at least one open_clip model")
    labels = [m.label for m in sc.models]
    if len(set(labels)) != len(labels):
        raise UserError(f"sync_score.models: labels must be unique (set alias), got {labels}")
    random = [m.label for m in sc.models if is_random(m.pretrained)]
    if random and not sc.random_init_ok:
        raise UserError(f"{', '.join(random)}: refusing randomly initialised weights; give a "
                        "pretrained tag or checkpoint, or set sync_score.random_init_ok=true")


def transform(words: DataFrame, sc: SyncScoreConfig) -> DataFrame:
    """(word, word_rank) -> one row per (word, model, style), scored in Spark tasks."""
    from udfs.sync_score import SYNC_OUTPUT_SCHEMA_DDL, sync_batches

    models, settings = tuple(sc.models), sc.settings()

    def body(batches):
        return sync_batches(batches, models, settings)

    parts = sc.partitions or words.sparkSession.sparkContext.defaultParallelism
    return words.repartition(parts).mapInPandas(body, schema=SYNC_OUTPUT_SCHEMA_DDL)


def summarize(scored: DataFrame, vocabulary_name: str, sc: SyncScoreConfig) -> DataFrame:
    """Mean and population std over words per model x style, plus an `all` row per model."""
    ok = F.col("status") == "ok"
    aggs = [F.avg(F.when(ok, F.col("score"))).alias("mean"),
            F.stddev_pop(F.when(ok, F.col("score"))).alias("std"),
            F.sum(ok.cast("long")).alias("count"),
            F.sum((~ok).cast("long")).alias("skipped")]
    per_style = scored.groupBy("model", "style").agg(*aggs)
    overall = scored.groupBy("model").agg(*aggs).withColumn("style", F.lit("all"))
    render = json.dumps({**dataclasses.asdict(sc.render), "template": sc.template})
    return per_style.unionByName(overall).select(
        "model", "style", "mean", "std", "count", "skipped",
        F.lit(vocabulary_name).alias("vocabulary"), F.lit(render).alias("rendering"),
        F.current_timestamp().alias("scored_at"))


def _replace_models(lake: Lake, key: str, df: DataFrame, labels: list[str]) -> None:
    """One commit replacing the rows of these models (other models' rows stay)."""
    if not lake.exists(key):
        lake.overwrite(key, df)
        return
    quoted = ", ".join("'" + m.replace("'", "''") + "'" for m in labels)
    lake.replace_where(key, df, f"model IN ({quoted})")


def print_table(rows: list[dict[str, object]]) -> None:
    """The run's `all` rows beside the paper's published 1-gram numbers."""
    from udfs.sync_score import PUBLISHED_1GRAM

    print(f"{'model':<48} {'Sync. Score (all styles)':>26} {'words':>8}")
    for r in rows:
        if r["style"] == "all":
            print(f"{r['model']:<48} {r['mean']:>15.3f} +- {r['std']:<7.4f} {r['count']:>8}")
    print("published 1-gram Sync. Scores (paper, for reference; lower = less text spotting):")
    for name, (mean, std) in PUBLISHED_1GRAM.items():
        print(f"  {name:<46} {mean:>15.3f} +- {std:<7.4f}")


def run(spark: SparkSession, cfg: Config) -> SyncReport:
    sc = dataclasses.replace(cfg.sync_score, vocabulary=cfg.shared(cfg.sync_score.vocabulary))
    check_models(sc)
    lake = Lake(spark, cfg)
    words, name = vocabulary(spark, lake, sc)
    labels = [m.label for m in sc.models]
    with scoped_conf(spark, {ARROW_BATCH: str(sc.arrow_batch_size)}):
        scored = transform(words, sc).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            _replace_models(lake, "sync_word_scores", scored, labels)
            _replace_models(lake, "sync_scores",
                            summarize(lake.read("sync_word_scores").where(
                                F.col("model").isin(labels)), name, sc), labels)
        finally:
            scored.unpersist()
    rows = [r.asDict() for r in lake.read("sync_scores").where(F.col("model").isin(labels))
            .orderBy("model", "style").collect()]
    print_table(rows)
    return SyncReport(vocabulary=name, words=words.count(), summary=rows,
                      table=lake.ref("sync_scores").name)


STAGES = (Stage("sync-score", "the paper's synthetic text-spotting benchmark (Sync. Score) "
                              "for open_clip models", run, gpu=True,
                reads=("ngrams",), writes=("sync_scores", "sync_word_scores")),)
