"""Commit big stages in chunks, so a crash costs one chunk and a re-run resumes (the
chunks themselves are planned by jobs/work_queue.py)."""

from __future__ import annotations

import math
import sys
import time


def chunk_count(rows: int, rows_per_commit: int) -> int:
    return max(1, math.ceil(rows / max(1, rows_per_commit))) if rows else 0


class Progress:
    """One line per committed chunk: rows done / total, rate and time left.

    Chunks are key ranges of nearly equal size (work_queue), so rows done is estimated
    from the chunk count instead of paying a count per chunk.
    """

    def __init__(self, stage: str, total: int, chunks: int):
        self.stage, self.total, self.chunks = stage, total, max(1, chunks)
        self.done_chunks = 0
        self.start = time.perf_counter()

    def chunk_done(self) -> str:
        self.done_chunks += 1
        elapsed = max(1e-9, time.perf_counter() - self.start)
        rows = round(self.total * self.done_chunks / self.chunks)
        rate = rows / elapsed
        left = (self.total - rows) / rate if rate > 0 else 0.0
        line = (f"[{self.stage}] chunk {self.done_chunks}/{self.chunks}: ~{rows:,}/"
                f"{self.total:,} rows, {rate:,.1f} rows/s, ~{_duration(left)} left")
        print(line, file=sys.stderr, flush=True)
        return line


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
