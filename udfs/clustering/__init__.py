"""PCA + k-means cluster artifacts: train, save/load safely, and assign samples to centroids.

The paper reduces CLIP ViT-B/32 image features (512-d) to 256 dims with sklearn's
IncrementalPCA and clusters them with faiss k-means into 4000 centroids. The cluster id
(`kmeans`) is the nearest centroid. Artifacts are kept in pickle-free formats (npz/npy/json)
so that loading them on executors never runs code from a file; the paper's published
`pca.joblib` (a pickle) is only read when the caller explicitly trusts it.

One module per concern: `artifacts` (the arrays and their checks), `training`,
`artifact_files` (pickle-free storage), `published` (the paper's files), `assignment`
(nearest centroid), `faiss_runtime` (lazy import, thread cap); `python -m udfs.clustering`
is the conversion CLI (`cli`). This package re-exports their public names.
"""

from udfs.clustering.artifact_files import (
    artifacts_exist,
    deserialize_artifacts,
    load_artifacts,
    save_artifacts,
    serialize_artifacts,
)
from udfs.clustering.artifacts import (
    CENTROIDS_FILE,
    CONVERT_COMMAND,
    DEFAULT_EMBEDDING_MODEL,
    FORMAT_VERSION,
    MANIFEST_FILE,
    PCA_FILE,
    ArtifactError,
    ClusterArtifacts,
    UntrustedPickleError,
    centroids_fingerprint,
    same_embedding_model,
)
from udfs.clustering.assignment import assign, build_index, get_index
from udfs.clustering.cli import main
from udfs.clustering.faiss_runtime import faiss_threads
from udfs.clustering.published import convert_published, load_published
from udfs.clustering.training import artifacts_from_sklearn, train_artifacts

__all__ = [
    "CENTROIDS_FILE", "CONVERT_COMMAND", "DEFAULT_EMBEDDING_MODEL", "FORMAT_VERSION",
    "MANIFEST_FILE", "PCA_FILE", "ArtifactError", "ClusterArtifacts", "UntrustedPickleError",
    "artifacts_exist", "artifacts_from_sklearn", "assign", "build_index",
    "centroids_fingerprint", "convert_published", "deserialize_artifacts", "faiss_threads",
    "get_index", "load_artifacts", "load_published", "main", "same_embedding_model",
    "save_artifacts", "serialize_artifacts", "train_artifacts",
]
