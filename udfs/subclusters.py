"""Split a k-means cluster that is too big to deduplicate in one task into sub-clusters.

Near-duplicate search inside a group of n rows costs O(n^2 d) and holds the group's n
embeddings in one Python worker. k-means clusters are skewed (at LAION-2B's 4000 clusters
the mean is 580,000 rows), so dedup caps a group at `recipe.dedup_max_cluster_rows`: a
bigger cluster is split by a second, small spherical k-means trained on a sample of its
own rows, each row going to its nearest sub-centroid. Total work is then O(N * cap * d),
linear in rows. The price is the same as the paper's clusters already pay: two
near-duplicates on opposite sides of a sub-cluster border are not compared. Near-duplicates
(cosine >= 0.95) sit close together, so few straddle a border; the test measures it.
"""

from __future__ import annotations

import math

import numpy as np

from udfs.clustering.faiss_runtime import faiss_module, faiss_threads
from udfs.dedup import unit_rows

# faiss warns below 39 training points per centroid; 64 keeps every centroid well fed.
SAMPLE_ROWS_PER_PART = 64
SPLIT_ITERATIONS = 20


def parts_for(rows: int, cap: int) -> int:
    """Sub-clusters for a group of `rows`: twice the minimum, since k-means is uneven."""
    return max(2, math.ceil(2 * rows / cap))


def sample_fraction(rows: int, parts: int) -> float:
    """Share of a group's rows that trains its sub-centroids (SAMPLE_ROWS_PER_PART each)."""
    return min(1.0, SAMPLE_ROWS_PER_PART * parts / max(rows, 1))


def train_subcentroids(ids: np.ndarray, embeddings: np.ndarray, parts: int,
                       seed: int) -> np.ndarray:
    """(parts', d) unit sub-centroids from a sample; parts' <= parts when rows are few.

    Rows are sorted by id first and faiss runs on one thread, so the same sample gives the
    same centroids whatever order Spark delivered it in.
    """
    order = np.argsort(np.asarray(ids), kind="stable")
    x = unit_rows(np.asarray(embeddings)[order])
    k = max(1, min(parts, x.shape[0]))
    faiss = faiss_module()
    with faiss_threads(1):
        km = faiss.Kmeans(x.shape[1], k, niter=SPLIT_ITERATIONS, seed=seed, spherical=True,
                          min_points_per_centroid=1, max_points_per_centroid=1 << 20)
        km.train(x)
    return np.asarray(km.centroids, dtype=np.float32).reshape(k, x.shape[1])


def nearest(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of each row's most similar sub-centroid (cosine), int32."""
    sims = unit_rows(embeddings) @ np.asarray(centroids, dtype=np.float32).T
    return np.argmax(sims, axis=1).astype(np.int32)
