"""`deparrot ingest`: LAION-style parquet metadata -> the Delta metadata table.

Three families (LAION-400M, LAION-2B/5B, DataComp pools) are normalised to one schema
(METADATA_SCHEMA) with a stable `sample_id`. Every input row is kept or rejected with a
reason; a row is identified by (source_file, source_row), so re-ingesting a file adds
nothing and a crash between the two table commits is finished by the next run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import Config, IngestConfig
from jobs.errors import UserError, first_line
from jobs.lake import Lake
from jobs.stages import Stage
from udfs.storage import is_remote, local_path

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
# String columns checked for valid UTF-8: parquet BYTE_ARRAY columns (binary, or strings
# written by a careless tool) can hold any bytes, and a Delta string column with broken
# UTF-8 fails every Arrow-based reader outside Spark. Such rows are rejected
# (`invalid_utf8:<col>`), not repaired: a caption with lost characters is not the
# caption, and the reject keeps the row (its record made valid with U+FFFD).
TEXT_COLUMNS = ("source_uid", "url", "text", "license", "nsfw", "language", "sha256")

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
    columns = [c for c in columns if not c.startswith("_source")]
    cols = {c.lower() for c in columns}
    if "uid" in cols and "url" in cols:
        return "datacomp"
    if "sample_id" in cols and "url" in cols:
        return "laion400m"
    if "url" in cols and "text" in cols:
        return "laion2b"
    raise UserError(
        "cannot tell the metadata family from columns "
        f"{sorted(columns)}; set ingest.family to one of {', '.join(FAMILIES)}"
    )


def skip_when_complete(spark: SparkSession, cfg: Config) -> str | None:
    """Every input file's rows are all in metadata or ingest rejects (the invariant)."""
    lake = Lake(spark, cfg)
    if not cfg.ingest.input or not lake.exists("metadata") or not lake.exists("rejects"):
        return None
    given = read_input(spark, cfg.ingest.input).groupBy(
        F.col("_source_file").alias("source_file")).count()
    kept = lake.read("metadata").groupBy("source_file").count()
    rejected = lake.read("rejects").where(F.col("stage") == STAGE).groupBy(
        "source_file").count()
    have = kept.unionByName(rejected).groupBy("source_file").agg(F.sum("count").alias("have"))
    missing = given.join(have, "source_file", "left").where(
        F.coalesce(F.col("have"), F.lit(0)) != F.col("count"))
    if missing.limit(1).count():
        return None
    return "every input row is already accounted for"


def read_input(spark: SparkSession, path: str) -> DataFrame:
    """Read a parquet file or a folder of them, tagging each row with its file and row.

    Only `*.parquet` files are read, so sidecar files (img2dataset's `_stats.json`,
    `_SUCCESS`, checksums) beside the metadata are ignored.
    """
    try:
        if is_remote(path):  # object stores have no symlinks: Spark lists them
            df = (spark.read.option("recursiveFileLookup", "true")
                  .option("pathGlobFilter", "*.parquet").parquet(path))
        else:
            df = spark.read.parquet(*parquet_files(path))
    except UserError:
        raise
    except Exception as exc:
        raise input_error(exc, path) from None
    check_columns(df.columns, path)
    return df.select(
        "*",
        F.col("_metadata.file_path").alias("_source_file"),
        F.col("_metadata.row_index").alias("_source_row"),
    )


def parquet_files(path: str) -> list[str]:
    """Every `*.parquet` file under a local path, each real file once, in a stable order.

    Symlinks are followed (a linked folder of shards is common) but each real file and
    folder is visited once, so a symlink loop or two links to one folder cannot read a
    file twice (which would turn every row into a duplicate_id reject).
    """
    root = local_path(path)
    if not os.path.exists(root):
        raise UserError(f"input path not found: {path}")
    if os.path.isfile(root):
        return [os.path.realpath(root)]
    files: dict[str, None] = {}
    seen_dirs: set[str] = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen_dirs:
            dirs[:] = []  # a loop, or a second link to a folder already read
            continue
        seen_dirs.add(real)
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(folder, name)
            if name.endswith(".parquet") and os.path.isfile(full):
                files.setdefault(os.path.realpath(full), None)
    if not files:
        raise UserError(f"no parquet files in {path}")
    return list(files)


def check_columns(columns: list[str], path: str) -> None:
    """Columns that differ only in case (`url` and `URL`) cannot both be read as one."""
    by_lower: dict[str, list[str]] = {}
    for name in columns:
        by_lower.setdefault(name.lower(), []).append(name)
    clashes = [names for names in by_lower.values() if len(names) > 1]
    if clashes:
        shown = "; ".join(", ".join(names) for names in clashes)
        raise UserError(f"input {path} has columns that differ only in case ({shown}): "
                        "deparrot matches columns case-insensitively; drop or rename one")


_BAD_FILE = re.compile(r"((?:[a-z][a-z0-9+.-]*:)?/[^\s'\"]*?\.parquet)", re.IGNORECASE)


def input_error(exc: Exception, path: str) -> Exception:
    """Turn Spark's reading errors into one line a person can act on (else re-raise)."""
    text = str(exc)
    if "PATH_NOT_FOUND" in text or "Path does not exist" in text:
        return UserError(f"input path not found: {path}")
    mismatch = ("PARQUET_COLUMN_DATA_TYPE_MISMATCH", "SchemaColumnConvertNotSupported",
                "cannot be converted", "CANNOT_MERGE_SCHEMAS")
    if any(m in text for m in mismatch):
        bad = _BAD_FILE.search(text)
        where = f"parquet file {bad.group(1)}" if bad else f"the files in {path}"
        return UserError(f"cannot read {where}: its column types differ from the other "
                         "input files' (e.g. WIDTH as text in one, a number in another); "
                         "convert it to the same schema, or ingest it on its own")
    if "COLUMN_ALREADY_EXISTS" in text or "AMBIGUOUS_REFERENCE" in text:
        return UserError(f"input {path} has columns that differ only in case: "
                         f"{first_line(exc)[:200]}; drop or rename one")
    if "UNABLE_TO_INFER_SCHEMA" in text:
        return UserError(f"no parquet files in {path}")
    bad = _BAD_FILE.search(text)
    if bad and any(k in text for k in ("FAILED_READ_FILE", "not a Parquet file", "corrupt",
                                        "CANNOT_READ_FILE_FOOTER", "EOFException")):
        return UserError(
            f"cannot read parquet file {bad.group(1)}: it is corrupt or truncated. Nothing "
            "was written; re-fetch the file or move it out of the input, then run again")
    return exc


def normalise(raw: DataFrame, family: str) -> DataFrame:
    """Map a family's columns onto METADATA_SCHEMA (the original row is not carried: only
    rejects keep it, joined back from the input by `original_records`)."""
    if family not in COLUMN_MAP:
        raise UserError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    by_lower = {c.lower(): c for c in raw.columns if not c.startswith("_source")}
    mapping = COLUMN_MAP[family]

    types = {f.name: f.dataType for f in raw.schema.fields}

    def src(name: str) -> Column | None:
        col = mapping.get(name)
        actual = by_lower.get(col.lower()) if col else None
        if actual and isinstance(types[actual], (T.ArrayType, T.MapType, T.StructType)):
            raise UserError(
                f"input column {actual} is {types[actual].simpleString()}; deparrot reads "
                f"it as {'a number' if name in NUMERIC else 'text'}: flatten or convert the "
                "column first (ingest.family tells which columns are read)")
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
            # try_cast: "12px" in WIDTH is this row's bad_number reject, not an ANSI cast
            # error that stops the job.
            out.append(col.try_cast("double").alias(name))
            out.append(col.cast("string").alias(f"_raw_{name}"))
        else:
            out.append(col.cast("string").alias(name))
    df = raw.select(
        *out,
        F.lit(family).alias("family"),
        F.col("_source_file").alias("source_file"),
        F.col("_source_row").cast("long").alias("source_row"),
    )
    return df.withColumn("sample_id", _sample_id(family))


def original_records(raw: DataFrame) -> DataFrame:
    """(source_file, source_row, _original): each input row's own columns as a struct,
    for the rejects' `record` (JSON is made only for the rows that are rejected)."""
    original = [c for c in raw.columns if not c.startswith("_source")]
    return raw.select(F.col("_source_file").alias("source_file"),
                      F.col("_source_row").cast("long").alias("source_row"),
                      F.struct(*[F.col(f"`{c}`") for c in original]).alias("_original"))


def _sample_id(family: str) -> Column:
    """LAION-400M keeps its SAMPLE_ID; the others get a stable 64-bit hash of their key."""
    if family == "laion400m":
        return F.col("source_uid").try_cast("long")
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
    for name in NUMERIC:  # given, but not a number ("12px"): before missing_number
        if f"_raw_{name}" in df.columns:
            rules.append((F.col(f"_raw_{name}").isNotNull() & F.col(name).isNull(),
                          f"bad_number:{name}"))
    for name in cfg.required_numbers:
        if name not in NUMERIC:
            raise UserError(f"ingest.required_numbers: {name!r} is not one of {NUMERIC}")
        rules.append((F.col(name).isNull(), f"missing_number:{name}"))
    for name in NUMERIC:
        rules.append((F.col(name).isNotNull() & ~_finite(F.col(name)), f"non_finite:{name}"))
    for name in ("width", "height"):
        rules.append((F.col(name) < 0, "negative_size"))
        too_big = (F.col(name) == 0) | (F.col(name) > cfg.max_side)
        rules.append((F.col(name).isNotNull() & too_big, "absurd_size"))
    for name in TEXT_COLUMNS:
        rules.append((~F.is_valid_utf8(F.col(name)), f"invalid_utf8:{name}"))
    rules.append((F.col("source_uid").isNotNull() & F.col("sample_id").isNull(), "bad_id"))
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
    checked = validate(normalise(raw, family), cfg)
    return classify(checked.drop(*[c for c in checked.columns if c.startswith("_raw_")]),
                    existing)


def run(spark: SparkSession, cfg: Config) -> IngestReport:
    if not cfg.ingest.input:
        raise UserError("ingest.input is empty: pass --input PATH or --set ingest.input=PATH")
    raw = read_input(spark, cfg.ingest.input)  # bad paths fail before any table exists
    family = cfg.ingest.family if cfg.ingest.family != "auto" else detect_family(raw.columns)
    normalise(raw, family)  # column types checked before any table exists
    lake = Lake(spark, cfg)
    lake.ensure("metadata", METADATA_SCHEMA)
    # Pin the version we compare against so both commits below see the same classification.
    existing = lake.read("metadata", version=lake.version("metadata"))
    classified = transform(raw, cfg.ingest, existing)
    classified = classified.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # Read everything before the first commit: a corrupt file stops the job here,
        # naming the file, instead of after some files' rows were written. (A partly
        # readable file must not be ingested in part: its missing rows would vanish.)
        try:
            classified.count()
        except Exception as exc:
            raise input_error(exc, cfg.ingest.input) from None
        keep = classified.where(F.col("_status") == "keep").select(
            *[F.col(f.name) for f in METADATA_SCHEMA.fields if f.name != "ingested_at"],
            F.current_timestamp().alias("ingested_at"),
        )
        lake.insert_new("metadata", keep, on=["sample_id"])
        rejected = classified.where(F.col("_status") == "reject").select(
            "reason", "sample_id", "source_file", "source_row")
        rejects = rejected.join(original_records(raw), ["source_file", "source_row"],
                                "left").select(
            F.lit(STAGE).alias("stage"),
            F.col("reason"),
            F.concat_ws("#", "source_file", F.col("source_row").cast("string")).alias(
                "reject_key"
            ),
            "sample_id",
            "source_file",
            "source_row",
            F.make_valid_utf8(F.to_json("_original")).alias("record"),
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


STAGES = (Stage("ingest", "LAION-style parquet metadata -> Delta metadata table", run,
                flags={"--input": "ingest.input", "--family": "ingest.family"},
                pipeline=True, skip=skip_when_complete),)
