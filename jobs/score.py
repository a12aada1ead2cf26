"""`deparrot score`: images table -> scores Delta table (OCR, CLIP score, aesthetics).

Runs the models in Python workers through an iterator pandas UDF (`mapInPandas`): each
worker loads them once, on its task's GPU when there is one, and streams Arrow batches
through them, chunk by chunk through the chunked-stage executor (jobs/chunked_stage.py).
Decode or model failures of an image become `error` rows, mirrored into `rejects` (stage
`score`): the stage never fails because of one image, but it does when most images of a
batch fail the same way (a bug, udfs/failures.py).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.chunked_stage import ChunkedWork, run_chunked, settled_keys
from jobs.config import Config, ScoreConfig
from jobs.errors import UserError
from jobs.lake import Lake
from jobs.session import ARROW_BATCH
from jobs.stages import Stage
from udfs.checkpoint_files import is_random, looks_like_file

STAGE = "score"
RANDOM_WARNING = (
    "RANDOMLY INITIALISED CLIP/AESTHETIC WEIGHTS: clip_score and aesthetic_score in this "
    "table are meaningless (score.random_init_ok=true). OCR results are real."
)

BOX = T.StructType([
    T.StructField("polygon", T.ArrayType(T.ArrayType(T.FloatType())), True),
    T.StructField("text", T.StringType(), True),
    T.StructField("confidence", T.FloatType(), True),
])
SCORES_SCHEMA = T.StructType([
    T.StructField("sample_id", T.LongType(), False),
    T.StructField("status", T.StringType(), False),  # ok | error
    T.StructField("error", T.StringType(), True),
    # The boxes the text rule counts (udfs.ocr.TextRule, score.text_rule): how many, the
    # share of the image they cover, their text space-joined.
    T.StructField("ocr_box_count", T.IntegerType(), True),
    T.StructField("ocr_text_area", T.DoubleType(), True),  # fraction of the image area
    T.StructField("ocr_text", T.StringType(), True),  # recognised text, space-joined
    # Every box the spotter returned, counted or not (the evidence a reviewer checks).
    T.StructField("ocr_boxes", T.ArrayType(BOX), True),
    # The text rule: at least one box counts (ocr_box_count > 0).
    T.StructField("has_text", T.BooleanType(), True),
    T.StructField("clip_score", T.DoubleType(), True),  # cosine(image, caption), ViT-B/32
    T.StructField("clip_score_source", T.StringType(), True),  # computed | metadata
    # T-MARS: cosine(image with its OCR boxes masked, caption); clip_score when the image
    # has no boxes; null on error rows, with score.masked_clip_score off, and in rows
    # scored before the column existed.
    T.StructField("masked_clip_score", T.DoubleType(), True),
    T.StructField("aesthetic_score", T.DoubleType(), True),
    T.StructField("aesthetic_source", T.StringType(), True),
    T.StructField("image_embedding", T.ArrayType(T.FloatType()), True),  # B/32, unit norm
    # An error from the moment (out of memory, a lost device), not the image: the next
    # run scores the row again. Decode and per-image model errors are final (false).
    T.StructField("retryable", T.BooleanType(), True),
    # The error's own words (its first line), where `error` is its kind.
    T.StructField("error_detail", T.StringType(), True),
])
TABLE_SCHEMA = T.StructType(
    [*SCORES_SCHEMA.fields, T.StructField("scored_at", T.TimestampType(), True)]
)


@dataclass
class ScoreReport:
    pending: int = 0
    chunks: int = 0
    ok: int = 0
    with_text: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    random_init: bool = False
    seconds: dict[str, float] = field(default_factory=dict)  # where the stage's time went


def score_settings(cfg: ScoreConfig):
    """The executor settings, refusing random weights unless explicitly allowed."""
    missing = random_parts(cfg)
    if missing and not cfg.random_init_ok:
        raise UserError(
            f"{', '.join(missing)} empty or 'random': refusing randomly initialised "
            "weights. Give an open_clip pretrained tag or a checkpoint path, or set "
            "score.random_init_ok=true for an offline demo (its scores mean nothing)."
        )
    return cfg.settings()


def model_file(cfg: Config, value: str) -> str:
    """A checkpoint/weights path resolved against storage.files; tags stay as given."""
    schemed = ":" in value.split("/", 1)[0]  # hf-hub:org/name, s3://..., dbfs:/...
    if is_random(value) or not looks_like_file(value) or schemed:
        return value
    return cfg.shared(value)


def model_files_on_shared_storage(cfg: Config) -> ScoreConfig:
    """The score section with relative weight paths under storage.files (never the cwd)."""
    sc = cfg.score
    return dataclasses.replace(
        sc, clip_pretrained=model_file(cfg, sc.clip_pretrained),
        aesthetic_clip_pretrained=model_file(cfg, sc.aesthetic_clip_pretrained),
        aesthetic_weights=model_file(cfg, sc.aesthetic_weights))


def random_parts(cfg: ScoreConfig) -> list[str]:
    """Config keys that would give randomly initialised weights.

    The aesthetic models count even with reuse_aesthetic: rows without a metadata score
    are still computed.
    """
    given = {"score.clip_pretrained": cfg.clip_pretrained,
             "score.aesthetic_clip_pretrained": cfg.aesthetic_clip_pretrained,
             "score.aesthetic_weights": cfg.aesthetic_weights}
    return [k for k, v in given.items() if is_random(v)]


def uses_random_weights(cfg: ScoreConfig) -> bool:
    return cfg.random_init_ok and bool(random_parts(cfg))


def transform(inputs: DataFrame, cfg: ScoreConfig) -> DataFrame:
    """(sample_id, image, text, similarity, aesthetic) rows -> SCORES_SCHEMA rows."""
    from udfs.score import score_batches

    settings = score_settings(cfg)
    attempts = task_attempts(inputs.sparkSession)

    def body(batches):
        return score_batches(batches, settings, attempts)

    parts = cfg.partitions or inputs.sparkSession.sparkContext.defaultParallelism
    return inputs.repartition(parts).mapInPandas(body, schema=SCORES_SCHEMA)


def task_attempts(spark: SparkSession) -> int:
    """How often Spark runs a failing task: local[N] once, local[N,F] F times, else
    spark.task.maxFailures (4)."""
    master = spark.sparkContext.master
    if master.startswith("local"):
        inner = master[master.find("[") + 1:master.rfind("]")] if "[" in master else ""
        parts = inner.split(",")
        return int(parts[1]) if len(parts) == 2 and parts[1].strip().isdigit() else 1
    return int(spark.conf.get("spark.task.maxFailures", "4"))


def pending(images: DataFrame, metadata: DataFrame, scores: DataFrame) -> DataFrame:
    return pending_rows(images, metadata, settled_keys(scores))


def pending_rows(images: DataFrame, metadata: DataFrame, settled_ids: DataFrame) -> DataFrame:
    """The images to score: downloaded, not settled in scores, with their caption."""
    view = F.col("ocr_image") if "ocr_image" in images.columns else F.lit(None).cast(
        "binary").alias("ocr_image")  # an images table from before the OCR view
    ok = images.where(F.col("status") == "ok").select(
        "sample_id", "image", view, "original_width", "original_height")
    return (
        ok.join(settled_ids, on="sample_id", how="left_anti")
        .join(metadata.select("sample_id", "text", "similarity", "aesthetic"), on="sample_id")
    )


def reject_values() -> dict[str, Column]:
    """What the `score` reject of a scores row in error says."""
    return {"reject_key": F.col("sample_id").cast("string"), "reason": F.col("error"),
            "detail": F.col("error_detail"), "record": F.lit(None).cast("string")}


def run(spark: SparkSession, cfg: Config) -> ScoreReport:
    sc = model_files_on_shared_storage(cfg)
    score_settings(sc)  # validate on the driver
    lake = Lake(spark, cfg)
    for upstream in ("metadata", "images"):
        lake.require(upstream)
    report = ScoreReport(random_init=uses_random_weights(sc))
    if report.random_init:
        print(f"\n!!! {RANDOM_WARNING}\n", file=sys.stderr, flush=True)
    work = ChunkedWork(
        stage=STAGE, table="scores", schema=TABLE_SCHEMA, stamp="scored_at",
        pending=lambda lk, settled_ids: pending_rows(lk.read("images"), lk.read("metadata"),
                                                     settled_ids),
        transform=lambda part: transform(part, sc), rows_per_commit=sc.rows_per_commit,
        reject_values=reject_values, conf={ARROW_BATCH: str(sc.arrow_batch_size)},
        tally_by=("status", "error", "has_text"))
    done = run_chunked(lake, work)
    record_settings(lake, sc, report.random_init)
    report.pending, report.chunks, report.seconds = done.pending, done.chunks, done.seconds
    for (status, error, has_text), count in done.tallies.items():
        if status == "ok":
            report.ok += count
            report.with_text += count if has_text else 0
        else:
            report.errors[error] = report.errors.get(error, 0) + count
    return report


def record_settings(lake: Lake, sc: ScoreConfig, random_init: bool) -> None:
    """The models behind the table, as table properties (cluster-assign checks them)."""
    lake.set_properties("scores", {
        "deparrot.clip_model": f"{sc.clip_model}:{sc.clip_pretrained or 'random'}",
        "deparrot.aesthetic": f"{sc.aesthetic_clip_model}:"
                              f"{sc.aesthetic_clip_pretrained or 'random'}"
                              f"+{sc.aesthetic_weights or 'random'}",
        "deparrot.random_init": str(random_init).lower(),
        "deparrot.warning": RANDOM_WARNING if random_init else "",
    })


STAGES = (Stage("score", "OCR text spotting, CLIP score, aesthetics -> Delta scores table",
                run, pipeline=True, gpu=True,
                reads=("metadata", "images"), writes=("scores", "rejects")),)
