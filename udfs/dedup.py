"""Near-duplicate grouping inside one k-means cluster, with bounded memory.

Two rows are linked when the cosine similarity of their image embeddings is >= `threshold`;
groups are the connected components of that graph (single linkage, so A~B and B~C group
A, B and C even when A and C are further apart than the threshold). Each group keeps one row:
the highest score, ties broken by the smallest id, so the result does not depend on row order.

Cost inside a cluster of n rows: O(n^2 d) similarity compute. Clusters of at most
DENSE_MAX_ROWS rows use one n x n product (<= 4 MiB). Larger ones go through faiss
`IndexFlatIP.range_search`, one query block of `block_size` rows at a time; faiss tiles the
block x n product internally, so peak memory is O(n d) for the vectors plus the pairs found in
one block: O(pairs) typically, O(block_size * n) at worst (a block of identical rows).
Components are merged per block with scipy's connected_components in O(n + block pairs), so
the pairs of the whole cluster are never held at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_THRESHOLD = 0.95
DEFAULT_BLOCK_SIZE = 4096
# Clusters up to this many rows use one dense n x n product (<= 4 MiB of float32).
DENSE_MAX_ROWS = 1024


@dataclass(frozen=True)
class DedupResult:
    """Per input row: its group's keeper id, whether it is kept, group size, best match."""

    keeper_ids: np.ndarray  # int64
    keep: np.ndarray  # bool, keeper_ids == ids
    group_size: np.ndarray  # int32
    max_sim: np.ndarray  # float32, highest cosine to another row; NaN when none >= threshold


def unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """Unit rows in float32 so inner product is cosine; all-zero rows stay zero (no links)."""
    x = np.array(embeddings, dtype=np.float32, order="C", copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def _merge(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Relabel so that components containing label a[i] and b[i] become one."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = labels.shape[0]
    graph = coo_matrix((np.ones(a.shape[0], np.int8), (a, b)), shape=(n, n)).tocsr()
    _, relabel = connected_components(graph, directed=False)
    return relabel[labels]


def _dense_pairs(x: np.ndarray, threshold: np.float32) -> Iterator[tuple[np.ndarray, ...]]:
    """All linked (row, col, sim) of a small cluster from one n x n product."""
    sims = x @ x.T
    linked = sims >= threshold
    np.fill_diagonal(linked, False)
    rows, cols = np.nonzero(linked)
    yield rows.astype(np.int64), cols.astype(np.int64), sims[rows, cols]


def _faiss_pairs(
    x: np.ndarray, threshold: np.float32, block_size: int
) -> Iterator[tuple[np.ndarray, ...]]:
    """Linked (row, col, sim) one query block at a time; faiss tiles block x n internally."""
    import faiss

    n, d = x.shape
    index = faiss.IndexFlatIP(d)
    index.add(x)
    # faiss keeps sims strictly above the radius; one float32 ulp below makes it `>=`.
    radius = float(np.nextafter(threshold, np.float32(-np.inf)))
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        lims, sims, cols = index.range_search(x[start:stop], radius)
        rows = np.repeat(np.arange(start, stop, dtype=np.int64), np.diff(lims.astype(np.int64)))
        other = cols != rows
        yield rows[other], cols[other].astype(np.int64), sims[other]


def _components(x: np.ndarray, threshold: float, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Component label and best-match similarity of each (unit) row."""
    n = x.shape[0]
    labels = np.arange(n, dtype=np.int64)
    max_sim = np.full(n, np.nan, dtype=np.float32)
    if n < 2:
        return labels, max_sim
    t = np.float32(threshold)
    # Small clusters (the common case) skip faiss: one BLAS call, and no OpenMP team whose
    # start-up dominates when Python workers share cores.
    small = n <= min(block_size, DENSE_MAX_ROWS)
    for rows, cols, sims in _dense_pairs(x, t) if small else _faiss_pairs(x, t, block_size):
        if rows.size == 0:
            continue
        # Both paths return pairs sorted by row: reduce each row's run.
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        max_sim[rows[starts]] = np.maximum.reduceat(sims, starts)
        # Every edge is found from both ends; keeping i < j halves the merge work.
        forward = rows < cols
        a, b = labels[rows[forward]], labels[cols[forward]]
        cross = a != b
        if cross.any():
            labels = _merge(labels, a[cross], b[cross])
    return labels, max_sim


def find_near_duplicates(
    ids: np.ndarray,
    embeddings: np.ndarray,
    scores: np.ndarray | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> DedupResult:
    """Group rows whose cosine similarity is >= threshold and pick one keeper per group.

    Embeddings are re-normalised defensively (cosine is what is meant). `scores` rank rows
    inside a group (higher is kept; NaN ranks lowest); None means ties everywhere, so the
    smallest id is kept.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    ids = ids.astype(np.int64, copy=False)
    n = ids.shape[0]
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(f"embeddings must have shape ({n}, d), got {emb.shape}")
    if scores is None:
        s = np.zeros(n, dtype=np.float64)
    else:
        s = np.asarray(scores, dtype=np.float64)
        if s.shape != (n,):
            raise ValueError(f"scores must have shape ({n},), got {s.shape}")
        s = np.where(np.isnan(s), -np.inf, s)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if np.unique(ids).shape[0] != n:
        raise ValueError("ids must be unique within the group being deduplicated")

    labels, max_sim = _components(unit_rows(emb), threshold, block_size)

    # Sort by (component, -score, id): the first row of each component is its keeper.
    order = np.lexsort((ids, -s, labels))
    sorted_labels = labels[order]
    first = np.ones(n, dtype=bool)
    first[1:] = sorted_labels[1:] != sorted_labels[:-1]
    group_of_sorted = np.cumsum(first) - 1
    keeper_sorted = ids[order[first]][group_of_sorted]
    size_sorted = np.bincount(group_of_sorted, minlength=int(first.sum()))[group_of_sorted]
    keeper_ids = np.empty(n, dtype=np.int64)
    keeper_ids[order] = keeper_sorted
    group_size = np.empty(n, dtype=np.int32)
    group_size[order] = size_sorted
    return DedupResult(
        keeper_ids=keeper_ids, keep=keeper_ids == ids, group_size=group_size, max_sim=max_sim
    )


def near_duplicate_groups(
    ids: np.ndarray,
    embeddings: np.ndarray,
    scores: np.ndarray | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> np.ndarray:
    """For each row, the id of its group's keeper (its own id when it is kept)."""
    return find_near_duplicates(
        ids, embeddings, scores, threshold=threshold, block_size=block_size
    ).keeper_ids


def embeddings_from_column(values: Any, dtype: str = "float32") -> np.ndarray:
    """Stack a pandas column of lists/arrays (or raw little-endian bytes) into (n, d)."""
    seq = list(values)
    if not seq:
        return np.empty((0, 0), dtype=np.float32)
    if isinstance(seq[0], bytes | bytearray | memoryview):
        le = np.dtype(dtype).newbyteorder("<")
        flat = np.frombuffer(b"".join(bytes(v) for v in seq), dtype=le)
        return flat.reshape(len(seq), -1).astype(np.float32)
    return np.stack([np.asarray(v, dtype=np.float32) for v in seq])


def dedup_frame(
    pdf: pd.DataFrame,
    *,
    id_col: str = "id",
    emb_col: str = "embedding",
    score_col: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    block_size: int = DEFAULT_BLOCK_SIZE,
    emb_dtype: str = "float32",
) -> pd.DataFrame:
    """`applyInPandas` body for one cluster: columns [id_col, keeper_id, group_size, max_sim].

    Spark schema for the defaults: `DEDUP_FRAME_SCHEMA`. `emb_dtype` only matters when the
    embedding column holds raw bytes (e.g. float16 vectors stored as binary).
    """
    import pandas as pd

    ids = pdf[id_col].to_numpy(dtype=np.int64)
    emb = embeddings_from_column(pdf[emb_col], dtype=emb_dtype)
    if ids.shape[0] == 0:
        emb = np.empty((0, 1), dtype=np.float32)
    scores = None if score_col is None else pdf[score_col].to_numpy(dtype=np.float64)
    res = find_near_duplicates(ids, emb, scores, threshold=threshold, block_size=block_size)
    return pd.DataFrame(
        {
            id_col: ids,
            "keeper_id": res.keeper_ids,
            "group_size": res.group_size,
            "max_sim": res.max_sim,
        }
    )


DEDUP_FRAME_SCHEMA = "id long, keeper_id long, group_size int, max_sim float"
