"""Near-duplicate grouping: one keeper per group, order independence, block invariance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from udfs import dedup


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _with_duplicates(seed: int = 0, d: int = 64):
    """30 random bases; base b gets b % 4 extra copies (exact or tiny noise): 75 rows."""
    rng = np.random.default_rng(seed)
    bases = _unit(rng.standard_normal((30, d)))
    rows, group = [], []
    for b in range(30):
        for c in range(1 + b % 4):
            noise = 0.0 if c == 1 else 0.01
            rows.append(bases[b] + noise * rng.standard_normal(d) / np.sqrt(d))
            group.append(b)
    emb = _unit(np.asarray(rows))
    ids = rng.permutation(10_000)[: len(rows)].astype(np.int64)
    scores = rng.integers(0, 3, len(rows)).astype(np.float64)  # many ties on purpose
    return ids, emb, scores, np.asarray(group)


def _expected_keepers(ids, scores, group) -> dict[int, int]:
    keeper = {}
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        best = min(members, key=lambda i: (-scores[i], ids[i]))
        keeper[int(g)] = int(ids[best])
    return keeper


def test_one_keeper_per_group_highest_score_then_smallest_id() -> None:
    ids, emb, scores, group = _with_duplicates()
    res = dedup.find_near_duplicates(ids, emb, scores, threshold=0.95)
    expected = _expected_keepers(ids, scores, group)
    assert [expected[g] for g in group] == res.keeper_ids.tolist()
    assert res.keep.sum() == 30
    assert res.group_size.tolist() == [1 + g % 4 for g in group]
    singles = res.group_size == 1
    assert np.isnan(res.max_sim[singles]).all()
    assert (res.max_sim[~singles] >= 0.95).all() and (res.max_sim[~singles] <= 1.0001).all()
    mask = dedup.find_near_duplicates(ids, emb, scores).keep
    np.testing.assert_array_equal(mask, res.keep)


def test_no_scores_keeps_smallest_id_and_nan_score_ranks_last() -> None:
    emb = _unit(np.ones((3, 8)))
    ids = np.array([7, 3, 5])
    assert dedup.near_duplicate_groups(ids, emb).tolist() == [3, 3, 3]
    scores = np.array([np.nan, np.nan, -5.0])
    assert dedup.near_duplicate_groups(ids, emb, scores).tolist() == [5, 5, 5]


def test_distinct_vectors_are_all_kept() -> None:
    emb = _unit(np.random.default_rng(1).standard_normal((500, 128)))
    ids = np.arange(500)
    res = dedup.find_near_duplicates(ids, emb, threshold=0.9, block_size=64)
    assert res.keep.all() and (res.keeper_ids == ids).all() and (res.group_size == 1).all()


def test_order_independent_under_shuffle() -> None:
    ids, emb, scores, _ = _with_duplicates(seed=2)
    ref = dict(
        zip(ids.tolist(), dedup.near_duplicate_groups(ids, emb, scores).tolist(), strict=True)
    )
    rng = np.random.default_rng(5)
    for _ in range(3):
        p = rng.permutation(len(ids))
        got = dedup.near_duplicate_groups(ids[p], emb[p], scores[p], block_size=7)
        assert dict(zip(ids[p].tolist(), got.tolist(), strict=True)) == ref


@pytest.mark.parametrize("block_size", [1, 5, 16, 74, 75, 1000])
def test_block_size_does_not_change_result(block_size: int) -> None:
    ids, emb, scores, _ = _with_duplicates(seed=3)
    full = dedup.find_near_duplicates(ids, emb, scores, block_size=4096)
    part = dedup.find_near_duplicates(ids, emb, scores, block_size=block_size)
    np.testing.assert_array_equal(part.keeper_ids, full.keeper_ids)
    np.testing.assert_array_equal(part.group_size, full.group_size)
    np.testing.assert_allclose(part.max_sim, full.max_sim, rtol=1e-6)


def test_dense_and_faiss_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    base = _unit(rng.standard_normal((300, 32)))
    emb = _unit(np.concatenate([base, base[:150] + 0.02 * rng.standard_normal((150, 32))]))
    ids = rng.permutation(450)
    scores = rng.random(450)
    dense = dedup.find_near_duplicates(ids, emb, scores, block_size=4096)
    monkeypatch.setattr(dedup, "DENSE_MAX_ROWS", 0)
    blocked = dedup.find_near_duplicates(ids, emb, scores, block_size=64)
    np.testing.assert_array_equal(blocked.keeper_ids, dense.keeper_ids)
    np.testing.assert_allclose(blocked.max_sim, dense.max_sim, rtol=1e-5)
    assert dense.keep.sum() == 300


def _chain(angle_step: float, n: int) -> np.ndarray:
    """Unit vectors on a circle, neighbours `angle_step` radians apart."""
    t = np.arange(n) * angle_step
    return np.stack([np.cos(t), np.sin(t)], axis=1).astype(np.float32)


def test_chains_group_transitively_single_linkage() -> None:
    # cos(0.25) = 0.969 links neighbours; cos(0.5) = 0.878 does not link A and C directly,
    # yet all five rows form one group (connected components, not cliques).
    emb = _chain(0.25, 5)
    assert float(emb[0] @ emb[2]) < 0.95
    ids = np.arange(10, 15)
    res = dedup.find_near_duplicates(ids, emb, np.array([0, 0, 9, 0, 0.0]), block_size=2)
    assert res.keeper_ids.tolist() == [12] * 5 and res.group_size.tolist() == [5] * 5
    # Breaking the chain in the middle (a 0.5 rad gap) yields two groups.
    emb2 = np.concatenate([_chain(0.25, 3), _chain(0.25, 2) @ _rot(1.0)])
    res2 = dedup.find_near_duplicates(ids, emb2)
    assert res2.keeper_ids.tolist() == [10, 10, 10, 13, 13]


def _rot(a: float) -> np.ndarray:
    return np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]], dtype=np.float32)


def test_threshold_is_inclusive() -> None:
    emb = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)  # cosine exactly 0.6
    assert dedup.near_duplicate_groups(np.array([1, 2]), emb, threshold=0.6).tolist() == [1, 1]
    assert dedup.near_duplicate_groups(np.array([1, 2]), emb, threshold=0.61).tolist() == [1, 2]


def test_unnormalised_and_zero_rows() -> None:
    emb = np.array([[2.0, 0.0], [5.0, 0.01], [0.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    assert dedup.near_duplicate_groups(np.arange(4), emb).tolist() == [0, 0, 2, 3]


def test_edge_cases_and_validation() -> None:
    assert dedup.near_duplicate_groups(np.array([4]), np.ones((1, 3))).tolist() == [4]
    assert dedup.near_duplicate_groups(np.empty(0, np.int64), np.empty((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match="unique"):
        dedup.near_duplicate_groups(np.array([1, 1]), np.eye(2))
    with pytest.raises(ValueError, match="shape"):
        dedup.near_duplicate_groups(np.array([1, 2]), np.eye(3))
    with pytest.raises(ValueError, match="threshold"):
        dedup.near_duplicate_groups(np.array([1, 2]), np.eye(2), threshold=1.5)


def test_dedup_frame_lists_and_bytes() -> None:
    ids, emb, scores, group = _with_duplicates(seed=4)
    pdf = pd.DataFrame({"key": ids, "vec": list(emb), "clip": scores})
    out = dedup.dedup_frame(pdf, id_col="key", emb_col="vec", score_col="clip")
    assert list(out.columns) == ["key", "keeper_id", "group_size", "max_sim"]
    assert out["keeper_id"].dtype == np.int64 and out["group_size"].dtype == np.int32
    expected = _expected_keepers(ids, scores, group)
    assert out["keeper_id"].tolist() == [expected[g] for g in group]
    as_bytes = pd.DataFrame({"id": ids, "embedding": [v.astype("<f2").tobytes() for v in emb]})
    out16 = dedup.dedup_frame(as_bytes, emb_dtype="float16")
    assert out16["keeper_id"].tolist() == [min(ids[group == g]) for g in group]
    empty = dedup.dedup_frame(pd.DataFrame({"id": [], "embedding": []}))
    assert empty.empty and list(empty.columns) == ["id", "keeper_id", "group_size", "max_sim"]
