"""Executor side of cluster-assign: nearest centroid for each embedding with faiss.

The artifacts arrive as broadcast bytes; they are decoded and the faiss index is built
once per Python worker (keyed by the centroids' fingerprint), not per batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pandas as pd

from udfs import clustering
from udfs.worker_cache import worker_cached


def _artifacts(blob: bytes) -> clustering.ClusterArtifacts:
    """Decoded once per worker; the key is a digest, the blob itself is megabytes."""
    key = hashlib.sha1(blob).hexdigest()
    return worker_cached("cluster_artifacts", key,
                         lambda: clustering.deserialize_artifacts(blob), max_entries=1)


def assign_batches(batches: Iterator[pd.DataFrame], blob: bytes,
                   faiss_threads: int = 1) -> Iterator[pd.DataFrame]:
    """mapInPandas body: (sample_id, image_embedding) -> (sample_id, kmeans, distance, sha1)."""
    art = _artifacts(blob)
    index = clustering.get_index(art.centroids, art.fingerprint)
    with clustering.faiss_threads(faiss_threads):
        for batch in batches:
            if batch.empty:
                continue
            x = np.asarray(batch["image_embedding"].tolist(), dtype=np.float32)
            ids, dist = clustering.assign(art, x, index=index)
            yield pd.DataFrame({
                "sample_id": batch["sample_id"].to_numpy(dtype=np.int64),
                "kmeans": ids.astype(np.int64),
                "kmeans_distance": dist.astype(np.float32),
                "centroids_sha1": art.fingerprint,
            })
