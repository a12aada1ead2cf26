"""The workbench's tables through Spark: how a Databricks notebook hands the lake to it.

`DeltaSource` reads path tables without a JVM; managed Unity Catalog tables have no path
a reader outside Spark may open, so on Databricks the notebook's own session reads them
(notebooks/explore.py). `SparkSource` is the same `TableSource` over `jobs.lake.Lake`,
so path tables and managed tables alike reach the same `Workbench` and views:

- `read` pulls only the requested columns to the driver as Arrow (`DataFrame.toArrow`)
  and keeps them: the workbench asks each table once;
- `lookup` and `image` filter by sample id in Spark and bring back one row, so the
  image bytes and OCR boxes are never collected in bulk; `images` fetches the few a
  gallery page shows in one query;
- each table is read at the Delta version current when it is first opened (one
  consistent snapshot per source, as `DeltaSource` does).

Reviews are not written through this source: `Workbench` stores them only for a
`DeltaSource` (a path table delta-rs appends to).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pyarrow as pa

from jobs.config import Config
from jobs.explore.tables import select_columns

# Image bytes kept on the driver (a gallery page or two); the oldest go first.
IMAGE_CACHE_ROWS = 512


class SparkSource:
    """The lake of `cfg` read through `spark` (path tables or managed tables)."""

    def __init__(self, spark, cfg: Config, lake=None):
        from jobs.lake import Lake

        self.spark = spark
        self.cfg = cfg
        self.lake = lake if lake is not None else Lake(spark, cfg)
        self._versions: dict[str, int] = {}
        self._properties: dict[str, dict[str, str]] = {}
        self._cache: dict[tuple[str, tuple[str, ...] | None], pa.Table | None] = {}
        self._images: dict[tuple[int, str], bytes | None] = {}

    @property
    def root(self) -> str:
        """Where the tables are, for messages (`Decisions` names it when one is missing)."""
        storage = self.cfg.storage
        return storage.root or ".".join(p for p in (storage.catalog, storage.schema) if p)

    def version(self, key: str) -> int:
        """The version this source reads `key` at (pinned on first use), -1 when missing."""
        from jobs.lake import MissingTableError

        if key not in self._versions:
            try:
                self.lake.register(key)  # asks once whether the table exists
            except MissingTableError:
                self._versions[key] = -1
            else:
                self._versions[key] = self.lake.version(key)
        return self._versions[key]

    def _frame(self, key: str):
        version = self.version(key)
        return None if version < 0 else self.lake.read(key, version=version)

    def read(self, key: str, columns: Sequence[str] | None = None) -> pa.Table | None:
        cache_key = (key, None if columns is None else tuple(columns))
        if cache_key not in self._cache:
            df = self._frame(key)
            if df is None:
                self._cache[cache_key] = None
            elif columns is None:
                self._cache[cache_key] = df.toArrow()
            else:
                self._cache[cache_key] = select_columns(_arrow(df, columns), columns)
        return self._cache[cache_key]

    def lookup(self, key: str, sample_id: int, columns: Sequence[str]) -> dict | None:
        """One row's `columns` by sample id: filtered in Spark, one row collected."""
        from pyspark.sql import functions as F

        df = self._frame(key)
        if df is None:
            return None
        hits = _arrow(df.where(F.col("sample_id") == F.lit(int(sample_id))).limit(1), columns)
        return select_columns(hits, columns).to_pylist()[0] if hits.num_rows else None

    def images(self, sample_ids: Iterable[int], column: str = "image") -> dict[int, bytes | None]:
        """The stored bytes of several images in one Spark query (a gallery page), kept
        for `image`; rows without a stored image map to None."""
        from pyspark.sql import functions as F

        wanted = sorted({int(s) for s in sample_ids})
        out = {s: self._images[(s, column)] for s in wanted if (s, column) in self._images}
        missing = [s for s in wanted if s not in out]
        df = self._frame("images") if missing else None
        for s in missing:
            out[s] = None
        if df is not None:
            cols = ("sample_id", column)
            got = select_columns(_arrow(df.where(F.col("sample_id").isin(missing)), cols), cols)
            out.update(zip(got.column("sample_id").to_pylist(),
                           got.column(column).to_pylist(), strict=True))
        for s in missing:
            self._keep(s, column, out[s])
        return out

    def image(self, sample_id: int, column: str = "image") -> bytes | None:
        key = (int(sample_id), column)
        if key not in self._images:
            self._keep(key[0], column,
                       (self.lookup("images", key[0], (column,)) or {}).get(column))
        return self._images[key]

    def _keep(self, sample_id: int, column: str, data: bytes | None) -> None:
        while len(self._images) >= IMAGE_CACHE_ROWS:
            del self._images[next(iter(self._images))]
        self._images[(sample_id, column)] = data

    def properties(self, key: str) -> dict[str, str]:
        if key not in self._properties:
            self._properties[key] = (self.lake.properties(key) if self.version(key) >= 0
                                     else {})
        return dict(self._properties[key])


def _arrow(df, columns: Sequence[str]) -> pa.Table:
    """`df`'s `columns` that exist, as Arrow on the driver (a placeholder column when none
    does, so the row count survives; `select_columns` then fills the missing ones with nulls)."""
    from pyspark.sql import functions as F

    have = set(df.columns)
    wanted = [c for c in dict.fromkeys(columns) if c in have]
    return df.select(*(wanted or [F.lit(None).alias("_no_column")])).toArrow()
