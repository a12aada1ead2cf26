"""Curators' reviews: an append-only Delta table, and the filter's precision and recall on it.

A review says a decision was wrong or right: "has text" / "no text" on a row (the text
filter's ground truth), "duplicate" / "not a duplicate" (dedup's). Each is one appended
row (review_id, sample_id, label, reviewer, reviewed_at, note); nothing is updated in
place, so two curators reviewing at once never lose a row: Delta appends do not conflict,
and delta-rs retries a commit that lost the race for a version number. The latest review
of a row (per kind) is the one that counts. Every review grows an evaluation set of real
images, the only kind of evidence the filter's quality claims may rest on.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from jobs.explore.tables import ExploreError, storage_options

TEXT_LABELS = ("has_text", "no_text")
DUP_LABELS = ("duplicate", "not_duplicate")
LABELS = TEXT_LABELS + DUP_LABELS
COMMIT_ATTEMPTS = 20

SCHEMA = pa.schema([
    pa.field("review_id", pa.string(), nullable=False),
    pa.field("sample_id", pa.int64(), nullable=False),
    pa.field("label", pa.string(), nullable=False),
    pa.field("reviewer", pa.string(), nullable=False),
    pa.field("reviewed_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("note", pa.string()),
])


@dataclass(frozen=True)
class Review:
    sample_id: int
    label: str
    reviewer: str
    note: str = ""

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ExploreError(f"label must be one of {', '.join(LABELS)}, got {self.label!r}")
        if not self.reviewer.strip():
            raise ExploreError("a review needs a reviewer name")


def append(path: str, reviews: Iterable[Review]) -> int:
    """Append reviews to the Delta table at `path` (created on first use); returns rows
    written. Safe to call from several processes at once."""
    from deltalake import CommitProperties, write_deltalake
    from deltalake.exceptions import CommitFailedError

    items = list(reviews)
    if not items:
        return 0
    now = dt.datetime.now(dt.timezone.utc)
    table = pa.table({
        "review_id": [uuid.uuid4().hex for _ in items],
        "sample_id": [int(r.sample_id) for r in items],
        "label": [r.label for r in items],
        "reviewer": [r.reviewer.strip()[:200] for r in items],
        "reviewed_at": [now] * len(items),
        "note": [r.note[:2000] for r in items],
    }, schema=SCHEMA)
    for attempt in range(COMMIT_ATTEMPTS):
        try:
            write_deltalake(path, table, mode="append",
                            storage_options=storage_options() or None,
                            commit_properties=CommitProperties(max_commit_retries=100))
            return len(items)
        except CommitFailedError:
            # Two first reviews can race to create the table ("metadata changed"); the
            # loser's files were never committed, so writing again adds them once.
            if attempt == COMMIT_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.05, 0.3))
    return 0


def read(path: str) -> pa.Table:
    """Every review ever written (empty when there is no table yet)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(path, storage_options=storage_options() or None).to_pyarrow_table()
    except TableNotFoundError:
        return SCHEMA.empty_table()


def latest(con, reviews: pa.Table) -> None:
    """Register `reviews_latest` in duckdb `con`: per row, the newest text label and the
    newest duplicate label."""
    con.register("_reviews", reviews)
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW reviews_latest AS
        SELECT sample_id,
               arg_max(label, reviewed_at) FILTER (label IN {TEXT_LABELS}) AS text_label,
               arg_max(label, reviewed_at) FILTER (label IN {DUP_LABELS}) AS dup_label,
               count(*) AS n_reviews
        FROM _reviews GROUP BY sample_id""").fetchall()


REVIEWED_SQL = """
    SELECT coalesce(found, FALSE) AS found, score_status = 'ok' AS scored,
           coalesce(dedup_kept = FALSE, FALSE) AS removed, text_label, dup_label
    FROM rows JOIN reviews_latest USING (sample_id)"""


def quality(con) -> dict:
    """`quality_of` the reviewed rows of the workbench's `rows` table (duckdb `con`)."""
    return quality_of(con.execute(REVIEWED_SQL).df())


def quality_of(reviewed: pd.DataFrame) -> dict:
    """The text filter's precision and recall, and dedup's precision, from reviewed rows:
    columns found (the filter saw text), scored, removed (dedup dropped it), text_label
    and dup_label (the latest review of each kind, or null). The report computes the
    same frame in Spark and calls this too, so the two never count differently."""
    text = reviewed[reviewed["scored"].eq(True)]
    found = text["found"].eq(True)
    tp = int((found & (text["text_label"] == "has_text")).sum())
    fp = int((found & (text["text_label"] == "no_text")).sum())
    fn = int((~found & (text["text_label"] == "has_text")).sum())
    tn = int((~found & (text["text_label"] == "no_text")).sum())
    removed = reviewed[reviewed["removed"].eq(True)]
    dup_ok = int((removed["dup_label"] == "duplicate").sum())
    dup_wrong = int((removed["dup_label"] == "not_duplicate").sum())
    return {
        "text": {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "reviewed": tp + fp + fn + tn,
                 "precision": tp / (tp + fp) if tp + fp else None,
                 "recall": tp / (tp + fn) if tp + fn else None},
        "dedup": {"confirmed": dup_ok, "wrong": dup_wrong,
                  "precision": dup_ok / (dup_ok + dup_wrong) if dup_ok + dup_wrong else None},
    }
