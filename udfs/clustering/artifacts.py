"""The cluster artifacts (PCA + centroids) as plain float32 arrays, and their errors.

Kept free of faiss and storage so executors and the driver import it cheaply.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

FORMAT_VERSION = 1
DEFAULT_EMBEDDING_MODEL = "ViT-B-32:openai"  # model:pretrained, as the scores table says


def same_embedding_model(a: str, b: str) -> bool:
    """`ViT-B-32:openai` == `ViT-B-32/openai` (the older spelling); case-insensitive."""
    def norm(name: str) -> str:
        name = name.strip()
        if ":" not in name and "/" in name:
            name = name.replace("/", ":", 1)
        return name.lower()

    return norm(a) == norm(b)


PCA_FILE = "pca.npz"
CENTROIDS_FILE = "centroids.npy"
MANIFEST_FILE = "manifest.json"
CONVERT_COMMAND = "python -m udfs.clustering convert PCA_JOBLIB CENTROIDS_NPY OUT_DIR"


class ArtifactError(ValueError):
    """Cluster artifacts that are missing, malformed or inconsistent with each other."""


class UntrustedPickleError(ArtifactError):
    """A pickle-based artifact was given without the explicit trust flag."""


@dataclass(eq=False)
class ClusterArtifacts:
    """Everything needed to map an embedding to its cluster id, as plain float32 arrays.

    `pca_whiten_scale`, when set, is the per-component divisor sklearn applies when the PCA
    was fitted with `whiten=True`: sqrt(explained_variance_) clipped below at eps.
    """

    pca_mean: np.ndarray
    pca_components: np.ndarray
    centroids: np.ndarray
    pca_whiten_scale: np.ndarray | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    _offset: np.ndarray = field(init=False, repr=False)
    _fingerprint: str | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self.pca_mean = _float32_array(self.pca_mean, "pca_mean", ndim=1)
        self.pca_components = _float32_array(self.pca_components, "pca_components", ndim=2)
        self.centroids = _float32_array(self.centroids, "centroids", ndim=2)
        d_out, d_in = self.pca_components.shape
        if self.pca_mean.shape != (d_in,):
            raise ArtifactError(
                f"pca_mean has shape {self.pca_mean.shape}, expected ({d_in},) to match "
                f"pca_components {self.pca_components.shape}"
            )
        if self.pca_whiten_scale is not None:
            self.pca_whiten_scale = _float32_array(self.pca_whiten_scale, "pca_whiten_scale", 1)
            if self.pca_whiten_scale.shape != (d_out,):
                raise ArtifactError(
                    f"pca_whiten_scale has shape {self.pca_whiten_scale.shape}, expected ({d_out},)"
                )
        if self.centroids.shape[1] != d_out:
            raise ArtifactError(
                f"centroids have shape {self.centroids.shape} but the PCA outputs {d_out} "
                f"dims: expected (k, {d_out}); the centroids and PCA do not belong together"
            )
        # sklearn centres after projecting (x @ W.T - mean @ W.T); doing the same keeps
        # float32 results within rounding of `pca.transform`.
        offset = self.pca_mean.astype(np.float64) @ self.pca_components.T.astype(np.float64)
        self._offset = offset.astype(np.float32)

    @property
    def d_in(self) -> int:
        return int(self.pca_components.shape[1])

    @property
    def pca_dim(self) -> int:
        return int(self.pca_components.shape[0])

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def fingerprint(self) -> str:
        """sha1 of the centroids: the cache key for the search index and a lineage id."""
        if self._fingerprint is None:
            self._fingerprint = centroids_fingerprint(self.centroids)
        return self._fingerprint

    def project(self, x: np.ndarray) -> np.ndarray:
        """Same result as sklearn's `pca.transform(x)` (float32, shape (n, pca_dim))."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"expected embeddings of shape (n, {self.d_in}), got {x.shape}")
        out = x.astype(np.float32, copy=False) @ self.pca_components.T
        out -= self._offset
        if self.pca_whiten_scale is not None:
            out /= self.pca_whiten_scale
        return out


def _float32_array(a: Any, name: str, ndim: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != ndim:
        raise ArtifactError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ArtifactError(f"{name} must hold floats, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ArtifactError(f"{name} contains NaN or infinite values")
    return arr


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def centroids_fingerprint(centroids: np.ndarray) -> str:
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    h = hashlib.sha1(str(c.shape).encode())
    h.update(c.tobytes())
    return h.hexdigest()

