"""Hand-checked numbers for the statistics the sweep prints: the relabel null of the probe R^2, the
recovery ratio and per-run shares of a sweep, and the Student-t interval of Figure 5 (no model)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as scipy_stats

from multid.circles.probe import VARIANTS, probe_r2, relabel_null
from multid.circles.sweep import SUMMARY_COLUMNS, SweepResult, summary_rows
from multid.stats import t_interval

pytestmark = pytest.mark.unit

# ----------------------------------------------------------------------------------------- relabel null

# p = 4 labels on a square. A relabelling that is a symmetry of the square (4 rotations v -> v + r,
# 4 reflections v -> r - v, mod 4) maps the circle onto itself: the probe fits it exactly (R^2 = 1).
# Every other relabelling of the 24 (e.g. swapping two neighbours) gives R^2 = 1/2 for both targets:
# with square vertices x_v the least-squares map is W = X^T Y / 2; for the swap 0 <-> 1 it is
# [[1, 1], [1, 1]] / 2, the residuals are +-1/2 in each column, MSE 1/4 against a variance of 1/2.
SQUARE_SYMMETRIES = {tuple((r + v) % 4 for v in range(4)) for r in range(4)} | {tuple((r - v) % 4 for v in range(4)) for r in range(4)}


def square_coords(copies: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exact circle coordinates of 4 labels (each `copies` times), rotated into 3 PCA dimensions."""
    labels = np.repeat(np.arange(4), copies)
    angle = 2 * np.pi * labels / 4
    plane = np.stack([np.cos(angle), np.sin(angle), np.zeros_like(angle)], axis=1)
    rotation = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))[0]
    return plane @ rotation, labels


def hand_r2(permutation: tuple[int, ...]) -> float:
    return 1.0 if tuple(permutation) in SQUARE_SYMMETRIES else 0.5


def test_every_relabelling_of_the_square_has_the_hand_computed_r2():
    coords, labels = square_coords()
    assert len(SQUARE_SYMMETRIES) == 8
    for permutation in itertools.permutations(range(4)):
        assert probe_r2(coords, np.array(permutation)[labels], 4) == pytest.approx(hand_r2(permutation), abs=1e-12), permutation
    # the mean over all 24 relabellings: (8 * 1 + 16 * 1/2) / 24
    assert np.mean([hand_r2(permutation) for permutation in itertools.permutations(range(4))]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("n_permutations, seed", [(20, 0), (20, 5), (200, 1)])
def test_relabel_null_equals_the_hand_enumerated_scores_of_its_draws(n_permutations, seed):
    """The null is the mean and 95th percentile of R^2 over relabellings drawn from default_rng(seed)."""
    coords, labels = square_coords()
    rng = np.random.default_rng(seed)
    scores = [hand_r2(tuple(rng.permutation(4))) for _ in range(n_permutations)]
    null_mean, null_p95 = relabel_null(coords, labels, 4, n_permutations=n_permutations, seed=seed)
    assert null_mean == pytest.approx(np.mean(scores), abs=1e-12)
    assert null_p95 == pytest.approx(np.percentile(scores, 95), abs=1e-12)
    assert 0.5 < null_mean < 1.0  # both kinds of relabelling were drawn
    assert relabel_null(coords, labels, 4, n_permutations=n_permutations, seed=seed) == (null_mean, null_p95)


def test_relabel_null_converges_to_the_mean_over_all_relabellings():
    coords, labels = square_coords()
    null_mean, null_p95 = relabel_null(coords, labels, 4, n_permutations=3000, seed=2)
    # 1/3 of the 24 relabellings are symmetries: the mean tends to 2/3 (standard error ~0.005 here)
    assert null_mean == pytest.approx(2 / 3, abs=0.02) and null_p95 == pytest.approx(1.0, abs=1e-12)


def test_relabel_null_percentile_below_one_when_symmetries_are_rare():
    """p = 7 on a heptagon: 14 of 5040 relabellings are symmetries, so the 95th percentile is below 1."""
    labels = np.repeat(np.arange(7), 2)
    angle = 2 * np.pi * labels / 7
    coords = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    rng = np.random.default_rng(3)
    scores = [probe_r2(coords, rng.permutation(7)[labels], 7) for _ in range(100)]
    null_mean, null_p95 = relabel_null(coords, labels, 7, n_permutations=100, seed=3)
    assert (null_mean, null_p95) == pytest.approx((np.mean(scores), np.percentile(scores, 95)), abs=1e-12)
    assert null_mean < 0.5 and null_p95 < 0.9


# ----------------------------------------------------------------------------------------- recovery and shares


def hand_built_sweep() -> SweepResult:
    """Two layers, three runs; every number below is checked by hand in the tests.

    layer 3: no-op 1, 1, 1; patch layer 3, 5, 1 (effects 2, 4, 0); patch circle 2, 3, 1 (effects 1, 2, 0);
             average ablate 2, 0, 1 (effects 1, -1, 0).
    layer 5: no-op 0, 0, 0; patch layer 1, 2, 3; patch circle 1, 2, 3; average ablate 3, 2, 1.
    """
    per_layer = [
        {"no_op": [1, 1, 1], "patch_layer": [3, 5, 1], "patch_circle": [2, 3, 1], "average_ablate": [2, 0, 1]},
        {"no_op": [0, 0, 0], "patch_layer": [1, 2, 3], "patch_circle": [1, 2, 3], "average_ablate": [3, 2, 1]},
    ]
    raw = np.zeros((2, len(VARIANTS), 3))
    for layer, values in enumerate(per_layer):
        for index, variant in enumerate(VARIANTS):
            raw[layer, index] = values.get(variant, [7 + index, 8, 9])  # the others play no part
    runs = np.arange(3)
    return SweepResult(
        layers=np.array([3, 5]), means=raw.mean(axis=2), raw=raw, r2=np.array([[0.9, 0.7], [0.5, 0.3]]),
        null_mean=np.array([0.25, 0.5]), null_p95=np.array([0.5, 0.75]), c_circle_r2=np.full((2, 2), np.nan),
        problem=runs, value=runs, new_answer=runs, donor=runs,
    )


def test_recovery_is_the_ratio_of_mean_effects():
    result = hand_built_sweep()
    # layer 3: mean circle effect 1 over mean layer effect 2; layer 5: 2 / 2
    np.testing.assert_allclose(result.recovery("patch_circle"), [0.5, 1.0], atol=1e-12)
    # layer 3: ablate effects average 0; layer 5: 2 / 2
    np.testing.assert_allclose(result.recovery("average_ablate"), [0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(result.recovery("patch_layer"), [1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(result.variant_means("patch_layer"), [3.0, 2.0], atol=1e-12)


def test_per_run_shares_are_slope_and_correlation_of_the_effects():
    result = hand_built_sweep()
    slope, corr = result.per_run_recovery("patch_circle")
    # layer 3: <(1,2,0),(2,4,0)> / <(2,4,0),(2,4,0)> = 10 / 20, proportional effects: r = 1
    np.testing.assert_allclose(slope, [0.5, 1.0], atol=1e-12)
    np.testing.assert_allclose(corr, [1.0, 1.0], atol=1e-12)
    slope, corr = result.per_run_recovery("average_ablate")
    # layer 3: (2 - 4 + 0) / 20; centred (1,-1,0) vs (0,2,-2): -2 / (sqrt 2 sqrt 8)
    # layer 5: <(3,2,1),(1,2,3)> / 14 = 10 / 14; centred (1,0,-1) vs (-1,0,1): r = -1
    np.testing.assert_allclose(slope, [-0.1, 10 / 14], atol=1e-12)
    np.testing.assert_allclose(corr, [-0.5, -1.0], atol=1e-12)


def test_summary_rows_carry_the_hand_computed_numbers():
    rows = summary_rows(hand_built_sweep())
    assert len(rows) == 2 and all(len(row) == len(SUMMARY_COLUMNS) for row in rows)
    first = dict(zip(SUMMARY_COLUMNS, rows[0]))
    assert first["layer"] == 3
    expected = {
        "mean_no_op": "1", "mean_patch_layer": "3", "mean_patch_circle": "2", "mean_average_ablate": "1",
        "probe_r2": "0.8", "null_mean": "0.25", "null_p95": "0.5",
        "patch_circle_recovery": "0.5", "average_ablate_recovery": "0",
        "patch_circle_per_run_slope": "0.5", "patch_circle_per_run_r": "1",
        "average_ablate_per_run_slope": "-0.1", "average_ablate_per_run_r": "-0.5",
    }
    assert {key: first[key] for key in expected} == expected
    second = dict(zip(SUMMARY_COLUMNS, rows[1]))
    assert second["layer"] == 5 and second["average_ablate_per_run_slope"] == "0.714286" and second["average_ablate_per_run_r"] == "-1"


# ----------------------------------------------------------------------------------------- t interval


@pytest.mark.parametrize("confidence", [0.95, 0.96, 0.5])
def test_t_interval_matches_scipy(confidence):
    samples = np.random.default_rng(0).normal(loc=[[1.0], [-2.0], [0.0]], scale=[[0.5], [2.0], [1.0]], size=(3, 11))
    mean, half = t_interval(samples, confidence)
    for row, m, h in zip(samples, mean, half):
        low, high = scipy_stats.t.interval(confidence, len(row) - 1, loc=row.mean(), scale=scipy_stats.sem(row))
        assert m == pytest.approx(row.mean(), abs=1e-12)
        assert (m - h, m + h) == pytest.approx((low, high), abs=1e-12)
    assert (half > 0).all()


def test_t_interval_by_hand_and_for_one_sample():
    # samples 1, 2, 3: mean 2, sd 1, sem 1/sqrt 3; 95% two-sided t with 2 df is 4.302653
    mean, half = t_interval(np.array([1.0, 2.0, 3.0]), 0.95)
    assert mean == pytest.approx(2.0) and half == pytest.approx(4.302653 / np.sqrt(3), abs=1e-6)
    mean, half = t_interval(np.array([[4.0], [5.0]]), 0.95)  # one sample per row: no width
    np.testing.assert_array_equal(mean, [4.0, 5.0])
    np.testing.assert_array_equal(half, [0.0, 0.0])
