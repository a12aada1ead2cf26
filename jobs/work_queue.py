"""Plan a chunked stage once: its pending rows, tagged with their chunk, in a scratch
Delta table partitioned by chunk, so that each chunk's commit reads only its own rows.
Chunks are key ranges, so `target_filter(k)` lets each MERGE skip the other ranges' files.

Why: ARCHITECTURE.md, "Chunked stages: one executor".
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.lake import Lake

CHUNK = "_chunk"
STALE_AFTER_S = 24 * 3600


class Chunks:
    """The planned chunks: `chunks(k)` is chunk k's rows, `count` how many there are."""

    def __init__(self, read: Callable[[int], DataFrame], bounds: list[float], key: str):
        self._read, self._bounds, self._key = read, bounds, key
        self.count = len(bounds) + 1

    def __call__(self, k: int) -> DataFrame:
        return self._read(k)

    def target_filter(self, k: int, alias: str = "t") -> str | None:
        """SQL predicate on the target's key for chunk k (None: the whole table)."""
        col = f"{alias}.`{self._key}`"

        def literal(b: float) -> str:  # an integral key stays a long: stats still apply
            return str(int(b)) if b.is_integer() else repr(b)

        low = self._bounds[k - 1] if k > 0 else None
        high = self._bounds[k] if k < len(self._bounds) else None
        parts = ([f"{col} >= {literal(low)}"] if low is not None else []) + (
            [f"{col} < {literal(high)}"] if high is not None else [])
        return " AND ".join(parts) or None


def range_bounds(todo: DataFrame, key: str, count: int) -> list[float]:
    """count - 1 increasing key values splitting `todo` into nearly equal ranges."""
    probs = [k / count for k in range(1, count)]
    quantiles = todo.select(F.col(key).cast("double").alias(key)).approxQuantile(
        key, probs, 1.0 / (10 * count))
    return sorted({float(q) for q in quantiles if q is not None})


@contextmanager
def staged(lake: Lake, todo: DataFrame, count: int, stage: str, key: str = "sample_id"
           ) -> Iterator[Chunks]:
    """Yield the Chunks of `todo`, planned once into about `count` key ranges."""
    if count <= 1:
        yield Chunks(lambda _k: todo, [], key)
        return
    from pyspark.ml.feature import Bucketizer

    lake.drop_stale_scratch(STALE_AFTER_S)
    bounds = range_bounds(todo, key, count)
    ref = lake.scratch(f"{stage}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}")
    # Bucketizer: a binary search per row in the JVM, whatever the number of chunks.
    keyed = todo.withColumn("_key", F.col(key).cast("double"))
    bucketed = Bucketizer(splits=[float("-inf"), *bounds, float("inf")], inputCol="_key",
                          outputCol=CHUNK).transform(keyed)
    writer = bucketed.withColumn(CHUNK, F.col(CHUNK).cast("int")).drop("_key").write.format(
        "delta").partitionBy(CHUNK)
    try:
        if ref.path is not None:
            writer.save(ref.path)
        else:
            writer.saveAsTable(ref.name)

        def chunk(k: int) -> DataFrame:
            reader = lake.spark.read.format("delta")
            table = reader.load(ref.path) if ref.path is not None else reader.table(ref.name)
            return table.where(F.col(CHUNK) == k).drop(CHUNK)

        yield Chunks(chunk, bounds, key)
    finally:
        lake.drop_scratch(ref)
