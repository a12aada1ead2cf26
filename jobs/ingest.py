"""`deparrot ingest`: LAION-style parquet metadata -> the Delta metadata table.

Three families (LAION-400M, LAION-2B/5B, DataComp pools) are normalised to one schema
(METADATA_SCHEMA) with a stable `sample_id`. Every input row is kept or rejected with a
reason; a row is identified by (source_file, source_row), so re-ingesting a file adds
nothing and a crash between the two table commits is finished by the next run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

if __package__ in (None, ""):  # `spark-submit jobs/ingest.py` from a checkout
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.config import Config, IngestConfig
from jobs.lake import Lake

STAGE = "ingest"
FAMILIES = ("laion400m", "laion2b", "datacomp")

METADATA_SCHEMA = T.StructType(
    [
        T.StructField("sample_id", T.LongType(), False),
        T.StructField("source_uid", T.StringType(), True),
        T.StructField("url", T.StringType(), False),
        T.StructField("text", T.StringType(), True),
        T.StructField("width", T.DoubleType(), True),
        T.StructField("height", T.DoubleType(), True),
        T.StructField("license", T.StringType(), True),
        T.StructField("nsfw", T.StringType(), True),
        T.StructField("similarity", T.DoubleType(), True),
        T.StructField("aesthetic", T.DoubleType(), True),
        T.StructField("clip_l14_similarity", T.DoubleType(), True),
        T.StructField("punsafe", T.DoubleType(), True),
        T.StructField("pwatermark", T.DoubleType(), True),
        T.StructField("language", T.StringType(), True),
        T.StructField("sha256", T.StringType(), True),
        T.StructField("family", T.StringType(), False),
        T.StructField("source_file", T.StringType(), False),
        T.StructField("source_row", T.LongType(), False),
        T.StructField("ingested_at", T.TimestampType(), True),
    ]
)
NUMERIC = ("width", "height", "similarity", "aesthetic", "clip_l14_similarity", "punsafe",
           "pwatermark")

# normalised column -> source column name per family (matched case-insensitively).
COLUMN_MAP: dict[str, dict[str, str]] = {
    "laion400m": {
        "source_uid": "SAMPLE_ID", "url": "URL", "text": "TEXT", "width": "WIDTH",
        "height": "HEIGHT", "license": "LICENSE", "nsfw": "NSFW", "similarity": "similarity",
        "aesthetic": "aesthetic", "punsafe": "punsafe", "pwatermark": "pwatermark",
        "language": "LANGUAGE",
    },
    "laion2b": {
        "source_uid": "hash", "url": "URL", "text": "TEXT", "width": "WIDTH",
        "height": "HEIGHT", "license": "LICENSE", "nsfw": "NSFW", "similarity": "similarity",
        "aesthetic": "aesthetic", "punsafe": "punsafe", "pwatermark": "pwatermark",
        "language": "LANGUAGE",
    },
    "datacomp": {
        "source_uid": "uid", "url": "url", "text": "text", "width": "original_width",
        "height": "original_height", "similarity": "clip_b32_similarity_score",
        "clip_l14_similarity": "clip_l14_similarity_score", "sha256": "sha256",
    },
}


@dataclass
class IngestReport:
    input_rows: int = 0
    kept: int = 0
    already_present: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def detect_family(columns: list[str]) -> str:
    """Tell the metadata family from its columns (case-insensitive)."""
    cols = {c.lower() for c in columns}
    if "uid" in cols and "url" in cols:
        return "datacomp"
    if "sample_id" in cols and "url" in cols:
        return "laion400m"
    if "url" in cols and "text" in cols:
        return "laion2b"
    raise ValueError(
        "cannot tell the metadata family from columns "
        f"{sorted(columns)}; set ingest.family to one of {', '.join(FAMILIES)}"
    )


def read_input(spark: SparkSession, path: str) -> DataFrame:
    """Read a parquet file or a folder of them, tagging each row with its file and row."""
    df = spark.read.option("recursiveFileLookup", "true").parquet(path)
    return df.select(
        "*",
        F.col("_metadata.file_path").alias("_source_file"),
        F.col("_metadata.row_index").alias("_source_row"),
    )


def normalise(raw: DataFrame, family: str) -> DataFrame:
    """Map a family's columns onto METADATA_SCHEMA (plus `_record`, the original row)."""
    if family not in COLUMN_MAP:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    by_lower = {c.lower(): c for c in raw.columns if not c.startswith("_source")}
    original = [c for c in raw.columns if not c.startswith("_source")]
    mapping = COLUMN_MAP[family]

    def src(name: str) -> Column | None:
        col = mapping.get(name)
        actual = by_lower.get(col.lower()) if col else None
        return F.col(f"`{actual}`") if actual else None

    out = []
    for fld in METADATA_SCHEMA.fields:
        name = fld.name
        if name in ("sample_id", "family", "source_file", "source_row", "ingested_at"):
            continue
        col = src(name)
        if col is None:
            out.append(F.lit(None).cast(fld.dataType).alias(name))
        elif name in NUMERIC:
            out.append(col.cast("double").alias(name))
        else:
            out.append(col.cast("string").alias(name))
    df = raw.select(
        *out,
        F.lit(family).alias("family"),
        F.col("_source_file").alias("source_file"),
        F.col("_source_row").cast("long").alias("source_row"),
        F.to_json(F.struct(*[F.col(f"`{c}`") for c in original])).alias("_record"),
    )
    return df.withColumn("sample_id", _sample_id(family))


def _sample_id(family: str) -> Column:
    """LAION-400M keeps its SAMPLE_ID; the others get a stable 64-bit hash of their key."""
    if family == "laion400m":
        return F.col("source_uid").cast("long")
    if family == "datacomp":
        return F.when(F.col("source_uid").isNotNull(), F.xxhash64("source_uid"))
    return F.when(
        F.col("url").isNotNull() & F.col("text").isNotNull(), F.xxhash64("url", "text")
    )


def _finite(c: Column) -> Column:
    return ~F.isnan(c) & (F.abs(c) != F.lit(float("inf")))


def validate(df: DataFrame, cfg: IngestConfig) -> DataFrame:
    """Add `reason` (null when the row is valid): the first rule a row breaks."""
    url = F.trim(F.col("url"))
    rules: list[tuple[Column, str]] = [
        (url.isNull() | (url == ""), "missing_url"),
        (~url.rlike(r"(?i)^https?://[^\s/?#]+[^\s]*$"), "bad_url"),
    ]
    if cfg.require_text:
        rules.append((F.col("text").isNull() | (F.trim(F.col("text")) == ""), "missing_text"))
    for name in cfg.required_numbers:
        if name not in NUMERIC:
            raise ValueError(f"ingest.required_numbers: {name!r} is not one of {NUMERIC}")
        rules.append((F.col(name).isNull(), f"missing_number:{name}"))
    for name in NUMERIC:
        rules.append((F.col(name).isNotNull() & ~_finite(F.col(name)), f"non_finite:{name}"))
    for name in ("width", "height"):
        rules.append((F.col(name) < 0, "negative_size"))
        too_big = (F.col(name) == 0) | (F.col(name) > cfg.max_side)
        rules.append((F.col(name).isNotNull() & too_big, "absurd_size"))
    rules.append((F.col("sample_id").isNull(), "missing_id"))
    reason: Column = F.lit(None).cast("string")
    for cond, name in reversed(rules):
        reason = F.when(F.coalesce(cond, F.lit(False)), F.lit(name)).otherwise(reason)
    return df.withColumn("reason", reason)


def classify(checked: DataFrame, existing: DataFrame | None) -> DataFrame:
    """Mark duplicate ids and rows already ingested by an earlier run.

    `_status` is keep | reject | present. Within the input the first row of an id (by
    file, row) wins; against the table, a row whose id is stored under the same
    (file, row) is `present` (a re-run), under another one a `duplicate_id` reject.
    """
    order = Window.partitionBy("sample_id").orderBy("source_file", "source_row")
    valid = F.col("reason").isNull()
    df = checked.withColumn(
        "_rank", F.when(valid, F.row_number().over(order))
    )
    if existing is not None:
        seen = existing.select(
            "sample_id",
            F.col("source_file").alias("_seen_file"),
            F.col("source_row").alias("_seen_row"),
        )
        df = df.join(seen, on="sample_id", how="left")
        same = (F.col("_seen_file") == F.col("source_file")) & (
            F.col("_seen_row") == F.col("source_row")
        )
        stored = F.col("_seen_file").isNotNull()
    else:
        same = F.lit(False)
        stored = F.lit(False)
    dup = valid & ((stored & ~same) | (~stored & (F.col("_rank") > 1)))
    return df.withColumn(
        "reason", F.when(dup, F.lit("duplicate_id")).otherwise(F.col("reason"))
    ).withColumn(
        "_status",
        F.when(F.col("reason").isNotNull(), "reject")
        .when(stored & same, "present")
        .otherwise("keep"),
    )


def transform(raw: DataFrame, cfg: IngestConfig, existing: DataFrame | None) -> DataFrame:
    family = cfg.family if cfg.family != "auto" else detect_family(raw.columns)
    return classify(validate(normalise(raw, family), cfg), existing)


def run(spark: SparkSession, cfg: Config) -> IngestReport:
    if not cfg.ingest.input:
        raise ValueError("ingest.input is empty: pass --input PATH or --set ingest.input=PATH")
    lake = Lake(spark, cfg)
    lake.ensure("metadata", METADATA_SCHEMA)
    # Pin the version we compare against so both commits below see the same classification.
    existing = lake.read("metadata", version=lake.version("metadata"))
    classified = transform(read_input(spark, cfg.ingest.input), cfg.ingest, existing)
    classified = classified.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        keep = classified.where(F.col("_status") == "keep").select(
            *[F.col(f.name) for f in METADATA_SCHEMA.fields if f.name != "ingested_at"],
            F.current_timestamp().alias("ingested_at"),
        )
        lake.insert_new("metadata", keep, on=["sample_id"])
        rejects = classified.where(F.col("_status") == "reject").select(
            F.lit(STAGE).alias("stage"),
            F.col("reason"),
            F.concat_ws("#", "source_file", F.col("source_row").cast("string")).alias(
                "reject_key"
            ),
            "sample_id",
            "source_file",
            "source_row",
            F.col("_record").alias("record"),
        )
        lake.add_rejects(rejects)
        report = IngestReport()
        for row in classified.groupBy("_status", "reason").count().collect():
            report.input_rows += row["count"]
            if row["_status"] == "keep":
                report.kept += row["count"]
            elif row["_status"] == "present":
                report.already_present += row["count"]
            else:
                report.rejected[row["reason"]] = row["count"]
    finally:
        classified.unpersist()
    return report


def main(argv: list[str] | None = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(["ingest", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
