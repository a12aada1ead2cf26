"""Plan a chunked stage once: its pending rows, tagged with their chunk, in a scratch
Delta table partitioned by chunk, so that each chunk's commit reads only its own rows.

Without it each chunk re-ran the pending query (images joined with scores and metadata)
and kept its slice with a hash filter, which prunes no file: every chunk read every
image's bytes, and the stage's cost grew with rows x chunks (~23,000 chunks of 100,000
rows at LAION-2B). Staged, the images are read once to plan, the scratch table is
written once, and chunk k reads partition k: linear in rows whatever the chunk size.

The scratch table is private to one run (a unique name), so concurrent runs never read
each other's plan, and it is dropped when the stage ends; a crash leaves it behind, and
runs remove scratch tables older than a day. One chunk needs no plan: the pending query
is read once anyway.
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


def chunk_of(key: str, count: int):
    """The chunk of a row: a hash of its key, so chunks are nearly equal and stable."""
    return F.pmod(F.xxhash64(key), F.lit(count))


@contextmanager
def staged(lake: Lake, todo: DataFrame, count: int, stage: str, key: str = "sample_id"
           ) -> Iterator[Callable[[int], DataFrame]]:
    """Yield `chunk(k) -> DataFrame` over `todo` planned once into `count` chunks."""
    if count <= 1:
        yield lambda _k: todo
        return
    lake.drop_stale_scratch(STALE_AFTER_S)
    ref = lake.scratch(f"{stage}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}")
    writer = todo.withColumn(CHUNK, chunk_of(key, count).cast("int")).write.format(
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

        yield chunk
    finally:
        lake.drop_scratch(ref)
