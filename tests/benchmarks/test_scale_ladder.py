"""benchmarks/scale_ladder.py's arithmetic: the fixed cost and the linearity ratio."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import scale_ladder as ladder  # noqa: E402

SIZES = [1_000, 10_000, 30_000, 100_000, 1_000_000]


def _results(seconds: dict[int, float]) -> dict[int, dict]:
    return {n: {"seconds": s, "driver_py_mib": 140.0, "jvm_heap_mib": 110.0,
                "jvm_peak_mib": 1000.0, "worker_peak_mib": 0.0} for n, s in seconds.items()}


def _stage(fixed: float, seconds_per_row, sizes=SIZES) -> dict[int, dict]:
    return _results({n: fixed + seconds_per_row(n) * n for n in sizes})


def test_a_linear_stage_gives_one_and_passes():
    ratio, resolved = ladder.linearity(_stage(20.0, lambda n: 1e-4), SIZES)
    assert resolved and abs(ratio - 1.0) < 0.01


def test_a_cost_that_grows_with_rows_fails():
    # Per-row cost growing with n (work quadratic in rows): ~10x over the last step.
    ratio, resolved = ladder.linearity(_stage(20.0, lambda n: 1e-9 * n), SIZES)
    assert resolved and ratio > 5
    # A per-row cost that doubles only in the last step.
    doubled = _stage(20.0, lambda n: 2e-4 if n == SIZES[-1] else 1e-4)
    assert ladder.linearity(doubled, SIZES)[0] > ladder.RATIO_GOAL
    # Image stages stop at 10^5: their next size is the 3x10^4 rung.
    pixels = SIZES[:-1]
    ratio, _ = ladder.linearity(_stage(20.0, lambda n: 1e-8 * n, pixels), pixels)
    assert ratio > 2.5


def test_one_slow_start_is_not_taken_for_super_linear_cost():
    # cluster-assign on 2026-12-03: 10^3 was 5 s slower than 10^4, the rest linear.
    sizes = [1_000, 10_000, 100_000, 1_000_000]
    results = _results({1_000: 20.4, 10_000: 15.1, 100_000: 17.7, 1_000_000: 23.9})
    assert ladder.fixed_size(results, sizes) == 10_000
    ratio, resolved = ladder.linearity(results, sizes)
    assert not resolved  # 2.6 s of work at 10^5 is within the noise
    assert ratio <= ladder.RATIO_GOAL


def test_a_cheap_stage_cannot_hide_a_large_cost_at_the_top_behind_the_noise():
    # Next size within the noise, but the largest run costs far more per row than the
    # most the next one can have cost: still a FAIL.
    sizes = [1_000, 10_000, 100_000, 1_000_000]
    results = _results({1_000: 20.0, 10_000: 20.0, 100_000: 21.0, 1_000_000: 400.0})
    ratio, resolved = ladder.linearity(results, sizes)
    assert not resolved and ratio > ladder.RATIO_GOAL


def test_the_fixed_cost_comes_from_the_small_sizes_only():
    results = _results({1_000: 30.0, 10_000: 31.0, 30_000: 32.0, 100_000: 29.0,
                        1_000_000: 60.0})
    assert ladder.fixed_size(results, SIZES) == 1_000
    assert ladder.fixed_size(_results({1_000: 5.0, 10_000: 4.0}), [1_000, 10_000]) == 1_000
