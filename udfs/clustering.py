"""PCA + k-means cluster artifacts: train, save/load safely, and assign samples to centroids.

The paper reduces CLIP ViT-B/32 image features (512-d) to 256 dims with sklearn's
IncrementalPCA and clusters them with faiss k-means into 4000 centroids. The cluster id
(`kmeans`) is the nearest centroid. Artifacts are kept in pickle-free formats (npz/npy/json)
so that loading them on executors never runs code from a file; the paper's published
`pca.joblib` (a pickle) is only read when the caller explicitly trusts it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from udfs import storage
from udfs.worker_cache import worker_cached

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


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _faiss():
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
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


# --------------------------------------------------------------------------- training


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
    faiss = _faiss()
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
        "created_at": _utc_now(),
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


# --------------------------------------------------------------------------- safe storage


def _pca_arrays(art: ClusterArtifacts) -> dict[str, np.ndarray]:
    arrays = {"mean": art.pca_mean, "components": art.pca_components}
    if art.pca_whiten_scale is not None:
        arrays["whiten_scale"] = art.pca_whiten_scale
    return arrays


def _read_npz(source: Any, what: str) -> dict[str, np.ndarray]:
    try:
        with np.load(source, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except ValueError as e:  # raised for object arrays when allow_pickle=False
        raise ArtifactError(f"{what}: cannot load without pickle ({e})") from e


def _pca_from_arrays(arrays: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray | None]:
    missing = {"mean", "components"} - arrays.keys()
    if missing:
        raise ArtifactError(f"{what} lacks arrays {sorted(missing)} (has {sorted(arrays)})")
    return {
        "pca_mean": arrays["mean"],
        "pca_components": arrays["components"],
        "pca_whiten_scale": arrays.get("whiten_scale"),
    }


def save_artifacts(art: ClusterArtifacts, directory: str | os.PathLike[str]) -> str:
    """Write `pca.npz`, `centroids.npy` and `manifest.json` (no pickles) into `directory`
    (a local/mounted folder or a URL, udfs/storage.py), the manifest last."""
    out = str(directory)
    storage.makedirs(out)
    pca = io.BytesIO()
    np.savez(pca, **_pca_arrays(art))
    storage.write_bytes(storage.join(out, PCA_FILE), pca.getvalue())
    centroids = io.BytesIO()
    np.save(centroids, art.centroids, allow_pickle=False)
    storage.write_bytes(storage.join(out, CENTROIDS_FILE), centroids.getvalue())
    manifest = {**art.manifest, "format_version": FORMAT_VERSION}
    manifest["centroids_sha1"] = art.fingerprint
    storage.write_text(storage.join(out, MANIFEST_FILE),
                       json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out


def artifacts_exist(directory: str) -> bool:
    """A complete set: the manifest is written last."""
    return storage.isfile(storage.join(str(directory), MANIFEST_FILE))


def _check_manifest(manifest: dict[str, Any], where: str) -> None:
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ArtifactError(
            f"{where}: format_version {version!r} is not supported (this code reads "
            f"<= {FORMAT_VERSION})"
        )


def load_artifacts(directory: str | os.PathLike[str]) -> ClusterArtifacts:
    """Load what `save_artifacts` wrote, refusing pickled content."""
    src = str(directory)
    blobs = {}
    for name in (PCA_FILE, CENTROIDS_FILE, MANIFEST_FILE):
        try:
            blobs[name] = storage.read_bytes(storage.join(src, name))
        except FileNotFoundError:
            raise ArtifactError(f"cluster artifacts in {src} lack {name}") from None
    where = storage.join(src, MANIFEST_FILE)
    manifest = json.loads(blobs[MANIFEST_FILE].decode("utf-8"))
    _check_manifest(manifest, where)
    pca_where = storage.join(src, PCA_FILE)
    pca = _pca_from_arrays(_read_npz(io.BytesIO(blobs[PCA_FILE]), pca_where), pca_where)
    centroids = _load_centroids(io.BytesIO(blobs[CENTROIDS_FILE]),
                                storage.join(src, CENTROIDS_FILE))
    art = ClusterArtifacts(centroids=centroids, manifest=manifest, **pca)
    expected = manifest.get("centroids_sha1")
    if expected and expected != art.fingerprint:
        raise ArtifactError(f"{src}: centroids do not match the sha1 in {MANIFEST_FILE}")
    return art


def _load_centroids(source: Any, where: str) -> np.ndarray:
    try:
        c = np.load(source, allow_pickle=False)
    except ValueError as e:
        raise ArtifactError(f"{where}: cannot load centroids without pickle ({e})") from e
    if not isinstance(c, np.ndarray) or c.ndim != 2:
        raise ArtifactError(f"{where}: centroids must be a 2-D (k, pca_dim) array")
    return c


def serialize_artifacts(art: ClusterArtifacts) -> bytes:
    """One npz blob (no pickle) that Spark can broadcast as plain bytes."""
    buf = io.BytesIO()
    manifest = np.frombuffer(json.dumps(art.manifest, sort_keys=True).encode(), dtype=np.uint8)
    np.savez(buf, centroids=art.centroids, manifest_json=manifest, **_pca_arrays(art))
    return buf.getvalue()


def deserialize_artifacts(blob: bytes) -> ClusterArtifacts:
    """Inverse of `serialize_artifacts`; refuses pickled arrays."""
    arrays = _read_npz(io.BytesIO(blob), "serialized cluster artifacts")
    if "centroids" not in arrays:
        raise ArtifactError("serialized cluster artifacts lack `centroids`")
    manifest_raw = arrays.get("manifest_json")
    manifest = json.loads(manifest_raw.tobytes().decode()) if manifest_raw is not None else {}
    pca = _pca_from_arrays(arrays, "serialized cluster artifacts")
    return ClusterArtifacts(centroids=arrays["centroids"], manifest=manifest, **pca)


# --------------------------------------------------------------------------- published


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
        "created_at": _utc_now(),
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


# --------------------------------------------------------------------------- assignment

def centroids_fingerprint(centroids: np.ndarray) -> str:
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    h = hashlib.sha1(str(c.shape).encode())
    h.update(c.tobytes())
    return h.hexdigest()


def build_index(centroids: np.ndarray) -> Any:
    """Exact L2 index over the centroids (4000 x 256 is ~4 MB: brute force is right)."""
    faiss = _faiss()
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


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """`convert`: turn the published pca.joblib + centroids.npy into pickle-free artifacts."""
    parser = argparse.ArgumentParser(prog="python -m udfs.clustering")
    sub = parser.add_subparsers(dest="cmd", required=True)
    conv = sub.add_parser("convert", help="trusted one-off conversion of pca.joblib")
    conv.add_argument("pca_joblib")
    conv.add_argument("centroids_npy")
    conv.add_argument("out_dir")
    conv.add_argument("--embedding-model", default=DEFAULT_EMBEDDING_MODEL)
    args = parser.parse_args(argv)
    art = convert_published(
        args.pca_joblib, args.centroids_npy, args.out_dir, embedding_model=args.embedding_model
    )
    print(f"wrote {args.out_dir}: d_in={art.d_in} pca_dim={art.pca_dim} k={art.k}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
