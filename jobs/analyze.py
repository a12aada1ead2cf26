"""`deparrot analyze`: the paper's parrot statistics and n-gram vocabularies as Delta tables.

Everything is computed in Spark; only aggregates of a few rows reach the driver.

- `parrot`: one row per scored image: CoTR exact / normalised / fuzzy, `parrots`, the OCR
  type (`no_text`, `text_no_overlap`, `co_emb`) and the co-emb words (udfs/parrot.py).
- `parrot_summary`: the paper's Table 1 for this data. Shares of images are ratios of
  totals (images with text / images); CoTR figures are means of the per-row CoTR, over
  all pairs and over pairs whose image has text, as in the paper's Algorithm 1.
- `clip_by_text`: the paper's Table 2: CLIP score of images without text vs with text,
  as mean +- std across clusters of the per-cluster means.
- `cluster_ocr`: rows and share of each OCR type per cluster (the paper's Figure 3).
- `funnel`: rows left after each stage, and rows per reject reason.
- `ngrams`: caption 1-grams and 2-grams (occurrences) and co-emb 1-grams (images), top
  `analyze.top_k` each, tokenised by `udfs.parrot.words_normalised` (case-folded, NFKC,
  punctuation stripped from word ends); CSV copies `<vocab>.csv` (word,count) in
  `analyze.export_dir` for `deparrot sync-score` and the paper's scripts.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs import text_policy
from jobs.config import Config
from jobs.lake import Lake
from jobs.stages import Stage
from udfs import storage

CSV_ROWS_PER_PARTITION = 20_000
VOCABS = ("caption_1gram", "caption_2gram", "co_emb_1gram")
NGRAM_SCHEMA = T.StructType([
    T.StructField("vocab", T.StringType(), False),
    T.StructField("rank", T.IntegerType(), False),
    T.StructField("word", T.StringType(), False),
    T.StructField("count", T.LongType(), False),
])


@dataclass
class AnalyzeReport:
    rows: int = 0
    tables: dict[str, str] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    vocab_sizes: dict[str, int] = field(default_factory=dict)
    csv: dict[str, str] = field(default_factory=dict)


def captions(lake: Lake) -> DataFrame:
    """Every metadata row with its OCR result when scored ok (`scored`) and its cluster
    (kmeans null when not clustered): the one input of the analysis pass."""
    scores = lake.read("scores").where(F.col("status") == "ok").select(
        "sample_id", "ocr_text", "has_text", "clip_score", F.lit(True).alias("scored"))
    out = lake.read("metadata").select("sample_id", "text").join(scores, "sample_id", "left")
    if lake.exists("clusters"):
        out = out.join(lake.read("clusters").select("sample_id", "kmeans"), "sample_id", "left")
    else:
        out = out.withColumn("kmeans", F.lit(None).cast("long"))
    return out.withColumn("scored", F.coalesce("scored", F.lit(False)))


CARRIED = ("clip_score", "kmeans", "scored")


def measures(df: DataFrame, cfg: Config) -> DataFrame:
    """One Python pass: per-row parrot measures and the caption's normalised words
    (udfs.parrot.analysis_batches); clip_score, kmeans and scored pass through."""
    from udfs.parrot import ANALYSIS_SCHEMA_DDL, analysis_batches

    settings = cfg.analyze.parrot

    def body(batches):
        return analysis_batches(batches, settings, carry=CARRIED)

    return df.select("sample_id", "text", "ocr_text", "has_text", *CARRIED).mapInPandas(
        body, schema=ANALYSIS_SCHEMA_DDL + ", clip_score double, kmeans long, scored boolean")


def parrot_rows(measured: DataFrame) -> DataFrame:
    """The `parrot` table: scored rows, without the caption words."""
    return measured.where("scored").drop("cap_words", "scored")


def parrot_summary(parrot: DataFrame) -> DataFrame:
    """The paper's Table 1 for this data, one row per measure."""
    text = F.col("ocr_type") != "no_text"
    co_emb = F.col("ocr_type") == "co_emb"
    row = parrot.agg(
        F.count("*").alias("images"),
        F.sum(text.cast("long")).alias("with_text"),
        F.sum(co_emb.cast("long")).alias("co_emb"),
        *[F.avg(c).alias(f"{c}_all") for c in ("cotr", "cotr_norm", "cotr_fuzzy")],
        *[F.avg(F.when(text, F.col(c))).alias(f"{c}_text")
          for c in ("cotr", "cotr_norm", "cotr_fuzzy")],
    )
    ratio = "ratio of totals"
    mean_all, mean_text = "mean of per-row CoTR, all pairs", "mean of per-row CoTR, text pairs"
    items = [
        ("images", F.col("images").cast("double"), ratio),
        ("images_with_text_share", F.col("with_text") / F.col("images"), ratio),
        ("images_with_co_emb_text_share", F.col("co_emb") / F.col("images"), ratio),
        ("co_emb_share_of_text_images", F.col("co_emb") / F.col("with_text"), ratio),
        ("cotr_all", F.col("cotr_all"), mean_all),
        ("cotr_text", F.col("cotr_text"), mean_text),
        ("cotr_norm_all", F.col("cotr_norm_all"), mean_all),
        ("cotr_norm_text", F.col("cotr_norm_text"), mean_text),
        ("cotr_fuzzy_all", F.col("cotr_fuzzy_all"), mean_all),
        ("cotr_fuzzy_text", F.col("cotr_fuzzy_text"), mean_text),
    ]
    structs = [F.struct(F.lit(name).alias("measure"), value.cast("double").alias("value"),
                        F.lit(how).alias("how")) for name, value, how in items]
    return row.select(F.explode(F.array(*structs)).alias("m")).select("m.*")


def clip_by_text(parrot: DataFrame) -> DataFrame:
    """Table 2: per-cluster mean CLIP score of text-free vs text images, mean +- std."""
    group = F.when(F.col("ocr_type") == "no_text", "no_text").otherwise("with_text")
    per_cluster = parrot.where(F.col("clip_score").isNotNull()).groupBy(
        group.alias("group"), "kmeans").agg(F.avg("clip_score").alias("m"),
                                            F.count("*").alias("n"))
    return per_cluster.groupBy("group").agg(
        F.avg("m").alias("mean"), F.stddev_pop("m").alias("std"),
        F.count("*").alias("clusters"), F.sum("n").alias("rows"))


def cluster_ocr(parrot: DataFrame) -> DataFrame:
    counts = parrot.groupBy("kmeans", "ocr_type").agg(F.count("*").alias("rows"))
    total = F.sum("rows").over(Window.partitionBy("kmeans"))
    return counts.withColumn("share", F.col("rows") / total)


def funnel(lake: Lake) -> DataFrame:
    """Rows left after each stage, then rows per (stage, reason) of rejects."""
    spark = lake.spark
    steps: list[tuple[int, str, str, int]] = []
    rejects = lake.read("rejects") if lake.exists("rejects") else None
    ingest_rejects = rejects.where(F.col("stage") == "ingest").count() if rejects else 0
    metadata = lake.read("metadata").count()
    steps.append((0, "input", "", metadata + ingest_rejects))
    steps.append((1, "ingest", "", metadata))
    counted = (("download", "images", F.col("status") == "ok"),
               ("score", "scores", F.col("status") == "ok"),
               ("cluster", "clusters", F.lit(True)),
               ("publish", "subset", F.lit(True)))
    for i, (stage, table, ok) in enumerate(counted, start=2):
        if lake.exists(table):
            steps.append((i, stage, "", lake.read(table).where(ok).count()))
    schema = "step int, stage string, reason string, rows long"
    left = spark.createDataFrame(steps, schema)
    if rejects is None:
        return left
    by_reason = rejects.groupBy("stage", "reason").agg(F.count("*").alias("rows")).select(
        F.lit(100).cast("int").alias("step"), "stage", "reason", "rows")
    return left.unionByName(by_reason)


def ngram_counts(measured: DataFrame) -> DataFrame:
    """(vocab, word, count) for the three vocabularies, from the analysis pass's words:
    caption n-grams over every caption, co-emb words over scored images."""
    t = F.col("cap_words")
    one = measured.select(F.explode(t).alias("word")).withColumn("vocab", F.lit(VOCABS[0]))
    pairs_of_words = F.expr(
        "CASE WHEN size(cap_words) < 2 THEN array() ELSE transform(sequence(0, "
        "size(cap_words) - 2), i -> concat(cap_words[i], ' ', cap_words[i + 1])) END")
    two = measured.select(F.explode(pairs_of_words).alias("word")).withColumn(
        "vocab", F.lit(VOCABS[1]))
    co = measured.where("scored").select(F.explode("co_emb_words").alias("word")).withColumn(
        "vocab", F.lit(VOCABS[2]))
    return one.unionByName(two).unionByName(co).groupBy("vocab", "word").agg(
        F.count("*").alias("count"))


def top_k(counts: DataFrame, k: int) -> DataFrame:
    """The k most frequent entries per vocabulary; ties broken by the word."""
    order = Window.partitionBy("vocab").orderBy(F.desc("count"), "word")
    ranked = counts.withColumn("rank", F.row_number().over(order))
    return ranked.where(F.col("rank") <= k).select(
        "vocab", F.col("rank").cast("int"), "word", "count")


def export_csv(lake: Lake, out_dir: str) -> dict[str, str]:
    """One `<vocab>.csv` (word,count, most frequent first) per vocabulary, via the driver.

    Rows stream through toLocalIterator in rank ranges of CSV_ROWS_PER_PARTITION, so the
    driver holds one range at a time, not a whole 400k-entry vocabulary.
    """
    storage.makedirs(out_dir)
    written = {}
    for vocab in VOCABS:
        path = storage.join(out_dir, f"{vocab}.csv")
        tmp = storage.temp_path(path)  # beside it, or in /tmp for a URL
        rows = lake.read("ngrams").where(F.col("vocab") == vocab)
        ranges = max(1, -(-rows.count() // CSV_ROWS_PER_PARTITION))
        rows = rows.repartitionByRange(ranges, "rank").sortWithinPartitions("rank")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["word", "count"])
            for row in rows.select("word", "count").toLocalIterator(prefetchPartitions=False):
                writer.writerow([row["word"], row["count"]])
        storage.publish_file(tmp, path)
        written[vocab] = path
    return written


def run(spark: SparkSession, cfg: Config) -> AnalyzeReport:
    lake = Lake(spark, cfg)
    for key in ("metadata", "scores"):
        lake.require(key)
    report = AnalyzeReport()
    # The only Python pass: everything below reads the persisted result or the parrot table.
    measured = measures(captions(lake), cfg).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        lake.overwrite("parrot", parrot_rows(measured))
        parrot = lake.read("parrot")
        lake.overwrite("parrot_summary", parrot_summary(parrot))
        lake.overwrite("clip_by_text", clip_by_text(parrot))
        lake.overwrite("cluster_ocr", cluster_ocr(parrot))
        lake.overwrite("funnel", funnel(lake))
        lake.overwrite("ngrams", top_k(ngram_counts(measured), cfg.analyze.top_k),
                       partition_by=("vocab",))
    finally:
        measured.unpersist()
    report.rows = lake.read("parrot").count()
    for key in ("parrot", "parrot_summary", "clip_by_text", "cluster_ocr", "funnel", "ngrams"):
        report.tables[key] = lake.ref(key).name
    report.summary = {r["measure"]: r["value"] for r in lake.read("parrot_summary").collect()}
    report.vocab_sizes = {r["vocab"]: r["count"] for r in
                          lake.read("ngrams").groupBy("vocab").count().collect()}
    if cfg.analyze.export_dir:
        report.csv = export_csv(lake, cfg.shared(cfg.analyze.export_dir))
    # Rows each recipe.text_policy keeps; the parrot table has their CoTR already.
    if text_policy.write_policy_counts(lake, cfg, lake.read("parrot")):
        report.tables["policy_counts"] = lake.ref("policy_counts").name
    return report


STAGES = (Stage("analyze", "parrot statistics (CoTR, OCR types, Tables 1-2), funnel and "
                           "n-gram vocabularies -> Delta tables + CSV", run,
                reads=("metadata", "scores", "clusters", "rejects"),
                writes=("parrot", "parrot_summary", "clip_by_text", "cluster_ocr", "funnel",
                        "ngrams", "policy_counts")),)
