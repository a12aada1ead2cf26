"""Fit the paper's IncrementalPCA + faiss k-means on a driver-side sample."""

from __future__ import annotations

from typing import Any

import numpy as np

from udfs.clustering.artifacts import (
    DEFAULT_EMBEDDING_MODEL,
    FORMAT_VERSION,
    ArtifactError,
    ClusterArtifacts,
    utc_now,
)
from udfs.clustering.faiss_runtime import faiss_module


def _whiten_scale(explained_variance: np.ndarray) -> np.ndarray:
    """The divisor sklearn uses for whitening, clipped exactly as `_BasePCA._transform` does."""
    scale = np.sqrt(np.asarray(explained_variance, dtype=np.float64))
    eps = np.finfo(np.asarray(explained_variance).dtype).eps
    return np.maximum(scale, eps)


def artifacts_from_sklearn(
    pca: Any, centroids: np.ndarray, manifest: dict[str, Any] | None = None
) -> ClusterArtifacts:
    """Copy the arrays a fitted sklearn PCA / IncrementalPCA uses in `transform`."""
    for attr in ("components_", "mean_"):
        if not hasattr(pca, attr):
            raise ArtifactError(
                f"object of type {type(pca).__name__} has no `{attr}`: not a fitted sklearn PCA"
            )
    components = np.asarray(pca.components_)
    mean = np.asarray(pca.mean_)
    if mean.ndim != 1 or mean.shape[0] != components.shape[-1]:
        # PCA fitted with copy/centering quirks could store a scalar mean; refuse rather
        # than silently broadcast.
        raise ArtifactError(f"PCA mean_ shape {mean.shape} does not match {components.shape}")
    scale = _whiten_scale(pca.explained_variance_) if getattr(pca, "whiten", False) else None
    return ClusterArtifacts(
        pca_mean=mean,
        pca_components=components,
        centroids=centroids,
        pca_whiten_scale=scale,
        manifest=dict(manifest or {}),
    )


def train_artifacts(
    embeddings: np.ndarray,
    *,
    pca_dim: int = 256,
    k: int = 4000,
    niter: int = 300,
    nredo: int = 10,
    seed: int = 42,
    min_points_per_centroid: int = 10_000,
    max_points_per_centroid: int = 200_000,
    whiten: bool = False,
    use_gpu: bool | None = None,
    batch_size: int = 65_536,
    embedding_model: str = DEFAULT_EMBEDDING_MODEL,
    verbose: bool = False,
) -> ClusterArtifacts:
    """Fit IncrementalPCA then faiss k-means on a driver-side sample, as the paper did.

    The PCA is fitted batch by batch (`batch_size` rows per `partial_fit`) so the SVD
    working set stays small. `use_gpu=None` uses faiss GPUs when there are any.
    """
    faiss = faiss_module()
    x = _checked_sample(embeddings, k, pca_dim, batch_size)
    n, d_in = x.shape
    n_gpus = faiss.get_num_gpus()
    if use_gpu and n_gpus == 0:
        raise RuntimeError("use_gpu=True but faiss sees no GPU (is faiss-gpu installed?)")
    gpu = bool(n_gpus > 0 and use_gpu is not False)
    pca, pca_only = _fit_pca(x, pca_dim, whiten, batch_size)
    projected = np.ascontiguousarray(pca_only.project(x))

    km = faiss.Kmeans(
        pca_dim,
        k,
        niter=niter,
        nredo=nredo,
        seed=seed,
        min_points_per_centroid=min_points_per_centroid,
        max_points_per_centroid=max_points_per_centroid,
        gpu=gpu,
        verbose=verbose,
    )
    km.train(projected)
    art = ClusterArtifacts(
        pca_mean=pca_only.pca_mean,
        pca_components=pca_only.pca_components,
        pca_whiten_scale=pca_only.pca_whiten_scale,
        centroids=np.asarray(km.centroids).reshape(k, pca_dim),
    )
    art.manifest = {
        "format_version": FORMAT_VERSION,
        "source": "trained",
        "embedding_model": embedding_model,
        "d_in": int(d_in),
        "pca_dim": int(pca_dim),
        "pca_whiten": bool(whiten),
        "pca_explained_variance_ratio": float(np.sum(pca.explained_variance_ratio_)),
        "k": int(k),
        "niter": int(niter),
        "nredo": int(nredo),
        "seed": int(seed),
        "min_points_per_centroid": int(min_points_per_centroid),
        "max_points_per_centroid": int(max_points_per_centroid),
        "sample_size": int(n),
        "kmeans_objective": float(km.obj[-1]) if len(km.obj) else None,
        "gpu": gpu,
        "faiss_version": faiss.__version__,
        "created_at": utc_now(),
        "centroids_sha1": art.fingerprint,
    }
    return art


def _checked_sample(embeddings: np.ndarray, k: int, pca_dim: int, batch_size: int) -> np.ndarray:
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, d), got shape {x.shape}")
    n, d_in = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k={k} centroids need at least k samples; got {n} samples")
    if not 1 <= pca_dim <= min(n, d_in):
        raise ValueError(f"pca_dim={pca_dim} must be in [1, min(n_samples={n}, d_in={d_in})]")
    if batch_size < pca_dim:
        raise ValueError(f"batch_size={batch_size} must be >= pca_dim={pca_dim}")
    return x


def _fit_pca(x: np.ndarray, pca_dim: int, whiten: bool, batch_size: int):
    """IncrementalPCA batch by batch; returns (sklearn model, PCA-only artifacts)."""
    from sklearn.decomposition import IncrementalPCA
    from sklearn.utils import gen_batches

    pca = IncrementalPCA(n_components=pca_dim, whiten=whiten, batch_size=batch_size)
    # gen_batches folds a too-small tail into full-size batches (partial_fit needs
    # >= n_components rows); each slice is copied by partial_fit, never the whole sample.
    for sl in gen_batches(len(x), batch_size, min_batch_size=pca_dim):
        pca.partial_fit(x[sl])
    return pca, artifacts_from_sklearn(pca, np.zeros((1, pca_dim), np.float32))
