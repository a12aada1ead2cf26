"""Search by meaning over the scores table's `image_embedding` (CLIP ViT-B/32, unit norm).

A text query goes through the text tower of the very model that scored the table (the
`deparrot.clip_model` property the score stage records), so query and images share one
space; "more like this" uses a row's own embedding. Both are an exact inner-product
search in faiss (IndexFlatIP): at a workbench's 10^5-10^6 rows one query is a few
milliseconds, and exact results are what a curator checking duplicates wants.

With randomly initialised weights (the offline demo) the search still runs end to end,
and every result says its ranking is meaningless.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from jobs.explore.tables import ExploreError, TableSource


@dataclass(frozen=True)
class Hit:
    sample_id: int
    similarity: float


class EmbeddingIndex:
    """The embeddings of the scored rows, loaded on first use (they are the largest
    column the workbench reads), with the text tower of their model."""

    def __init__(self, source: TableSource):
        self.source = source
        props = source.properties("scores")
        self.model_spec = props.get("deparrot.clip_model", "")
        self.random_init = props.get("deparrot.random_init", "false") == "true"
        self._lock = threading.Lock()
        self._index = None
        self._ids: np.ndarray | None = None
        self._row: dict[int, int] = {}

    @property
    def warning(self) -> str:
        if self.random_init:
            return ("The scores were computed with randomly initialised CLIP weights: "
                    "these results are ranked by noise and mean nothing.")
        return ""

    def _load(self):
        with self._lock:
            if self._index is not None:
                return self._index
            import faiss

            table = self.source.read("scores", ("sample_id", "image_embedding"))
            if table is None:
                raise ExploreError("no scores table: run `deparrot score` first")
            table = table.filter(pa.compute.is_valid(table["image_embedding"]))
            ids = table["sample_id"].to_numpy()
            emb = table["image_embedding"].combine_chunks()
            dim = len(emb[0]) if len(emb) else 1
            matrix = np.asarray(emb.values.to_numpy(zero_copy_only=False),
                                dtype=np.float32).reshape(len(ids), dim)
            index = faiss.IndexFlatIP(dim)
            index.add(np.ascontiguousarray(matrix))
            self._ids, self._row = ids, {int(s): i for i, s in enumerate(ids)}
            self._matrix = matrix
            self._index = index
            return index

    def _search(self, query: np.ndarray, k: int, exclude: int | None = None) -> list[Hit]:
        index = self._load()
        if index.ntotal == 0:
            return []
        want = min(index.ntotal, k + (1 if exclude is not None else 0))
        sims, rows = index.search(np.ascontiguousarray(query.reshape(1, -1), np.float32), want)
        hits = [Hit(int(self._ids[r]), float(s)) for s, r in zip(sims[0], rows[0], strict=True)
                if r >= 0 and int(self._ids[r]) != exclude]
        return hits[:k]

    def like(self, sample_id: int, k: int = 24) -> list[Hit]:
        """The rows whose image embedding is closest to this row's."""
        self._load()
        row = self._row.get(int(sample_id))
        if row is None:
            raise ExploreError(f"row {sample_id} has no image embedding (not scored)")
        return self._search(self._matrix[row], k, exclude=int(sample_id))

    def text(self, query: str, k: int = 24) -> list[Hit]:
        """The rows whose image embedding is closest to the CLIP text embedding of `query`."""
        if not query.strip():
            raise ExploreError("empty search text")
        self._load()
        return self._search(self._encode(query), k)

    def _encode(self, query: str) -> np.ndarray:
        if ":" not in self.model_spec:
            raise ExploreError("the scores table does not record its CLIP model "
                               "(deparrot.clip_model): re-run `deparrot score`")
        from udfs.clip_models import encode_texts, load_clip

        name, pretrained = self.model_spec.split(":", 1)
        with self._lock:  # one model load, one forward pass at a time
            bundle = load_clip(name, None if pretrained == "random" else pretrained,
                               device="cpu", precision="fp32",
                               random_init_ok=pretrained == "random")
            emb = _one_thread(encode_texts, bundle, [query])[0]
        if emb.shape[0] != self._matrix.shape[1]:
            raise ExploreError(
                f"the text tower of {self.model_spec} gives {emb.shape[0]}-d embeddings, the "
                f"table holds {self._matrix.shape[1]}-d ones")
        return emb


def _one_thread(call, *args):
    """`call` with torch on one thread. One query is 77 tokens: split over threads, each
    small matmul waits for the slowest core, 0.4-2.4 s a query instead of 0.1-0.17 s on 2
    busy cores (benchmarks/bench_explore.py); the embedding differs by float rounding
    (1e-7) at most."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return call(*args)
    finally:
        torch.set_num_threads(threads)
