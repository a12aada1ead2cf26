"""Sub-cluster splitting for dedup: sizes, determinism, nearest centroid."""

import numpy as np

from udfs.subclusters import (
    SAMPLE_ROWS_PER_PART,
    nearest,
    parts_for,
    sample_fraction,
    train_subcentroids,
)


def test_parts_leave_room_for_uneven_clusters() -> None:
    assert parts_for(20_001, 20_000) == 3
    assert parts_for(580_000, 20_000) == 58
    assert parts_for(3, 2) == 3
    assert sample_fraction(580_000, 58) == SAMPLE_ROWS_PER_PART * 58 / 580_000
    assert sample_fraction(10, 2) == 1.0


def test_subcentroids_do_not_depend_on_row_order() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8))
    x = np.concatenate([c + 0.05 * rng.normal(size=(50, 8)) for c in centres])
    ids = np.arange(200)
    a = train_subcentroids(ids, x, 4, seed=1)
    perm = rng.permutation(200)
    b = train_subcentroids(ids[perm], x[perm], 4, seed=1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)  # spherical
    labels = nearest(x, a)
    # Each planted blob lands in one sub-cluster, and the four are different.
    assert [len(set(labels[i * 50:(i + 1) * 50])) for i in range(4)] == [1, 1, 1, 1]
    assert len(set(labels)) == 4


def test_fewer_rows_than_parts_gives_fewer_centroids() -> None:
    x = np.eye(3, 5, dtype=np.float32)
    c = train_subcentroids(np.arange(3), x, 10, seed=0)
    assert c.shape == (3, 5)
    assert nearest(x, c).dtype == np.int32
