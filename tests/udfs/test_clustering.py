"""Cluster artifacts: projection equals sklearn, safe storage, published-pickle trust gate."""

from __future__ import annotations

import json

import faiss
import joblib
import numpy as np
import pytest
from sklearn.decomposition import PCA, IncrementalPCA

from udfs import clustering as cl


def _data(n: int = 2000, d: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, d)) * 3
    x = centres[rng.integers(0, 8, n)] + rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def trained() -> cl.ClusterArtifacts:
    return cl.train_artifacts(
        _data(), pca_dim=16, k=8, niter=10, nredo=2, min_points_per_centroid=5, batch_size=500
    )


def _centroids(pca_dim: int, k: int = 5, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((k, pca_dim)).astype(np.float32)


@pytest.mark.parametrize("whiten", [False, True])
@pytest.mark.parametrize("cls", [IncrementalPCA, PCA])
def test_project_matches_sklearn_transform(cls: type, whiten: bool) -> None:
    x = _data()
    extra = {"batch_size": 1000} if cls is IncrementalPCA else {}
    pca = cls(n_components=16, whiten=whiten, **extra).fit(x)
    art = cl.artifacts_from_sklearn(pca, _centroids(16))
    assert (art.pca_whiten_scale is not None) == whiten
    y = art.project(x)
    assert y.dtype == np.float32 and y.shape == (2000, 16)
    expected = pca.transform(x)
    tol = 1e-5 * float(np.abs(expected).max())
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=tol)
    # float64 input goes through the same float32 path
    np.testing.assert_allclose(art.project(x.astype(np.float64)), expected, rtol=1e-4, atol=tol)


def test_project_rejects_wrong_width(trained: cl.ClusterArtifacts) -> None:
    with pytest.raises(ValueError, match=r"\(n, 64\)"):
        trained.project(np.zeros((3, 32), np.float32))


def test_train_artifacts_manifest_and_shapes(trained: cl.ClusterArtifacts) -> None:
    assert trained.pca_components.shape == (16, 64)
    assert trained.centroids.shape == (8, 16) and trained.centroids.dtype == np.float32
    m = trained.manifest
    for key in ("embedding_model", "created_at", "faiss_version", "format_version"):
        assert m[key]
    assert (m["d_in"], m["pca_dim"], m["k"], m["niter"], m["nredo"], m["seed"]) == (
        64,
        16,
        8,
        10,
        2,
        42,
    )
    assert m["sample_size"] == 2000 and m["min_points_per_centroid"] == 5
    assert m["gpu"] is False and m["created_at"].endswith("+00:00")
    ids, _ = cl.assign(trained, _data())
    assert len(np.unique(ids)) == 8  # well-separated blobs: every centroid is used


def test_train_is_deterministic_for_a_seed(trained: cl.ClusterArtifacts) -> None:
    again = cl.train_artifacts(
        _data(), pca_dim=16, k=8, niter=10, nredo=2, min_points_per_centroid=5, batch_size=500
    )
    np.testing.assert_allclose(again.centroids, trained.centroids, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 3000}, "at least k samples"),
        ({"pca_dim": 65}, "pca_dim=65"),
        ({"use_gpu": True}, "no GPU"),
    ],
)
def test_train_validation(kwargs: dict, match: str) -> None:
    args = {"pca_dim": 16, "k": 8, "niter": 2, "nredo": 1, "min_points_per_centroid": 1}
    exc = RuntimeError if "use_gpu" in kwargs else ValueError
    if faiss.get_num_gpus() > 0 and "use_gpu" in kwargs:
        pytest.skip("machine has a GPU")
    with pytest.raises(exc, match=match):
        cl.train_artifacts(_data(), **{**args, **kwargs})


def _same(a: cl.ClusterArtifacts, b: cl.ClusterArtifacts) -> None:
    np.testing.assert_array_equal(a.pca_mean, b.pca_mean)
    np.testing.assert_array_equal(a.pca_components, b.pca_components)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    if a.pca_whiten_scale is None:
        assert b.pca_whiten_scale is None
    else:
        np.testing.assert_array_equal(a.pca_whiten_scale, b.pca_whiten_scale)


def test_save_load_round_trip(trained: cl.ClusterArtifacts, tmp_path) -> None:
    cl.save_artifacts(trained, tmp_path / "art")
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == [
        "centroids.npy",
        "manifest.json",
        "pca.npz",
    ]
    loaded = cl.load_artifacts(tmp_path / "art")
    _same(trained, loaded)
    assert loaded.manifest["centroids_sha1"] == trained.fingerprint
    assert loaded.manifest["k"] == 8


def test_load_detects_tampered_centroids(trained: cl.ClusterArtifacts, tmp_path) -> None:
    cl.save_artifacts(trained, tmp_path)
    np.save(tmp_path / "centroids.npy", trained.centroids + 1)
    with pytest.raises(cl.ArtifactError, match="sha1"):
        cl.load_artifacts(tmp_path)


def test_load_refuses_future_format(trained: cl.ClusterArtifacts, tmp_path) -> None:
    cl.save_artifacts(trained, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(cl.ArtifactError, match="format_version 99"):
        cl.load_artifacts(tmp_path)


def test_serialize_round_trip_with_whiten() -> None:
    x = _data()
    pca = IncrementalPCA(n_components=16, whiten=True, batch_size=1000).fit(x)
    art = cl.artifacts_from_sklearn(pca, _centroids(16), {"note": "ü"})
    blob = cl.serialize_artifacts(art)
    assert isinstance(blob, bytes) and b"pickle" not in blob
    back = cl.deserialize_artifacts(blob)
    _same(art, back)
    assert back.manifest == {"note": "ü"}
    np.testing.assert_array_equal(back.project(x), art.project(x))


def test_assign_matches_direct_faiss_search(trained: cl.ClusterArtifacts) -> None:
    x = _data(n=500, seed=3)
    pca_like = IncrementalPCA(n_components=16)
    pca_like.components_ = trained.pca_components.astype(np.float64)
    pca_like.mean_ = trained.pca_mean.astype(np.float64)
    pca_like.n_features_in_ = 64
    index = faiss.IndexFlatL2(16)
    index.add(trained.centroids)
    d_ref, i_ref = index.search(pca_like.transform(x).astype(np.float32), 1)
    ids, dist = cl.assign(trained, x)
    assert ids.dtype == np.int64 and dist.dtype == np.float32
    np.testing.assert_array_equal(ids, i_ref[:, 0])
    np.testing.assert_allclose(dist, d_ref[:, 0], rtol=1e-4, atol=1e-5)
    ids2, _ = cl.assign(trained, x, index=cl.build_index(trained.centroids))
    np.testing.assert_array_equal(ids2, ids)
    empty_ids, empty_d = cl.assign(trained, np.empty((0, 64), np.float32))
    assert empty_ids.shape == (0,) and empty_d.shape == (0,)


def test_index_is_cached_per_process(trained: cl.ClusterArtifacts) -> None:
    first = cl.get_index(trained.centroids)
    copy = cl.deserialize_artifacts(cl.serialize_artifacts(trained))
    assert cl.get_index(copy.centroids, copy.fingerprint) is first
    assert cl.get_index(trained.centroids + 1) is not first


def _published(tmp_path, whiten: bool = False, pca_dim: int = 16):
    x = _data()
    pca = IncrementalPCA(n_components=pca_dim, whiten=whiten, batch_size=1000).fit(x)
    joblib.dump(pca, tmp_path / "pca.joblib")
    np.save(tmp_path / "centroids.npy", _centroids(pca_dim, k=7))
    return x, pca


def test_published_joblib_refused_without_trust_flag(tmp_path) -> None:
    _published(tmp_path)
    with pytest.raises(cl.UntrustedPickleError) as err:
        cl.load_published(tmp_path / "pca.joblib", tmp_path / "centroids.npy")
    message = str(err.value)
    assert "cluster.trust_pickle" in message
    assert "arbitrary code" in message
    assert "python -m udfs.clustering convert" in message


@pytest.mark.parametrize("whiten", [False, True])
def test_published_joblib_accepted_with_trust_flag(tmp_path, whiten: bool) -> None:
    x, pca = _published(tmp_path, whiten=whiten)
    art = cl.load_published(tmp_path / "pca.joblib", tmp_path / "centroids.npy", trust_pickle=True)
    assert art.k == 7 and art.pca_dim == 16 and art.d_in == 64
    assert art.manifest["pca_class"] == "IncrementalPCA"
    expected = pca.transform(x)
    np.testing.assert_allclose(art.project(x), expected, rtol=1e-4, atol=1e-5)


def test_published_centroid_shape_mismatch(tmp_path) -> None:
    _published(tmp_path)
    np.save(tmp_path / "centroids.npy", _centroids(32))
    with pytest.raises(cl.ArtifactError, match=r"expected \(k, 16\)"):
        cl.load_published(tmp_path / "pca.joblib", tmp_path / "centroids.npy", trust_pickle=True)


def test_published_centroids_must_not_be_pickled(tmp_path) -> None:
    _published(tmp_path)
    np.save(tmp_path / "centroids.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(cl.ArtifactError, match="without pickle"):
        cl.load_published(tmp_path / "pca.joblib", tmp_path / "centroids.npy", trust_pickle=True)


def test_convert_then_npz_needs_no_flag(tmp_path) -> None:
    x, pca = _published(tmp_path, whiten=True)
    assert cl.main(["convert", str(tmp_path / "pca.joblib"), str(tmp_path / "centroids.npy"),
                    str(tmp_path / "safe")]) == 0  # fmt: skip
    art = cl.load_published(tmp_path / "safe" / "pca.npz", tmp_path / "safe" / "centroids.npy")
    np.testing.assert_allclose(art.project(x), pca.transform(x), rtol=1e-4, atol=1e-5)
    same = cl.load_artifacts(tmp_path / "safe")
    _same(art, same)
    assert same.manifest["source"] == "published" and same.manifest["pca_whiten"] is True
    assert len(same.manifest["pca_source_sha256"]) == 64


def test_convert_published_returns_artifacts(tmp_path) -> None:
    x, pca = _published(tmp_path)
    art = cl.convert_published(tmp_path / "pca.joblib", tmp_path / "centroids.npy", tmp_path / "o")
    _same(art, cl.load_artifacts(tmp_path / "o"))


def test_faiss_threads_restores_setting() -> None:
    before = faiss.omp_get_max_threads()
    with cl.faiss_threads(1):
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before
    with cl.faiss_threads(None):
        assert faiss.omp_get_max_threads() == before
