"""Circle probe, find_c_circle, intervention formulas and run rules on synthetic data (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multid.circles.probe import (
    CircleBasis,
    average_ablate,
    find_c_circle,
    fit_circle_probe,
    intervention_runs,
    patch_circle,
    patch_pca,
    probe_targets,
    relabel_null,
    target_table,
    zero_circle,
    zero_everything_but_circle,
)
from intervention.days_of_week_task import DAYS_OF_WEEK
from intervention.months_of_year_task import MONTHS_OF_YEAR
from multid.tasks.spec import generate_problems
from multid.errors import UserError

ATOL = 1e-5


def infos_of(spec) -> np.ndarray:
    return np.array([problem.info for problem in generate_problems(spec)])


def random_basis(centered: bool, d: int = 12, k: int = 4, n: int = 9, p: int = 7, seed: int = 0) -> CircleBasis:
    rng = np.random.default_rng(seed)
    components = np.linalg.qr(rng.normal(size=(d, k)))[0].T  # [k, d] orthonormal rows
    q = np.linalg.qr(rng.normal(size=(k, 2)))[0]
    r = np.triu(rng.normal(size=(2, 2))) + 2 * np.eye(2)
    return CircleBasis.from_arrays(q, r, target_table(p, ("cos", "sin")), rng.normal(size=d), components,
                                   rng.normal(size=(n, k)), centered=centered)


def off_plane(basis: CircleBasis, x: torch.Tensor) -> torch.Tensor:
    return x - (x @ basis.plane) @ basis.plane.T


@pytest.mark.parametrize("centered", [False, True])
def test_patch_circle_sets_the_plane_and_keeps_the_mean_elsewhere(centered):
    basis = random_basis(centered)
    values = torch.arange(7)
    patched = patch_circle(basis, basis.target_to_embedding[values])
    targets = basis.plane_coordinates(basis.target_to_embedding[values])
    plane_coords = (patched - basis.mean) @ basis.plane if centered else patched @ basis.plane
    torch.testing.assert_close(plane_coords, targets, atol=ATOL, rtol=0)
    torch.testing.assert_close(off_plane(basis, patched), off_plane(basis, basis.mean.expand(7, -1)), atol=ATOL, rtol=0)


def test_centred_patch_circle_makes_the_probe_read_the_target():
    """With U = P, the probe (centred PCA coords @ Q R) reads E[v] exactly only in the centred variant."""
    for centered, expect_exact in ((True, True), (False, False)):
        basis = random_basis(centered)
        table = basis.target_to_embedding
        patched = patch_circle(basis, table)
        weights = torch.linalg.solve(basis.pca_components @ basis.pca_components.T, basis.pca_components @ basis.plane) @ basis.r
        read = ((patched - basis.mean) @ basis.pca_components.T) @ weights
        offset = (basis.mean @ basis.pca_components.T) @ weights  # upstream's constant offset mu P Q R
        expected = table if expect_exact else table - offset
        torch.testing.assert_close(read, expected, atol=1e-4, rtol=0)


def test_zero_circle_and_zero_everything_but_circle():
    basis = random_basis(False)
    x = torch.randn(5, basis.mean.shape[0])
    zeroed = zero_circle(basis, x)
    torch.testing.assert_close((zeroed - basis.mean) @ basis.plane, torch.zeros(5, 2), atol=ATOL, rtol=0)
    torch.testing.assert_close(off_plane(basis, zeroed), off_plane(basis, x), atol=ATOL, rtol=0)
    kept = zero_everything_but_circle(basis, x)
    torch.testing.assert_close(off_plane(basis, kept - basis.mean), torch.zeros_like(x), atol=ATOL, rtol=0)
    torch.testing.assert_close((kept - basis.mean) @ basis.plane, (x - basis.mean) @ basis.plane, atol=ATOL, rtol=0)
    torch.testing.assert_close(average_ablate(basis, 3), basis.mean.expand(3, -1), atol=0, rtol=0)


@pytest.mark.parametrize("centered", [False, True])
def test_patch_pca_replaces_the_pca_coordinates(centered):
    basis = random_basis(centered)
    x = torch.randn(4, basis.mean.shape[0])
    donors = torch.tensor([0, 3, 5, 8])
    patched = patch_pca(basis, x, basis.pca_coords[donors])
    components = basis.pca_components
    coords = ((patched - basis.mean) if centered else patched) @ components.T
    torch.testing.assert_close(coords, basis.pca_coords[donors], atol=ATOL, rtol=0)
    outside = lambda y: y - (y @ components.T) @ components  # noqa: E731
    torch.testing.assert_close(outside(patched), outside(x), atol=ATOL, rtol=0)


def test_probe_recovers_a_planted_circle_and_beats_the_relabel_null():
    infos = infos_of(DAYS_OF_WEEK)
    rng = np.random.default_rng(1)
    a = infos[:, 0]
    plane = np.linalg.qr(rng.normal(size=(5, 2)))[0]
    coords = 3.0 * probe_targets(a, 7, ("cos", "sin")) @ plane.T + 0.01 * rng.normal(size=(len(a), 5))
    coords -= coords.mean(axis=0)
    probe = fit_circle_probe(coords, a, 7)
    assert probe.r2.min() > 0.99
    assert np.allclose(probe.q.T @ probe.q, np.eye(2))
    null_mean, null_p95 = relabel_null(coords, a, 7, n_permutations=50, seed=0)
    assert null_mean < 0.7 and null_p95 < probe.mean_r2


def planted_c_circle(spec, k: int = 20, noise: float = 0.01, seed: int = 0):
    """PCA-like coords: orthogonal one-hot a and b effects plus a (cos c, sin c) plane, plus noise."""
    infos = infos_of(spec)
    p = spec.p
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.normal(size=(k, k)))[0].T  # k orthonormal rows
    a_dirs, b_dirs, c_plane = directions[:p - 1], directions[p - 1:2 * p - 2], directions[2 * p - 2:2 * p]
    a, b, c = infos.T
    coords = np.zeros((len(infos), k))
    coords[a > 0] += a_dirs[a[a > 0] - 1]
    coords[b < p] += b_dirs[b[b < p] - 1]
    coords += 2.0 * probe_targets(c, p, ("cos", "sin")) @ c_plane
    coords += noise * rng.normal(size=coords.shape)
    return infos, coords - coords.mean(axis=0), c_plane


def principal_cosines(basis_a: np.ndarray, basis_b: np.ndarray) -> np.ndarray:
    qa, qb = np.linalg.qr(basis_a)[0], np.linalg.qr(basis_b)[0]
    return np.linalg.svd(qa.T @ qb, compute_uv=False)


@pytest.mark.parametrize("spec", [DAYS_OF_WEEK, MONTHS_OF_YEAR], ids=["days", "months"])
def test_find_c_circle_recovers_a_planted_c_circle(spec):
    infos, coords, c_plane = planted_c_circle(spec, k=2 * spec.p + 2)
    fit = find_c_circle(infos, coords, spec.p)
    assert fit.readout.shape == (coords.shape[1], 2)
    assert principal_cosines(fit.readout, c_plane.T).min() > 0.999
    assert fit.r2_after > 0.99 > fit.r2_before


def test_find_c_circle_one_hot_width():
    """Days: upstream's 8 indicators span the same design as p; months: 8 miss a, b >= 8."""
    infos, coords, _ = planted_c_circle(DAYS_OF_WEEK)
    np.testing.assert_allclose(find_c_circle(infos, coords, 7, upstream_one_hot_8=True).readout,
                               find_c_circle(infos, coords, 7).readout, atol=1e-8)
    infos, coords, _ = planted_c_circle(MONTHS_OF_YEAR, k=26)
    assert find_c_circle(infos, coords, 12, upstream_one_hot_8=True).r2_after < find_c_circle(infos, coords, 12).r2_after - 0.01


@pytest.mark.parametrize("spec", [DAYS_OF_WEEK, MONTHS_OF_YEAR], ids=["days", "months"])
def test_intervention_runs_follow_upstream_rules(spec):
    infos, p = infos_of(spec), spec.p
    for letter in ("a", "c"):
        runs = intervention_runs(infos, p, letter)
        assert len(runs) == len(infos) * (p - 1)
        assert (np.diff(runs.value) >= 0).all()  # v outer
        i, j, v = runs.problem, runs.donor, runs.value
        if letter == "a":
            assert (infos[i, 0] != v).all()
            assert (runs.new_answer == (infos[i, 1] + v) % p).all()
            assert (infos[j, 0] == v).all() and (infos[j, 1] == infos[i, 1]).all()
        else:
            assert (infos[i, 2] != v).all() and (runs.new_answer == v).all()
            assert (infos[j, 2] == v).all() and (infos[j, 1] == 3).all()
    with pytest.raises(UserError):
        intervention_runs(infos, p, "b")
