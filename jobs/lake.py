"""Where deparrot's Delta tables live and how they are named, read and written.

Two layouts share one code path:
- path tables under `storage.root` (laptop, plain spark-submit clusters), registered in
  the session catalog as external tables so SQL can use their names;
- managed tables (`storage.root` empty), e.g. Unity Catalog `catalog.schema.table`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import Config
from jobs.errors import ConcurrentRunError, UserError, first_line, is_concurrent_write

R = TypeVar("R")

# Per-run scratch tables (jobs/work_queue.py): a folder under storage.root for path
# tables (the underscore keeps it apart from table names), a name prefix for managed ones.
SCRATCH = "_scratch"
SCRATCH_TABLE_PREFIX = "deparrot_scratch_"

class MissingTableError(UserError):
    """An upstream table that is not there (or holds no rows): one line, exit 2."""

REJECTS_SCHEMA = T.StructType(
    [
        T.StructField("stage", T.StringType(), False),
        T.StructField("reason", T.StringType(), False),
        # Unique within a stage: "<file>#<row>" at ingest, the sample id afterwards.
        T.StructField("reject_key", T.StringType(), False),
        T.StructField("sample_id", T.LongType(), True),
        T.StructField("source_file", T.StringType(), True),
        T.StructField("source_row", T.LongType(), True),
        T.StructField("detail", T.StringType(), True),
        # The original input values as JSON, so a reject can be inspected or replayed.
        T.StructField("record", T.StringType(), True),
        T.StructField("rejected_at", T.TimestampType(), True),
    ]
)


def reject_rows(df: DataFrame, stage: str, reason: str = "error", detail: Column | None = None,
                record: tuple[str, ...] = ()) -> DataFrame:
    """Rows of `df` (keyed by sample_id) in the rejects layout, ready for replace_rejects."""
    cols = [F.lit(stage).alias("stage"), F.col(reason).alias("reason"),
            F.col("sample_id").cast("string").alias("reject_key"), "sample_id"]
    if detail is not None:
        cols.append(detail.alias("detail"))
    if record:
        cols.append(F.to_json(F.struct(*record)).alias("record"))
    return df.select(*cols)


def tally(df: DataFrame, *columns: str) -> dict[Any, int]:
    """Row counts per value of `columns` (a tuple key when there are several)."""
    out: dict[Any, int] = {}
    for row in df.groupBy(*columns).count().collect():
        key = row[columns[0]] if len(columns) == 1 else tuple(row[c] for c in columns)
        out[key] = out.get(key, 0) + row["count"]
    return out


def with_commit_retries(action: Callable[[], R], attempts: int = 3) -> R:
    """Run a Delta commit again when another writer won the race, if `action` is idempotent.

    MERGEs that insert only missing keys, upserts of the same rows and replaceWhere of a
    partition give the same table however often they run, so a conflict is retried
    against the new snapshot. After `attempts`, one clear error says another run is
    writing the same tables.
    """
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:
            if not is_concurrent_write(exc):
                raise
            if attempt == attempts:
                raise ConcurrentRunError(
                    "another run keeps committing to the same tables "
                    f"({first_line(exc)[:120]}); run again when it has finished: every "
                    "stage resumes where the tables are") from None
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class TableRef:
    name: str  # catalog-qualified name usable in SQL
    path: str | None  # storage location for path tables, None for managed tables


class Lake:
    """The project's tables for one configuration, bound to one session."""

    def __init__(self, spark: SparkSession, cfg: Config):
        self.spark = spark
        self.cfg = cfg
        self._registered: set[str] = set()
        storage = cfg.storage
        self._prefix = ".".join(p for p in (storage.catalog, storage.schema) if p)
        root = storage.root
        if root and "://" not in root and not root.startswith("dbfs:"):
            root = os.path.abspath(root)
        self._root = root
        if self._prefix:
            spark.sql(f"CREATE SCHEMA IF NOT EXISTS {self._prefix}")

    def ref(self, key: str) -> TableRef:
        table = getattr(self.cfg.tables, key)
        name = f"{self._prefix}.{table}" if self._prefix else table
        path = f"{self._root.rstrip('/')}/{table}" if self._root else None
        return TableRef(name, path)

    def exists(self, key: str) -> bool:
        from delta.tables import DeltaTable

        ref = self.ref(key)
        if ref.path is not None:
            return DeltaTable.isDeltaTable(self.spark, ref.path)
        return self.spark.catalog.tableExists(ref.name)

    def location(self) -> str:
        return f"under {self._root}" if self._root else f"in {self._prefix or 'the catalog'}"

    def missing(self, key: str, empty: bool = False) -> MissingTableError:
        table = self.ref(key).name.rsplit(".", 1)[-1]
        state = "is empty" if empty else "does not exist"
        return MissingTableError(f"table {table} {state} {self.location()}: run "
                                 f"`deparrot {_producer(key)}` first")

    def require(self, key: str, nonempty: bool = False) -> TableRef:
        """The table an upstream stage writes, or one line naming the command to run."""
        ref = self.register(key)
        if nonempty and not self.read(key).limit(1).count():
            raise self.missing(key, empty=True)
        return ref

    def register(self, key: str) -> TableRef:
        """Make `SELECT ... FROM <name>` work for a path table in this session.

        A table that does not exist is a MissingTableError (one line naming the stage that
        writes it), not the JVM's AnalysisException.
        """
        ref = self.ref(key)
        if ref.name in self._registered:
            return ref
        if not self.exists(key):
            raise self.missing(key)
        if ref.path is not None:
            self.spark.sql(
                f"CREATE TABLE IF NOT EXISTS {ref.name} USING DELTA LOCATION '{ref.path}'"
            )
        self._registered.add(ref.name)
        return ref

    def ensure(
        self,
        key: str,
        schema: T.StructType,
        partition_by: tuple[str, ...] = (),
        properties: dict[str, str] | None = None,
    ) -> TableRef:
        """Create the table (empty, with its schema) if it does not exist yet."""
        from delta.tables import DeltaTable

        ref = self.ref(key)
        if not self.exists(key):
            builder = DeltaTable.createIfNotExists(self.spark).tableName(ref.name)
            if ref.path is not None:
                builder = builder.location(ref.path)
            builder = builder.addColumns(schema)
            if partition_by:
                builder = builder.partitionedBy(*partition_by)
            for prop, value in (properties or {}).items():
                builder = builder.property(prop, value)
            builder.execute()
            self._registered.add(ref.name)
        return self.register(key)

    def add_missing_columns(self, key: str, schema: T.StructType) -> None:
        """A table written before a column existed gets it (null), so MERGEs by name work."""
        have = set(self.read(key).columns)
        missing = [f for f in schema.fields if f.name not in have]
        if missing:
            cols = ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in missing)
            self.spark.sql(f"ALTER TABLE {self.ref(key).name} ADD COLUMNS ({cols})")

    def read(self, key: str, version: int | None = None) -> DataFrame:
        ref = self.register(key)
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        if ref.path is not None:
            return reader.load(ref.path)
        return reader.table(ref.name)

    def delta(self, key: str):
        from delta.tables import DeltaTable

        ref = self.register(key)
        if ref.path is not None:
            return DeltaTable.forPath(self.spark, ref.path)
        return DeltaTable.forName(self.spark, ref.name)

    def version(self, key: str) -> int:
        """The table's latest version, as of now in storage.

        Stages ask this often (pinned reads, input signatures). DESCRIBE HISTORY is a Spark
        job (~0.3 s); on classic Spark the session's own Delta log answers in milliseconds
        (refreshed from storage, so commits of other processes count). Spark Connect, or
        a Delta whose internals moved, takes the history path.
        """
        try:
            version = _log_version(self.spark, self.register(key))
        except Exception:  # no JVM (Spark Connect) or another Delta: the public API
            version = -1
        if version >= 0:  # -1: no table there; the history path says so as it always did
            return version
        return int(self.delta(key).history(1).select("version").first()[0])

    def insert_new(self, key: str, df: DataFrame, on: list[str],
                   target_filter: str | None = None) -> None:
        """Insert the rows of `df` whose key is not in the table yet: re-runs add nothing.

        An insert-only MERGE: Delta anti-joins the source with the target and appends,
        rewriting no file. A concurrent commit of the same keys is still a conflict that
        `with_commit_retries` retries (its rows are then in the table and are skipped).
        """
        self._merge(key, df, on, update=False, target_filter=target_filter)

    def upsert(self, key: str, df: DataFrame, on: list[str],
               target_filter: str | None = None) -> None:
        """Insert new rows and overwrite rows whose key exists (a retried row's new result).

        `target_filter` (on alias `t`) must hold for every target row `df` can match: Delta
        then reads only the files whose statistics allow it (work_queue.Chunks).
        """
        self._merge(key, df, on, update=True, target_filter=target_filter)

    def _merge(self, key: str, df: DataFrame, on: list[str], update: bool,
               target_filter: str | None = None) -> None:
        cond = " AND ".join(f"t.`{c}` = s.`{c}`" for c in on)
        if target_filter:
            cond = f"{cond} AND ({target_filter})"

        def commit() -> None:
            merge = self.delta(key).alias("t").merge(df.alias("s"), cond)
            if update:
                merge = merge.whenMatchedUpdateAll()
            merge.whenNotMatchedInsertAll().execute()

        with_commit_retries(commit)

    def replace_where(self, key: str, df: DataFrame, condition: str,
                      user_metadata: str | None = None) -> None:
        """Atomically replace the rows matching `condition` by `df` (one commit)."""
        ref = self.register(key)
        writer = df.write.format("delta").mode("overwrite").option("replaceWhere", condition)
        if user_metadata is not None:
            writer = writer.option("userMetadata", user_metadata)
        if ref.path is not None:
            with_commit_retries(lambda: writer.save(ref.path))
        else:
            with_commit_retries(lambda: writer.saveAsTable(ref.name))

    def versions(self, tables: tuple[str, ...]) -> dict[str, int]:
        return {k: self.version(k) for k in tables}

    def signature(self, tables: tuple[str, ...], versions: dict[str, int] | None = None,
                  **settings: Any) -> str:
        """A digest of the tables' versions and the settings: what an output depends on.

        A stage stores it with its output and skips (or resumes) when it is unchanged.
        """
        payload = {"versions": versions or self.versions(tables),
                   **{k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                      for k, v in settings.items()}}
        return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()
                            ).hexdigest()

    def overwrite(self, key: str, df: DataFrame, partition_by: tuple[str, ...] = ()) -> None:
        """Create or replace the whole table by `df` in one commit (derived tables that are
        recomputed, never appended, so a re-run gives the same table)."""
        ref = self.ref(key)
        writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        if ref.path is not None:
            with_commit_retries(lambda: writer.save(ref.path))
        else:
            with_commit_retries(lambda: writer.saveAsTable(ref.name))
        self.register(key)

    def properties(self, key: str) -> dict[str, str]:
        ref = self.register(key)
        rows = self.spark.sql(f"SHOW TBLPROPERTIES {ref.name}").collect()
        return {r["key"]: r["value"] for r in rows}

    def set_properties(self, key: str, properties: dict[str, str]) -> None:
        """Set table properties; no commit when they already hold these values."""
        current = self.properties(key)
        # Quotes would end the SQL literal; values are stored (and compared) without them.
        properties = {k: v.replace("'", "") for k, v in properties.items()}
        if all(current.get(k) == v for k, v in properties.items()):
            return
        ref = self.register(key)
        pairs = ", ".join(f"'{k}' = '{v}'" for k, v in properties.items())
        self.spark.sql(f"ALTER TABLE {ref.name} SET TBLPROPERTIES ({pairs})")

    # ------------------------------------------------------------------ scratch tables

    def scratch(self, name: str) -> TableRef:
        """A per-run scratch table (jobs/work_queue.py): `<root>/_scratch/<name>` for path
        tables, `<schema>.deparrot_scratch_<name>` for managed ones."""
        safe = re.sub(r"[^A-Za-z0-9_]", "_", name)
        if self._root:
            return TableRef(f"delta.`{self._root.rstrip('/')}/{SCRATCH}/{safe}`",
                            f"{self._root.rstrip('/')}/{SCRATCH}/{safe}")
        table = f"{SCRATCH_TABLE_PREFIX}{safe}"
        return TableRef(f"{self._prefix}.{table}" if self._prefix else table, None)

    def _hadoop_fs(self, path: str):
        """Hadoop's FileSystem for `path`: scratch tables live where the tables do, so
        they are listed and deleted the way Spark reaches them (s3a://, abfss://, ...)."""
        jvm = self.spark.sparkContext._jvm
        hpath = jvm.org.apache.hadoop.fs.Path(path)
        conf = self.spark.sparkContext._jsc.hadoopConfiguration()
        return hpath.getFileSystem(conf), hpath

    def drop_scratch(self, ref: TableRef) -> None:
        if ref.path is not None:
            fs, hpath = self._hadoop_fs(ref.path)
            fs.delete(hpath, True)
        else:
            self.spark.sql(f"DROP TABLE IF EXISTS {ref.name}")

    def drop_stale_scratch(self, age_s: float) -> None:
        """Scratch tables a crashed run left behind, older than `age_s` (by their name)."""
        now = time.time()
        if self._root:
            folder = f"{self._root.rstrip('/')}/{SCRATCH}"
            fs, hpath = self._hadoop_fs(folder)
            names = [st.getPath().getName() for st in fs.listStatus(hpath)] \
                if fs.exists(hpath) else []
            refs = {n: TableRef(n, f"{folder}/{n}") for n in names}
        else:
            where = f" IN {self._prefix}" if self._prefix else ""
            rows = self.spark.sql(f"SHOW TABLES{where} LIKE '{SCRATCH_TABLE_PREFIX}*'")
            refs = {r["tableName"][len(SCRATCH_TABLE_PREFIX):]: TableRef(
                f"{self._prefix}.{r['tableName']}" if self._prefix else r["tableName"], None)
                for r in rows.collect()}
        for name, ref in refs.items():
            stamp = re.search(r"(\d{8}T\d{6})", name)
            if stamp is None:
                continue
            made = time.mktime(time.strptime(stamp.group(1), "%Y%m%dT%H%M%S"))
            if now - made > age_s:
                self.drop_scratch(ref)

    def _conform_rejects(self, df: DataFrame) -> DataFrame:
        self.ensure("rejects", REJECTS_SCHEMA, partition_by=("stage",))
        cols = []
        for fld in REJECTS_SCHEMA.fields:
            if fld.name in df.columns:
                cols.append(F.col(fld.name).cast(fld.dataType).alias(fld.name))
            elif fld.name == "rejected_at":
                cols.append(F.current_timestamp().alias(fld.name))
            else:
                cols.append(F.lit(None).cast(fld.dataType).alias(fld.name))
        return df.select(*cols)

    def add_rejects(self, df: DataFrame) -> None:
        """Append rejects (any subset of REJECTS_SCHEMA columns), once per (stage, key)."""
        self.insert_new("rejects", self._conform_rejects(df), on=["stage", "reject_key"])

    def replace_rejects(self, stage: str, df: DataFrame) -> None:
        """Replace all rejects of `stage` by `df` in one commit (for stages that retry)."""
        conformed = self._conform_rejects(df)
        ref = self.ref("rejects")
        current = self.read("rejects").where(F.col("stage") == F.lit(stage))
        if _same_rows(conformed, current):
            return  # the same rejects (or none): no commit, so re-runs keep table versions
        with_commit_retries(
            lambda: conformed.writeTo(ref.name).overwrite(F.col("stage") == F.lit(stage)))


def _log_version(spark: SparkSession, ref: TableRef) -> int:
    """`DeltaLog.update().version` through py4j, with Delta's own default arguments."""
    jvm = spark._jvm
    if ref.path is not None:
        log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, ref.path)
    else:
        from delta.tables import DeltaTable

        log = DeltaTable.forName(spark, ref.name)._jdt.deltaLog()
    defaults = [getattr(log, f"update$default${i}")() for i in (1, 2, 3)]
    return int(log.update(*defaults).version())


def _same_rows(new: DataFrame, old: DataFrame) -> bool:
    """Whether two sets of rejects hold the same rows, `rejected_at` aside, whatever their
    order: equal row counts and XORs of row hashes, in one Spark action."""
    cols = [F.col(f.name).cast("string") for f in REJECTS_SCHEMA.fields
            if f.name != "rejected_at"]

    def digest(df: DataFrame, side: str) -> DataFrame:
        return df.agg(F.count(F.lit(1)).alias("n"), F.bit_xor(F.xxhash64(*cols)).alias("x")
                      ).withColumn("side", F.lit(side))

    rows = {r["side"]: (r["n"], r["x"] or 0)
            for r in digest(new, "new").unionByName(digest(old, "old")).collect()}
    return rows["new"] == rows["old"]


def _producer(table: str) -> str:
    """The command that writes `table` (the stages declare it), else `run`."""
    from jobs.stages import producer_of  # the stage modules import this one

    return producer_of(table) or "run"
