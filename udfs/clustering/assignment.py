"""Nearest centroid of each embedding, with one cached faiss index per Python worker."""

from __future__ import annotations

from typing import Any

import numpy as np

from udfs.clustering.artifacts import ClusterArtifacts, centroids_fingerprint
from udfs.clustering.faiss_runtime import faiss_module
from udfs.worker_cache import worker_cached


def build_index(centroids: np.ndarray) -> Any:
    """Exact L2 index over the centroids (4000 x 256 is ~4 MB: brute force is right)."""
    faiss = faiss_module()
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    index = faiss.IndexFlatL2(c.shape[1])
    index.add(c)
    return index


def get_index(centroids: np.ndarray, fingerprint: str | None = None) -> Any:
    """Process-wide cached `build_index`: a Python worker builds it once, not per batch."""
    key = fingerprint or centroids_fingerprint(centroids)
    return worker_cached("faiss_index", key, lambda: build_index(centroids))


def assign(
    art: ClusterArtifacts, embeddings: np.ndarray, index: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each embedding: (ids int64, squared L2 distances float32).

    Distances are faiss's squared L2 in PCA space, computed as |x|^2 + |c|^2 - 2<x, c>, so
    they can be slightly negative for points sitting on a centroid.
    """
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, d), got shape {x.shape}")
    if x.shape[0] == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    if index is None:
        index = get_index(art.centroids, art.fingerprint)
    projected = np.ascontiguousarray(art.project(x))
    distances, ids = index.search(projected, 1)
    return ids[:, 0].astype(np.int64, copy=False), distances[:, 0].astype(np.float32, copy=False)

