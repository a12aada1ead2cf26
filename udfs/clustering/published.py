"""The paper's published pca.joblib (a pickle, trusted only on request) + centroids.npy."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

from udfs import storage
from udfs.clustering.artifact_files import (
    _load_centroids,
    _pca_from_arrays,
    _read_npz,
    save_artifacts,
)
from udfs.clustering.artifacts import (
    CONVERT_COMMAND,
    DEFAULT_EMBEDDING_MODEL,
    FORMAT_VERSION,
    ArtifactError,
    ClusterArtifacts,
    UntrustedPickleError,
    utc_now,
)
from udfs.clustering.training import artifacts_from_sklearn


def _read_published(path: str, what: str) -> bytes:
    try:
        return storage.read_bytes(path)
    except FileNotFoundError:
        raise ArtifactError(f"published {what} not found: {path}") from None


def load_published(
    pca_path: str | os.PathLike[str],
    centroids_path: str | os.PathLike[str],
    *,
    trust_pickle: bool = False,
    embedding_model: str = DEFAULT_EMBEDDING_MODEL,
) -> ClusterArtifacts:
    """Load the paper's `pca.joblib` (or a converted `.npz`) and `centroids.npy`.

    A joblib file is a pickle: loading it can execute arbitrary code, so it is refused
    unless `trust_pickle=True` (config `cluster.trust_pickle`). An `.npz` PCA holding
    `mean`, `components` and optionally `whiten_scale` needs no flag.
    """
    pca_path, centroids_path = str(pca_path), str(centroids_path)
    pca_bytes = _read_published(pca_path, "PCA")
    centroids = _load_centroids(io.BytesIO(_read_published(centroids_path, "centroids")),
                                centroids_path)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "source": "published",
        "embedding_model": embedding_model,
        "pca_source": os.path.basename(pca_path),
        "pca_source_sha256": hashlib.sha256(pca_bytes).hexdigest(),
        "centroids_source": os.path.basename(centroids_path),
        "created_at": utc_now(),
    }
    if pca_path.lower().endswith(".npz"):
        pca = _pca_from_arrays(_read_npz(io.BytesIO(pca_bytes), pca_path), pca_path)
        try:
            art = ClusterArtifacts(centroids=centroids, manifest=manifest, **pca)
        except ArtifactError as e:
            raise ArtifactError(f"{pca_path} + {centroids_path}: {e}") from e
    else:
        if not trust_pickle:
            raise UntrustedPickleError(
                f"{pca_path} is a joblib/pickle file, and unpickling runs arbitrary code "
                "stored in it. Set cluster.trust_pickle=true only if you trust where it came "
                f"from, or convert it once to the pickle-free format with `{CONVERT_COMMAND}` "
                "and point the job at the converted pca.npz."
            )
        import joblib

        pca_obj = joblib.load(io.BytesIO(pca_bytes))
        manifest["pca_class"] = type(pca_obj).__name__
        try:
            art = artifacts_from_sklearn(pca_obj, centroids, manifest)
        except ArtifactError as e:
            raise ArtifactError(f"{pca_path} + {centroids_path}: {e}") from e
    art.manifest.update(
        d_in=art.d_in, pca_dim=art.pca_dim, k=art.k, pca_whiten=art.pca_whiten_scale is not None
    )
    return art


def convert_published(
    pca_joblib: str | os.PathLike[str],
    centroids_npy: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    embedding_model: str = DEFAULT_EMBEDDING_MODEL,
) -> ClusterArtifacts:
    """Trusted, one-off conversion of the published pickle to the safe on-disk format."""
    art = load_published(
        pca_joblib, centroids_npy, trust_pickle=True, embedding_model=embedding_model
    )
    save_artifacts(art, out_dir)
    return art
