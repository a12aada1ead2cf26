"""The one executor of chunked stages (download, score): plan, stage, commit chunk by
chunk, mirror the rejects, report.

A stage gives it a `ChunkedWork` (its table, schema and key, its pending rows, the
`transform` that turns a chunk into table rows, how an error row reads as a reject, its
Spark settings); the executor plans against a pinned version of the table, stages the
chunks once (jobs/work_queue.py), MERGEs each on the key, mirrors the rejects only when
they differ, scopes the settings and times each phase.

Why each of these: ARCHITECTURE.md, "Chunked stages: one executor".
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.chunks import Progress, chunk_count
from jobs.lake import REJECTS_SCHEMA, Lake
from jobs.session import scoped_conf
from jobs.work_queue import staged
from udfs.timing import Laps

# What a reject says about its row: compared to tell whether the rejects are up to date.
REJECT_COLUMNS = ("reject_key", "reason", "detail", "record")


def retry_again() -> Column:
    """Rows of a chunked stage's table that another try may change (retryable errors)."""
    return (F.col("status") == "error") & F.coalesce(F.col("retryable"), F.lit(False))


def settled_keys(table: DataFrame, key: str = "sample_id") -> DataFrame:
    """Keys whose row is final: ok, or an error that another try would not change."""
    return table.where(~retry_again()).select(key)


@dataclass(frozen=True)
class ChunkedWork:
    """What one chunked stage is: everything the executor cannot know by itself."""

    stage: str  # also the `stage` of its rejects
    table: str  # the lake table it writes (with `status`, `error`, `retryable`)
    schema: T.StructType
    # (lake, settled keys of the table) -> the pending input rows, keyed by `key`.
    pending: Callable[[Lake, DataFrame], DataFrame]
    # A chunk of pending rows -> rows of `schema` without the `stamp` column.
    transform: Callable[[DataFrame], DataFrame]
    stamp: str  # the timestamp column set when a chunk is committed
    rows_per_commit: int
    # What the stage's reject of an error row says (REJECT_COLUMNS), read off the table.
    reject_values: Callable[[], dict[str, Column]]
    key: str = "sample_id"
    conf: Mapping[str, str] = field(default_factory=dict)  # Spark settings for its jobs
    tally_by: tuple[str, ...] = ("status", "error")
    # Rewrites the rejects (the default: mirror of the error rows); a stage may name its
    # own function so that tests can stand in for it.
    refresh_rejects: Callable[[Lake], None] | None = None

    def rejects(self, table: DataFrame) -> DataFrame:
        """The stage's rejects: one per error row of its table."""
        return mirror_rejects(table, self.stage, self.reject_values(), self.key)


def mirror_rejects(table: DataFrame, stage: str, values: dict[str, Column],
                   key: str = "sample_id") -> DataFrame:
    """One reject per error row of a chunked stage's table, saying `values`."""
    return table.where(F.col("status") == "error").select(
        F.lit(stage).alias("stage"), F.col(key).alias("sample_id"),
        *(values[c].cast("string").alias(c) for c in REJECT_COLUMNS))


@dataclass
class ChunkedRun:
    pending: int = 0
    chunks: int = 0
    tallies: dict[tuple, int] = field(default_factory=dict)  # rows per tally_by values
    seconds: dict[str, float] = field(default_factory=dict)  # where the stage's time went


def run_chunked(lake: Lake, work: ChunkedWork) -> ChunkedRun:
    """Do a chunked stage's pending work, commit it chunk by chunk, mirror its rejects."""
    out = ChunkedRun()
    with scoped_conf(lake.spark, dict(work.conf)):
        lap = Laps(out.seconds, digits=2)
        lake.ensure(work.table, work.schema)
        lake.add_missing_columns(work.table, work.schema)
        table = lake.read(work.table, version=lake.version(work.table))
        todo = work.pending(lake, settled_keys(table, work.key))
        out.pending = todo.count()
        # Without retryable errors every pending key is new: insert-only MERGEs.
        replaces = out.pending > 0 and table.where(retry_again()).limit(1).count() > 0
        lap("plan")
        if out.pending:
            _commit_chunks(lake, work, todo, out, replaces, lap)
        out.tallies, mirrored = survey(lake, work)
        lap("report")
        if not mirrored:
            (work.refresh_rejects or functools.partial(refresh_rejects, work=work))(lake)
            lap("rejects")
    return out


def _commit_chunks(lake: Lake, work: ChunkedWork, todo: DataFrame, out: ChunkedRun,
                   replaces: bool, lap: Callable[[str], None]) -> None:
    planned = chunk_count(out.pending, work.rows_per_commit)
    progress = Progress(work.stage, out.pending, planned)
    commit = lake.upsert if replaces else lake.insert_new
    with staged(lake, todo, planned, work.stage, work.key) as chunks:
        lap("stage")
        out.chunks = progress.chunks = chunks.count
        for k in range(chunks.count):
            rows = work.transform(chunks(k)).withColumn(work.stamp, F.current_timestamp())
            # Unpersisted on purpose: MERGE materializes its source once (ARCHITECTURE.md).
            commit(work.table, rows, on=[work.key], target_filter=chunks.target_filter(k))
            lap("work_and_write")
            progress.chunk_done()


def refresh_rejects(lake: Lake, work: ChunkedWork) -> None:
    """Make the stage's rejects exactly its table's error rows (one atomic commit)."""
    lake.replace_rejects(work.stage, work.rejects(lake.read(work.table)))


def survey(lake: Lake, work: ChunkedWork) -> tuple[dict[tuple, int], bool]:
    """One Spark action: the table's rows per `tally_by` values, and whether the stage's
    rejects still mirror its error rows exactly (equal row count and XOR of row hashes)."""
    lake.ensure("rejects", REJECTS_SCHEMA, partition_by=("stage",))
    values = work.reject_values()
    row_hash = F.xxhash64(*(values[c].cast("string") for c in REJECT_COLUMNS))
    counts = lake.read(work.table).groupBy(*work.tally_by).agg(
        F.count(F.lit(1)).alias("_n"),
        F.bit_xor(F.when(F.col("status") == "error", row_hash)).alias("_x"),
    ).withColumn("_side", F.lit("table"))
    stored = lake.read("rejects").where(F.col("stage") == F.lit(work.stage)).agg(
        F.count(F.lit(1)).alias("_n"),
        F.bit_xor(F.xxhash64(*(F.col(c) for c in REJECT_COLUMNS))).alias("_x"),
    ).withColumn("_side", F.lit("rejects"))
    rows = counts.unionByName(stored, allowMissingColumns=True).collect()
    ours = [r for r in rows if r["_side"] == "table"]
    tallies: dict[tuple, int] = {}
    for r in ours:
        values_key = tuple(r[c] for c in work.tally_by)
        tallies[values_key] = tallies.get(values_key, 0) + r["_n"]
    errors = [r for r in ours if r["status"] == "error"]
    mirror = (sum(r["_n"] for r in errors),
              functools.reduce(operator.xor, (r["_x"] for r in errors), 0))
    kept = next(r for r in rows if r["_side"] == "rejects")
    return tallies, mirror == (kept["_n"], kept["_x"] or 0)
