"""Save and load artifacts without pickles (npz/npy/json), and as one broadcastable blob."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np

from udfs import storage
from udfs.clustering.artifacts import (
    CENTROIDS_FILE,
    FORMAT_VERSION,
    MANIFEST_FILE,
    PCA_FILE,
    ArtifactError,
    ClusterArtifacts,
)


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
