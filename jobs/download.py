"""`deparrot download`: metadata table -> images Delta table.

Images come from the URLs (fetched inside Spark tasks, many requests in flight per task,
SSRF-guarded, opt-out headers honoured) or from shards img2dataset already wrote
(webdataset tars or parquet with image bytes). Either way each image is decoded once,
checked, resized and re-encoded the way img2dataset does it.

Every metadata row gets one images row: `ok`, or `error` with a reason. Errors are
mirrored into `rejects` (stage `download`). The chunked-stage executor
(jobs/chunked_stage.py) commits the work in chunks: a crash loses at most one chunk, and a
re-run fetches only rows that are missing or failed with a retryable error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.chunked_stage import ChunkedWork, mirror_rejects, run_chunked, settled_keys
from jobs.config import Config, DownloadConfig
from jobs.errors import UserError
from jobs.lake import Lake
from jobs.stages import Stage

STAGE = "download"
SOURCES = ("http", "webdataset", "parquet")

IMAGES_SCHEMA = T.StructType(
    [
        T.StructField("sample_id", T.LongType(), False),
        T.StructField("url", T.StringType(), True),
        T.StructField("image", T.BinaryType(), True),
        T.StructField("format", T.StringType(), True),
        T.StructField("width", T.IntegerType(), True),
        T.StructField("height", T.IntegerType(), True),
        T.StructField("original_width", T.IntegerType(), True),
        T.StructField("original_height", T.IntegerType(), True),
        T.StructField("sha256", T.StringType(), True),  # of the original downloaded bytes
        T.StructField("status", T.StringType(), False),  # ok | error
        T.StructField("error", T.StringType(), True),
        T.StructField("retryable", T.BooleanType(), True),
        T.StructField("attempts", T.IntegerType(), True),
        T.StructField("source", T.StringType(), True),  # http | webdataset | parquet
        # The original again at text-detection size (udfs/ocr_view.py), JPEG; null when
        # `image` already covers it (or download.ocr_view.side is 0). The spotter reads it.
        T.StructField("ocr_image", T.BinaryType(), True),
        # The error's own words, where they say more than `error` (internal errors).
        T.StructField("error_detail", T.StringType(), True),
    ]
)
REJECT_RECORD = ("url", "source", "original_width", "original_height")  # kept as JSON
TABLE_SCHEMA = T.StructType(
    [*IMAGES_SCHEMA.fields, T.StructField("fetched_at", T.TimestampType(), True)]
)


@dataclass
class DownloadReport:
    pending: int = 0
    chunks: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # where the stage's time went


def fetch_settings(cfg: DownloadConfig):
    """The fetcher's settings, with a connection pool big enough for the concurrency."""
    return dataclasses.replace(cfg.fetch, pool_maxsize=max(cfg.fetch.pool_maxsize,
                                                           cfg.concurrency))


def image_settings(cfg: DownloadConfig):
    from udfs.images import ImageSettings

    return ImageSettings(resize=cfg.resize, max_pixels=cfg.max_pixels, ocr_view=cfg.ocr_view)


def pending(metadata: DataFrame, images: DataFrame) -> DataFrame:
    """Metadata rows without a final images row (ok, or an error not worth retrying)."""
    return pending_rows(metadata, settled_keys(images))


def pending_rows(metadata: DataFrame, settled_ids: DataFrame) -> DataFrame:
    return metadata.select("sample_id", "url").join(settled_ids, on="sample_id",
                                                    how="left_anti")


def fetch(todo: DataFrame, spark: SparkSession, cfg: DownloadConfig) -> DataFrame:
    """A chunk of (sample_id, url) rows -> images rows, spread over the tasks."""
    parts = cfg.partitions or spark.sparkContext.defaultParallelism
    todo = todo.repartition(parts)
    return fetch_http(todo, cfg) if cfg.source == "http" else read_shards(todo, spark, cfg)


def fetch_http(todo: DataFrame, cfg: DownloadConfig) -> DataFrame:
    from udfs.images import download_arrow

    fetch, settings, concurrency = fetch_settings(cfg), image_settings(cfg), cfg.concurrency

    def body(batches):
        return download_arrow(batches, fetch, settings, concurrency)

    return todo.mapInArrow(body, schema=IMAGES_SCHEMA)


def shard_members(spark: SparkSession, cfg: DownloadConfig) -> DataFrame:
    """img2dataset output as rows (url, sample_id, image); one row per URL/id."""
    if not cfg.shards:
        raise UserError(f"download.source={cfg.source} needs download.shards (a folder)")
    if cfg.source == "webdataset":
        from udfs.images import tar_batches

        tars = (spark.read.format("binaryFile").option("pathGlobFilter", "*.tar")
                .option("recursiveFileLookup", "true").load(cfg.shards))
        schema = ("key string, shard string, url string, sample_id long, image binary, "
                  "shard_error string")
        members = tars.select("path", "content").mapInPandas(tar_batches, schema=schema)
        members = members.where(F.col("shard_error").isNull())
    else:
        # img2dataset writes NNNNN_stats.json (and .tar with --output_format webdataset)
        # beside each NNNNN.parquet: read only the parquet shards.
        df = (spark.read.option("recursiveFileLookup", "true")
              .option("pathGlobFilter", "*.parquet").parquet(cfg.shards))
        by_lower = {c.lower(): c for c in df.columns}
        image_cols = [F.col(by_lower[c]) for c in ("jpg", "png", "webp") if c in by_lower]
        if not image_cols:
            raise UserError(f"{cfg.shards}: no jpg/png/webp column; not img2dataset parquet")
        sid = by_lower.get("sample_id")
        members = df.select(
            F.col(by_lower.get("key", "url")).cast("string").alias("key"),
            F.col(by_lower["url"]).alias("url"),
            (F.col(sid).cast("long") if sid else F.lit(None).cast("long")).alias("sample_id"),
            F.coalesce(*image_cols).alias("image"),
        )
    members = members.where(F.col("image").isNotNull())
    match = "url" if cfg.match_by == "url" else "sample_id"
    first = F.row_number().over(Window.partitionBy(match).orderBy("key"))
    return members.where(F.col(match).isNotNull()).withColumn("_n", first).where("_n = 1")


def read_shards(todo: DataFrame, spark: SparkSession, cfg: DownloadConfig) -> DataFrame:
    from udfs.images import encode_batches

    if cfg.match_by not in ("url", "sample_id"):
        raise UserError(f"download.match_by must be url or sample_id, got {cfg.match_by!r}")
    members = shard_members(spark, cfg).select(cfg.match_by, F.col("image").alias("data"))
    joined = todo.join(members, on=cfg.match_by, how="left").select(
        "sample_id", "url", "data",
        F.when(F.col("data").isNull(), F.lit("not_in_shards")).alias("missing_reason"),
    )
    settings, source = image_settings(cfg), cfg.source

    def body(batches):
        return encode_batches(batches, settings, source)

    return joined.mapInPandas(body, schema=IMAGES_SCHEMA)


def _reject_values() -> dict[str, Column]:
    """What the `download` reject of an images row in error says (REJECT_COLUMNS)."""
    return {
        "reject_key": F.col("sample_id").cast("string"),
        "reason": F.col("error"),
        "detail": F.concat_ws(" ", F.concat(
            F.lit("retryable="), F.col("retryable").cast("string"), F.lit(" attempts="),
            F.col("attempts").cast("string")), F.col("error_detail")),
        "record": F.to_json(F.struct(*REJECT_RECORD)),
    }


def refresh_rejects(lake: Lake) -> None:
    """Make the `download` rejects exactly the images rows in error (one atomic commit)."""
    lake.replace_rejects(STAGE, mirror_rejects(lake.read("images"), STAGE, _reject_values()))


def run(spark: SparkSession, cfg: Config) -> DownloadReport:
    dl = cfg.download
    if dl.source not in SOURCES:
        raise UserError(f"download.source must be one of {SOURCES}, got {dl.source!r}")
    image_settings(dl)  # validate resize settings on the driver, before any task runs
    lake = Lake(spark, cfg)
    lake.require("metadata")
    work = ChunkedWork(
        stage=STAGE, table="images", schema=TABLE_SCHEMA, stamp="fetched_at",
        pending=lambda lk, settled_ids: pending_rows(lk.read("metadata"), settled_ids),
        transform=lambda part: fetch(part, spark, dl), rows_per_commit=dl.rows_per_commit,
        reject_values=_reject_values,
        refresh_rejects=lambda lk: refresh_rejects(lk))  # looked up at call time
    done = run_chunked(lake, work)
    report = DownloadReport(pending=done.pending, chunks=done.chunks, seconds=done.seconds)
    for (status, error), count in done.tallies.items():
        if status == "ok":
            report.ok += count
        else:
            report.errors[error] = count
    return report


STAGES = (Stage("download", "fetch the images (or read img2dataset shards) -> Delta images "
                "table", run, flags={"--source": "download.source", "--shards": "download.shards"},
                pipeline=True, reads=("metadata",), writes=("images", "rejects")),)
