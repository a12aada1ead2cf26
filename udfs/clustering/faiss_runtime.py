"""faiss imported lazily, and its OpenMP threads capped per Spark task."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def faiss_module():
    import faiss  # deferred: importing faiss starts OpenMP; keep module import cheap

    return faiss


@contextmanager
def faiss_threads(n: int | None) -> Iterator[None]:
    """Cap faiss's OpenMP threads inside the block (None: leave as is).

    Spark runs one Python worker per task slot; faiss defaults to one thread per core in
    each, so workers oversubscribe the executor and small searches spend ~30 ms spin-waiting.
    Use the task's cores (spark.task.cpus), usually 1.
    """
    if n is None:
        yield
        return
    faiss = faiss_module()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
