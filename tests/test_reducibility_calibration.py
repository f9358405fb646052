"""The Gaussian null of S and exact M per plane, and Benjamini-Hochberg over planes (multid.reducibility.calibration):
planted structure is flagged, structureless clouds are not, and each index flags what it should."""

from __future__ import annotations

import numpy as np
import pytest

from multid.reducibility.calibration import (benjamini_hochberg, calibrate_plane, calibration_sample, calibration_size,
                                             grid_ratio, mixture_null, variance_ratio)
from multid.reducibility.indices import separability_index

def noisy_circle(rng, n, noise=0.1):
    theta = rng.uniform(0, 2 * np.pi, n)
    return np.c_[np.cos(theta), np.sin(theta)] + noise * rng.standard_normal((n, 2))


def gaussian(rng, n, ratio):
    return rng.standard_normal((n, 2)) * [1.0, np.sqrt(ratio)] @ rotation(rng.uniform(0, np.pi))


def rotation(angle):
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


@pytest.mark.unit
def test_benjamini_hochberg_matches_the_step_up_rule():
    p = np.array([0.01, 0.04, 0.03, 0.5, 0.002])
    q = benjamini_hochberg(p)
    # sorted p: .002 .01 .03 .04 .5 -> p * 5 / rank: .01 .025 .05 .05 .5 (then running minimum from the top)
    assert q.tolist() == pytest.approx([0.025, 0.05, 0.05, 0.5, 0.01])
    assert benjamini_hochberg([]).size == 0


@pytest.mark.unit
def test_variance_ratio_and_its_grid():
    rng = np.random.default_rng(0)
    assert variance_ratio(rng.standard_normal((20000, 2)) * [1, 0.5]) == pytest.approx(0.25, rel=0.05)
    assert grid_ratio(0.26) == 0.3 and grid_ratio(0.9) == 1.0 and grid_ratio(1e-9) == 0.001


@pytest.mark.unit
def test_large_planes_are_tested_on_a_seeded_sample_of_a_grid_size():
    """A plane is tested on the largest grid size not above its n (at most 2,000 points), so a scan draws nulls
    for a handful of sizes; the tested S is the sample's own, and the same seed gives the same sample."""
    assert [calibration_size(n) for n in (40, 100, 149, 150, 1999, 2000, 20000)] == [40, 100, 100, 150, 1500, 2000, 2000]
    rng = np.random.default_rng(2)
    points = noisy_circle(rng, 3000, noise=0.2)
    sample = calibration_sample(points, seed=0)
    assert sample.shape == (2000, 2) and np.array_equal(sample, calibration_sample(points, seed=0))
    assert not np.array_equal(sample, calibration_sample(points, seed=1))
    assert len({tuple(row) for row in sample}) == 2000  # without replacement
    full_s = float(separability_index(points).s_bits)
    result = calibrate_plane(points, draws=20, s_bits=full_s)
    assert (result.n, result.sample_n) == (3000, 2000)
    assert result.s_bits == pytest.approx(float(separability_index(sample).s_bits), abs=1e-12) != full_s
    assert result.s_p == 1 / 21


@pytest.mark.integration
def test_mixture_null_is_the_gaussians_at_every_shape():
    """Exact M is affine-invariant: one null per n serves every Gaussian plane (the issue's reference values:
    0.154 +- 0.010 at n = 200)."""
    null = mixture_null(200, draws=100)
    assert null.mean == pytest.approx(0.154, abs=0.01) and 0.005 < null.sd < 0.02
    rng = np.random.default_rng(3)
    m_stretched = [calibrate_plane(gaussian(rng, 200, 0.01), draws=100).m_z for _ in range(20)]
    assert abs(float(np.mean(m_stretched))) < 0.7  # stretched Gaussians sit in the middle of the round null


@pytest.mark.integration
def test_each_index_flags_what_it_should():
    """Two parallel lines: M far above the null, S below it (a product of independent coordinates). A cross of two
    perpendicular lines: both. A circle: S as high as the cross's, M far below the two-line shapes' (S alone cannot
    tell a cross from a circle; M can)."""
    rng = np.random.default_rng(7)
    n, draws = 1000, 100
    floor = 1 / (draws + 1)
    lines = np.c_[rng.standard_normal(n), rng.choice([-1.0, 1.0], n) + 0.02 * rng.standard_normal(n)]
    a, b, pick = rng.standard_normal(n), 0.02 * rng.standard_normal(n), rng.random(n) < 0.5
    cross = np.where(pick[:, None], np.c_[a, b], np.c_[b, a])
    par, crs, circ = (calibrate_plane(x, draws=draws) for x in (lines, cross, noisy_circle(rng, n)))
    assert par.s_bits < par.s_null_mean and par.s_p > 0.5 and par.m_p == floor and par.m_exact > 0.45
    assert crs.s_p == floor and crs.m_p == floor and crs.s_bits > 0.25
    assert circ.s_p == floor and circ.s_bits > 0.6 and circ.m_exact < 0.3 < crs.m_exact


@pytest.mark.acceptance
def test_planted_circles_among_gaussians_of_mixed_sizes_come_out_on_top():
    """4 noisy circles and 8 Gaussian planes of 200 to 5,000 points: with 100 null draws the smallest p is 1/101,
    so 4 circles at that floor among 12 planes get q = 0.03, significant at 5 %; no Gaussian is."""
    rng = np.random.default_rng(11)
    draws, sizes = 100, (200, 600, 2000, 5000)
    planes = [("circle", calibrate_plane(noisy_circle(rng, n, noise=0.2), draws=draws)) for n in sizes]
    planes += [("gaussian", calibrate_plane(gaussian(rng, n, ratio), draws=draws))
               for n in sizes for ratio in (1.0, 0.2)]
    q = benjamini_hochberg([c.s_p for _, c in planes])
    flagged = {kind for (kind, _), qv in zip(planes, q) if qv <= 0.05}
    assert flagged == {"circle"}
    order = np.argsort([-c.s_bits / c.s_null_mean for _, c in planes])
    assert {planes[i][0] for i in order[:len(sizes)]} == {"circle"}


@pytest.mark.integration
def test_structureless_clusters_are_rarely_flagged():
    """200 Gaussian planes of 300 points with variance ratios 0.05 to 1: the S p-values are about uniform
    (share below 0.05 near 5 %), and Benjamini-Hochberg at 5 % flags at most 5 % of them (here: none)."""
    rng = np.random.default_rng(5)
    ratios = np.exp(rng.uniform(np.log(0.05), 0.0, 200))
    cals = [calibrate_plane(gaussian(rng, 300, r), draws=100) for r in ratios]
    p = np.array([c.s_p for c in cals])
    assert 0.01 <= float((p <= 0.05).mean()) <= 0.10
    assert float((benjamini_hochberg(p) <= 0.05).mean()) <= 0.05
