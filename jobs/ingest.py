"""`deparrot ingest`: LAION-style metadata (parquet, csv, tsv, json, jsonl, txt) -> the
Delta metadata table.

Three families (LAION-400M, LAION-2B/5B, DataComp pools) are normalised to one schema
(METADATA_SCHEMA) with a stable `sample_id`; a file with only a URL and a caption (any
format, img2dataset's `url_col`/`caption_col`) is read as LAION-2B. Every input row is
kept or rejected with a reason; a row is identified by (source_file, source_row), so
re-ingesting a file adds nothing and a crash between the two table commits is finished
by the next run. Parquet rows are numbered by Spark (`_metadata.row_index`); text files
are parsed on the driver (jobs/ingest_text.py says why).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import INPUT_FORMATS, Config, IngestConfig
from jobs.errors import UserError, first_line
from jobs.ingest_text import stage_files
from jobs.lake import Lake
from jobs.stages import Stage
from udfs import storage
from udfs.storage import is_remote, local_path

STAGE = "ingest"
FAMILIES = ("laion400m", "laion2b", "datacomp")
SCRATCH = "_scratch"  # under storage.files: text inputs parsed into parquet, per run
STALE_AFTER_S = 24 * 3600  # a crashed run's scratch folder older than this is removed

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


def detect_family(columns: list[str], url_col: str = "", caption_col: str = "") -> str:
    """Tell the metadata family from its columns (case-insensitive).

    `url_col` / `caption_col` (ingest settings) name the url and caption columns when
    they are not the family's own. A file with a URL and no id column (img2dataset's
    URL + caption shape, a txt list of URLs) is read as LAION-2B: its id is
    xxhash64(url, caption).
    """
    columns = [c for c in columns if not c.startswith("_source")]
    cols = {c.lower() for c in columns}
    if url_col and url_col.lower() in cols:
        cols.add("url")
    if caption_col and caption_col.lower() in cols:
        cols.add("text")
    if "uid" in cols and "url" in cols:
        return "datacomp"
    if "sample_id" in cols and "url" in cols:
        return "laion400m"
    if "url" in cols:
        return "laion2b"
    raise UserError(
        "cannot tell the metadata family from columns "
        f"{sorted(columns)}; set ingest.family to one of {', '.join(FAMILIES)}, or "
        "ingest.url_col (and ingest.caption_col) to the columns holding them"
    )


def resolve_family(columns: list[str], cfg: IngestConfig) -> str:
    """The family to read: checks the url_col / caption_col overrides name columns."""
    have = {c.lower() for c in columns if not c.startswith("_source")}
    for key in ("url_col", "caption_col"):
        name = getattr(cfg, key)
        if name and name.lower() not in have:
            shown = sorted(c for c in columns if not c.startswith("_source"))
            raise UserError(f"ingest.{key}={name!r}: the input has no such column "
                            f"(its columns: {shown})")
    if cfg.family != "auto":
        return cfg.family
    return detect_family(columns, cfg.url_col, cfg.caption_col)


def skip_when_complete(spark: SparkSession, cfg: Config) -> str | None:
    """Every input file's rows are all in metadata or ingest rejects (the invariant)."""
    lake = Lake(spark, cfg)
    if not cfg.ingest.input or not lake.exists("metadata") or not lake.exists("rejects"):
        return None
    with opened_input(spark, cfg) as source:
        given = source.df.groupBy(F.col("_source_file").alias("source_file")).count()
        kept = lake.read("metadata").groupBy("source_file").count()
        rejected = lake.read("rejects").where(F.col("stage") == STAGE).groupBy(
            "source_file").count()
        have = kept.unionByName(rejected).groupBy("source_file").agg(
            F.sum("count").alias("have"))
        missing = given.join(have, "source_file", "left").where(
            F.coalesce(F.col("have"), F.lit(0)) != F.col("count"))
        if missing.limit(1).count():
            return None
    return "every input row is already accounted for"


@dataclass
class Input:
    """The input rows: the files' own columns plus `_source_file`, `_source_row` (and for
    text formats `_source_error`, `_source_text`, see jobs/ingest_text.py)."""

    df: DataFrame
    format: str
    # source_file -> its lower-case column names, where files differ (else empty: every
    # file has every column of `df`). Filled on first use by `_file_columns`.
    file_columns: dict[str, frozenset[str]] | None = None
    _file_columns: Callable[[], dict[str, frozenset[str]]] | None = None

    def files_without(self, column: str) -> list[str]:
        """The source_file of every file that has no column `column` (any case)."""
        if self.file_columns is None:
            self.file_columns = self._file_columns() if self._file_columns else {}
        name = column.lower()
        return sorted(f for f, cols in self.file_columns.items() if name not in cols)


def input_format(path: str, setting: str = "auto") -> str:
    """`setting`, or for `auto` the format its name says; a local folder's: parquet when it
    holds parquet files (whatever sidecars lie beside them), else its one text format."""
    if setting != "auto":
        return setting
    named = format_of(path)
    if named:
        return named
    if is_remote(path):
        return "parquet"  # Spark lists it; set ingest.input_format for text files there
    root = local_path(path)
    if not os.path.exists(root):
        raise UserError(f"input path not found: {path}")
    if os.path.isfile(root):
        raise UserError(f"cannot tell the format of {path} from its name: set "
                        f"ingest.input_format to one of {', '.join(INPUT_FORMATS[1:])}")
    present = {format_of(f) for f in _walk(root)} - {None}
    if "parquet" in present or not present:
        return "parquet"
    if len(present) == 1:
        return present.pop()  # type: ignore[return-value]
    raise UserError(f"{path} holds {', '.join(sorted(present))} files: set "  # type: ignore
                    "ingest.input_format to the format to read")


def format_of(path: str) -> str | None:
    """The input format a file name says (`.tsv.gz` -> tsv.gz), None for other files and
    for sidecars: hidden names (`_SUCCESS`, `.crc`) and img2dataset's `*_stats.json`."""
    name = os.path.basename(str(path).rstrip("/")).lower()
    if name.startswith((".", "_")) or name.endswith("_stats.json"):
        return None
    for fmt in sorted(INPUT_FORMATS[1:], key=len, reverse=True):
        if name.endswith("." + fmt):
            return fmt
    return None


@contextmanager
def opened_input(spark: SparkSession, cfg: Config) -> Iterator[Input]:
    """The input of `cfg.ingest`, readable (many times) until the block ends.

    Parquet is read by Spark in place. Text formats are parsed once, here, into a per-run
    scratch folder under storage.files that is removed when the block ends; every error
    of a file is raised here, before the stage writes anything.
    """
    path, fmt = cfg.ingest.input, input_format(cfg.ingest.input, cfg.ingest.input_format)
    if fmt == "parquet":
        yield read_input(spark, path)
        return
    files = input_files(path, fmt)
    _remove_stale_scratch(cfg)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    folder = cfg.shared(f"{SCRATCH}/ingest-{stamp}-{uuid.uuid4().hex[:8]}")
    try:
        staged = stage_files(files, fmt, folder, lambda p: spark_path(spark, p),
                             cfg.ingest.url_col)
        check_columns(staged.columns, path)
        df = spark.read.option("mergeSchema", "true").parquet(folder)
        have = set(df.columns)
        # The bytes become strings as they are (no decoding): validate rejects the rows
        # whose text is not UTF-8, as it does for a parquet binary column.
        df = df.select(
            *[(_col(c) if c in have else F.lit(None)).cast("string").alias(c)
              for c in staged.columns],
            "_source_file", "_source_row", "_source_error", "_source_text")
        yield Input(df, fmt, staged.file_columns)
    finally:
        storage.remove(folder)


def _remove_stale_scratch(cfg: Config) -> None:
    """Scratch folders a crashed run left behind (older than STALE_AFTER_S)."""
    folder = cfg.shared(SCRATCH)
    now = time.time()
    for name in storage.listdir(folder):
        stamp = re.match(r"ingest-(\d{8}T\d{6})-", name)
        if stamp and now - time.mktime(time.strptime(stamp.group(1), "%Y%m%dT%H%M%S")) \
                > STALE_AFTER_S:
            storage.remove(storage.join(folder, name))


def spark_path(spark: SparkSession, path: str) -> str:
    """`path` as Spark names a file it reads (`_metadata.file_path`: `file:/a%20b.csv`),
    so text and parquet inputs record `source_file` alike."""
    target = path if is_remote(path) else "file:" + os.path.realpath(local_path(path))
    return spark.sparkContext._jvm.org.apache.hadoop.fs.Path(target).toUri().toString()


def read_input(spark: SparkSession, path: str) -> Input:
    """Read a parquet file or a folder of them, tagging each row with its file and row.

    Only `*.parquet` files are read, so sidecar files (img2dataset's `_stats.json`,
    `_SUCCESS`, checksums) beside the metadata are ignored. Local files whose column sets
    differ (one with WIDTH, one without) are read with Spark's mergeSchema, which
    otherwise takes the columns of one file for all; `Input.files_without` then tells the
    files that lack a column.
    """
    schemas: dict[str, dict[str, str] | None] = {}
    try:
        if is_remote(path):  # object stores have no symlinks: Spark lists them
            df = (spark.read.option("recursiveFileLookup", "true")
                  .option("pathGlobFilter", "*.parquet").parquet(path))
        else:
            files = parquet_files(path)
            schemas = _footer_schemas(files)
            merge = len({frozenset(c) for c in schemas.values() if c is not None}) > 1
            df = spark.read.option("mergeSchema", str(merge).lower()).parquet(*files)
    except UserError:
        raise
    except Exception as exc:
        raise input_error(exc, path, _odd_file(schemas)) from None
    columns = {f: (frozenset(c) if c is not None else None) for f, c in schemas.items()}
    check_columns(df.columns, path)
    df = df.select(
        "*",
        F.col("_metadata.file_path").alias("_source_file"),
        F.col("_metadata.row_index").alias("_source_row"),
    )
    differ = len({c for c in columns.values() if c is not None}) > 1

    def file_columns() -> dict[str, frozenset[str]]:
        """Spark's name of each file -> its columns (one pass over the file names)."""
        names = [r[0] for r in df.select("_source_file").distinct().collect()]
        by_spark = {}
        for name in names:
            local = os.path.realpath(unquote(urlparse(name).path))
            if columns.get(local) is not None:
                by_spark[name] = columns[local]
        return by_spark

    return Input(df, "parquet", None if differ else {}, file_columns if differ else None)


def _footer_schemas(files: list[str]) -> dict[str, dict[str, str] | None]:
    """Each parquet file's columns (lower-case name -> Arrow type) from its footer
    (None: unreadable, which Spark then reports)."""
    import pyarrow.parquet as pq

    def schema(path: str) -> dict[str, str] | None:
        try:
            return {f.name.lower(): str(f.type) for f in pq.read_schema(path)}
        except Exception:  # noqa: BLE001 - a corrupt file is Spark's error to report
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(files, pool.map(schema, files), strict=True))


def _odd_file(schemas: dict[str, dict[str, str] | None]) -> str | None:
    """The first file whose type for a column differs from an earlier file's."""
    first: dict[str, str] = {}
    for path, columns in schemas.items():
        for name, kind in (columns or {}).items():
            if first.setdefault(name, kind) != kind:
                return path
    return None


def parquet_files(path: str) -> list[str]:
    """Every `*.parquet` file under a local path (see `input_files`)."""
    return input_files(path, "parquet")


def input_files(path: str, fmt: str) -> list[str]:
    """Every file of format `fmt` under `path`, each real file once, in a stable order.

    A file given by name is read whatever its name. In a folder (any depth), a file is
    read when its name ends in `.<fmt>` and is not a sidecar (see `format_of`; parquet
    keeps reading every `*.parquet`). Symlinks are followed (a linked folder of shards is
    common) but each real file and folder is visited once, so a symlink loop or two links
    to one folder cannot read a file twice (which would turn every row into a
    duplicate_id reject).
    """
    if is_remote(path):
        fs, inner = storage.filesystem(path)
        if fs.isfile(inner):
            return [path]
        scheme = path.split("://", 1)[0]
        found = sorted(p for p in fs.find(inner) if format_of(p) == fmt)
        if not found:
            raise UserError(f"no {fmt} files in {path}")
        return [f"{scheme}://{p}" for p in found]
    root = local_path(path)
    if not os.path.exists(root):
        raise UserError(f"input path not found: {path}")
    if os.path.isfile(root):
        return [os.path.realpath(root)]
    files = [f for f in _walk(root) if (f.endswith(".parquet") if fmt == "parquet"
                                        else format_of(f) == fmt)]
    if not files:
        hint = " (ingest.input_format reads csv, tsv, json, jsonl or txt instead)"
        raise UserError(f"no {fmt} files in {path}{hint if fmt == 'parquet' else ''}")
    return files


def _walk(root: str) -> list[str]:
    """Every regular file under a local folder, by real path, each once, sorted."""
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
            if os.path.isfile(full):
                files.setdefault(os.path.realpath(full), None)
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


def _col(name: str) -> Column:
    """A column by its exact name, whatever characters it holds."""
    return F.col("`" + name.replace("`", "``") + "`")


_BAD_FILE = re.compile(r"((?:[a-z][a-z0-9+.-]*:)?/[^\s'\"]*?\.parquet)", re.IGNORECASE)


def input_error(exc: Exception, path: str, odd_file: str | None = None) -> Exception:
    """Turn Spark's reading errors into one line a person can act on (else re-raise).

    `odd_file`: the file whose column types differ, where the caller knows it (Spark's
    schema merge names no file)."""
    text = str(exc)
    if "PATH_NOT_FOUND" in text or "Path does not exist" in text:
        return UserError(f"input path not found: {path}")
    mismatch = ("PARQUET_COLUMN_DATA_TYPE_MISMATCH", "SchemaColumnConvertNotSupported",
                "cannot be converted", "CANNOT_MERGE_SCHEMAS")
    if any(m in text for m in mismatch):
        bad = _BAD_FILE.search(text)
        named = bad.group(1) if bad else odd_file
        where = f"parquet file {named}" if named else f"the files in {path}"
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


def normalise(raw: DataFrame, family: str, cfg: IngestConfig | None = None,
              files_without: Callable[[str], list[str]] | None = None) -> DataFrame:
    """Map a family's columns onto METADATA_SCHEMA (the original row is not carried: only
    rejects keep it, joined back from the input by `original_records`).

    `cfg.url_col` / `cfg.caption_col` replace the family's url / text columns. For each
    of `cfg.required_numbers`, `_has_<name>` says whether the row's file has the column
    (`files_without(column)` names the files that do not), so validate rejects an empty
    WIDTH only where the file has a WIDTH column.
    """
    if family not in COLUMN_MAP:
        raise UserError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    by_lower = {c.lower(): c for c in raw.columns if not c.startswith("_source")}
    mapping = dict(COLUMN_MAP[family])
    if cfg is not None and cfg.url_col:
        mapping["url"] = cfg.url_col
    if cfg is not None and cfg.caption_col:
        mapping["text"] = cfg.caption_col
    required = set(cfg.required_numbers) if cfg is not None else set()

    types = {f.name: f.dataType for f in raw.schema.fields}

    def actual(name: str) -> str | None:
        col = mapping.get(name)
        return by_lower.get(col.lower()) if col else None

    def src(name: str) -> Column | None:
        found = actual(name)
        if found and isinstance(types[found], (T.ArrayType, T.MapType, T.StructType)):
            raise UserError(
                f"input column {found} is {types[found].simpleString()}; deparrot reads "
                f"it as {'a number' if name in NUMERIC else 'text'}: flatten or convert the "
                "column first (ingest.family tells which columns are read)")
        return _col(found) if found else None

    def present(name: str) -> Column:
        found = actual(name)
        if found is None:
            return F.lit(False)  # no file has the column
        lacking = files_without(found) if files_without is not None else []
        return ~F.col("_source_file").isin(lacking) if lacking else F.lit(True)

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
        if name in required:
            out.append(present(name).alias(f"_has_{name}"))
    if "_source_error" in raw.columns:  # a text record the parser could not use
        out.append(F.col("_source_error").alias("_read_error"))
    df = raw.select(
        *out,
        F.lit(family).alias("family"),
        F.col("_source_file").alias("source_file"),
        F.col("_source_row").cast("long").alias("source_row"),
    )
    return df.withColumn("sample_id", _sample_id(family))


def original_records(raw: DataFrame) -> DataFrame:
    """(source_file, source_row, _record): each input row's own columns as JSON, for the
    rejects' `record` (the plan makes it only for the rows that are rejected); a text
    record the parser could not split into columns is its raw text."""
    original = [c for c in raw.columns if not c.startswith("_source")]
    record = F.to_json(F.struct(*[_col(c).alias(c) for c in original]))
    if "_source_text" in raw.columns:
        record = F.coalesce(F.col("_source_text").cast("string"), record)
    return raw.select(F.col("_source_file").alias("source_file"),
                      F.col("_source_row").cast("long").alias("source_row"),
                      record.alias("_record"))


def _sample_id(family: str) -> Column:
    """LAION-400M keeps its SAMPLE_ID; the others get a stable 64-bit hash of their key.

    LAION-2B's key is (url, text); a row without a caption (a txt list, kept with
    ingest.require_text off) hashes its url alone (xxhash64 skips nulls).
    """
    if family == "laion400m":
        return F.col("source_uid").try_cast("long")
    if family == "datacomp":
        return F.when(F.col("source_uid").isNotNull(), F.xxhash64("source_uid"))
    return F.when(F.col("url").isNotNull(), F.xxhash64("url", "text"))


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
        # Only where the row's file has the column: a URL + caption file has no WIDTH.
        has = F.col(f"_has_{name}") if f"_has_{name}" in df.columns else F.lit(True)
        rules.append((has & F.col(name).isNull(), f"missing_number:{name}"))
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
    if "_read_error" in df.columns:  # a malformed text record: its columns mean nothing
        reason = F.coalesce(F.col("_read_error"), reason)
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


def transform(raw: DataFrame, cfg: IngestConfig, existing: DataFrame | None,
              files_without: Callable[[str], list[str]] | None = None) -> DataFrame:
    family = resolve_family(raw.columns, cfg)
    checked = validate(normalise(raw, family, cfg, files_without), cfg)
    scratch = [c for c in checked.columns if c.startswith(("_raw_", "_has_", "_read_"))]
    return classify(checked.drop(*scratch), existing)


def run(spark: SparkSession, cfg: Config) -> IngestReport:
    if not cfg.ingest.input:
        raise UserError("ingest.input is empty: pass --input PATH or --set ingest.input=PATH")
    # Bad paths and unreadable text files fail here, before any table exists.
    with opened_input(spark, cfg) as source:
        return _ingest(spark, cfg, source)


def _ingest(spark: SparkSession, cfg: Config, source: Input) -> IngestReport:
    raw = source.df
    normalise(raw, resolve_family(raw.columns, cfg.ingest), cfg.ingest)  # types checked
    lake = Lake(spark, cfg)
    lake.ensure("metadata", METADATA_SCHEMA)
    # Pin the version we compare against so both commits below see the same classification.
    existing = lake.read("metadata", version=lake.version("metadata"))
    classified = transform(raw, cfg.ingest, existing, source.files_without)
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
            F.make_valid_utf8("_record").alias("record"),
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


STAGES = (Stage("ingest", "LAION-style parquet/csv/tsv/json/txt metadata -> Delta metadata "
                "table", run,
                flags={"--input": "ingest.input", "--format": "ingest.input_format",
                       "--family": "ingest.family"},
                pipeline=True, skip=skip_when_complete, writes=("metadata", "rejects")),)
