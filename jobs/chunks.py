"""Commit big stages in chunks, so a crash costs one chunk and a re-run resumes."""

from __future__ import annotations

import math
from collections.abc import Iterator

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def chunk_count(rows: int, rows_per_commit: int) -> int:
    return max(1, math.ceil(rows / max(1, rows_per_commit))) if rows else 0


def chunks(todo: DataFrame, count: int, key: str = "sample_id") -> Iterator[DataFrame]:
    """`count` disjoint slices of `todo` by a hash of `key` (stable across re-runs)."""
    for chunk in range(count):
        if count == 1:
            yield todo
        else:
            yield todo.where(F.pmod(F.xxhash64(key), F.lit(count)) == chunk)
