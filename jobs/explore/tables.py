"""The workbench's view of the lake: Arrow tables, read without a JVM.

Why not Spark: a curator opens the workbench beside a finished run, on a laptop or
against a lake on object storage, and a SparkSession costs 20 s and a GB before the
first page. `deltalake` (delta-rs) reads the same Delta log Spark wrote, deletion
vectors and all, straight into Arrow; duckdb then queries those Arrow tables in-process.

Two sources share one interface, so the web app and the notebooks run the same code:
- `DeltaSource`: path tables under `storage.root` (local folder, s3://, abfss://, gs://);
- `ArrowSource`: tables handed over in memory.
A third, `spark_source.SparkSource`, reads through Spark: how a Databricks notebook hands
managed Unity Catalog tables to the same workbench (see ARCHITECTURE.md).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from jobs.config import Config
from jobs.errors import UserError


class ExploreError(UserError):
    """Something the curator can fix: a missing table, a managed lake, a bad parameter."""


class TableSource(Protocol):
    def read(self, key: str, columns: Sequence[str] | None = None) -> pa.Table | None:
        """The table's current rows (only `columns` where given), or None if it does
        not exist. Missing columns of an older table come back as nulls."""

    def lookup(self, key: str, sample_id: int, columns: Sequence[str]) -> dict | None:
        """One row of table `key` by sample id, or None."""

    def image(self, sample_id: int, column: str = "image") -> bytes | None:
        """The stored bytes of one image, by sample id only."""

    def properties(self, key: str) -> dict[str, str]:
        """The table's properties (the scores table records which CLIP scored it)."""

    def version(self, key: str) -> int:
        """The table's Delta version, -1 when missing."""


def select_columns(table: pa.Table, columns: Sequence[str] | None) -> pa.Table:
    """`columns` of `table` in that order; one an older table lacks comes back as nulls
    (every source answers with the columns asked for)."""
    if columns is None:
        return table
    out = {}
    for name in columns:
        out[name] = (table.column(name) if name in table.column_names
                     else pa.nulls(table.num_rows))
    return pa.table(out)


class ArrowSource:
    """Tables already in memory, keyed like `cfg.tables` (metadata, images, scores, ...)."""

    def __init__(self, tables: Mapping[str, pa.Table],
                 properties: Mapping[str, Mapping[str, str]] | None = None):
        self._tables = dict(tables)
        self._properties = {k: dict(v) for k, v in (properties or {}).items()}

    def read(self, key: str, columns: Sequence[str] | None = None) -> pa.Table | None:
        table = self._tables.get(key)
        return None if table is None else select_columns(table, columns)

    def lookup(self, key: str, sample_id: int, columns: Sequence[str]) -> dict | None:
        table = self._tables.get(key)
        if table is None:
            return None
        hits = table.filter(pc.equal(table["sample_id"], pa.scalar(sample_id, pa.int64())))
        return select_columns(hits, columns).to_pylist()[0] if hits.num_rows else None

    def image(self, sample_id: int, column: str = "image") -> bytes | None:
        return (self.lookup("images", sample_id, (column,)) or {}).get(column)

    def properties(self, key: str) -> dict[str, str]:
        return dict(self._properties.get(key, {}))

    def version(self, key: str) -> int:
        return 0 if key in self._tables else -1


def storage_options() -> dict[str, str]:
    """Object-store credentials for delta-rs from the usual environment variables (AWS_*,
    AZURE_*, GOOGLE_*): delta-rs reads most of them itself; this only passes them on."""
    prefixes = ("AWS_", "AZURE_", "GOOGLE_")
    return {k: v for k, v in os.environ.items() if k.startswith(prefixes)}


class DeltaSource:
    """Path tables under `storage.root`, read with delta-rs at the version current when
    each table is first opened (one consistent snapshot per workbench)."""

    def __init__(self, cfg: Config):
        root = cfg.storage.root
        if not root:
            raise ExploreError(
                "storage.root is empty (managed tables): the workbench reads path tables "
                "without Spark; on Databricks use notebooks/explore.py, which hands the "
                "managed tables to the same views through Spark")
        if "://" not in root and not root.startswith("dbfs:"):
            root = os.path.abspath(root)
        self.root = root.rstrip("/")
        self.cfg = cfg
        self._open: dict[object, object] = {}
        self._cache: dict[tuple[str, tuple[str, ...] | None], pa.Table | None] = {}
        # The web app serves requests from a thread pool; delta-rs handles and the query
        # builder are opened once and used one call at a time.
        self._lock = threading.RLock()

    def path(self, key: str) -> str:
        return f"{self.root}/{getattr(self.cfg.tables, key)}"

    def delta(self, key: str):
        """The deltalake.DeltaTable of `key`, or None when there is none."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        if key not in self._open:
            try:
                self._open[key] = DeltaTable(self.path(key), storage_options=storage_options())
            except TableNotFoundError:
                self._open[key] = None
        return self._open[key]

    def read(self, key: str, columns: Sequence[str] | None = None) -> pa.Table | None:
        cache_key = (key, None if columns is None else tuple(columns))
        with self._lock:
            if cache_key not in self._cache:
                self._cache[cache_key] = self._scan(key, columns)
            return self._cache[cache_key]

    def lookup(self, key: str, sample_id: int, columns: Sequence[str]) -> dict | None:
        """One row's `columns` by sample id, read from the files and pages whose
        statistics can hold it (the big columns, image bytes and OCR boxes, are never read
        in bulk; a pyarrow dataset would decode a whole row group's images for one:
        0.1-1 s a thumbnail at 10^5 rows, benchmarks/bench_explore.py)."""
        with self._lock:
            hits = self._scan(key, columns, f"WHERE sample_id = {int(sample_id)}")
        return hits.to_pylist()[0] if hits is not None and hits.num_rows else None

    def _scan(self, key: str, columns: Sequence[str] | None,
              where: str = "") -> pa.Table | None:
        """`columns` (None: all) of `key`'s rows, or None when there is no table, through
        DataFusion, which applies deletion vectors (Databricks turns them on for new
        tables; delta-rs' pyarrow dataset refuses such tables) and skips files and pages
        by their statistics."""
        table = self.delta(key)
        if table is None:
            return None
        if ("query", key) not in self._open:
            from deltalake import QueryBuilder

            self._open[("query", key)] = QueryBuilder().register("t", table)
        if columns is None:
            names = "*"
        else:
            have = set(table.schema().to_arrow().names)
            names = ", ".join('"' + c.replace('"', '""') + '"'
                              for c in [c for c in columns if c in have] or ["sample_id"])
        got = self._open[("query", key)].execute(f"SELECT {names} FROM t {where}")
        return select_columns(pa.table(got.read_all()), columns)

    def image(self, sample_id: int, column: str = "image") -> bytes | None:
        return (self.lookup("images", sample_id, (column,)) or {}).get(column)

    def properties(self, key: str) -> dict[str, str]:
        with self._lock:
            table = self.delta(key)
            return {} if table is None else dict(table.metadata().configuration)

    def version(self, key: str) -> int:
        with self._lock:
            table = self.delta(key)
            return -1 if table is None else table.version()
