"""Where deparrot's Delta tables live and how they are named, read and written.

Two layouts share one code path:
- path tables under `storage.root` (laptop, plain spark-submit clusters), registered in
  the session catalog as external tables so SQL can use their names;
- managed tables (`storage.root` empty), e.g. Unity Catalog `catalog.schema.table`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import Config

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

    def register(self, key: str) -> TableRef:
        """Make `SELECT ... FROM <name>` work for a path table in this session."""
        ref = self.ref(key)
        if ref.path is not None and ref.name not in self._registered:
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
        return int(self.delta(key).history(1).select("version").first()[0])

    def insert_new(self, key: str, df: DataFrame, on: list[str]) -> None:
        """Insert the rows of `df` whose key is not in the table yet: re-runs add nothing."""
        self._merge(key, df, on, update=False)

    def upsert(self, key: str, df: DataFrame, on: list[str]) -> None:
        """Insert new rows and overwrite rows whose key exists (a retried row's new result)."""
        self._merge(key, df, on, update=True)

    def _merge(self, key: str, df: DataFrame, on: list[str], update: bool) -> None:
        cond = " AND ".join(f"t.`{c}` = s.`{c}`" for c in on)
        merge = self.delta(key).alias("t").merge(df.alias("s"), cond)
        if update:
            merge = merge.whenMatchedUpdateAll()
        merge.whenNotMatchedInsertAll().execute()

    def replace_where(self, key: str, df: DataFrame, condition: str,
                      user_metadata: str | None = None) -> None:
        """Atomically replace the rows matching `condition` by `df` (one commit)."""
        ref = self.register(key)
        writer = df.write.format("delta").mode("overwrite").option("replaceWhere", condition)
        if user_metadata is not None:
            writer = writer.option("userMetadata", user_metadata)
        if ref.path is not None:
            writer.save(ref.path)
        else:
            writer.saveAsTable(ref.name)

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
        if not conformed.limit(1).count() and not current.limit(1).count():
            return  # nothing to replace: no empty commit (re-runs keep table versions)
        conformed.writeTo(ref.name).overwrite(F.col("stage") == F.lit(stage))
