"""Random-subspace controls for the circle patch (multid.circles.controls): on a planted model whose answer is read
from a known 2-D plane, the circle plane moves the answer and random 2-D planes do not; draws are reproducible from
their seeds; the sweep runs them as cached stages."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from multid.circles import controls as ctl
from multid.circles.engine import metric
from multid.circles.probe import VARIANTS, CircleBasis, intervention_runs

P, D = 7, 64  # weekdays; residual width


def planted_task(seed: int = 0):
    """Every (a, b) problem; the activation carries a on a circle in the plane of the first two axes (radius 3),
    and noise elsewhere. The planted read-out answers b + (the angle of that plane), so the plane routes a."""
    rng = np.random.default_rng(seed)
    infos = np.array([(a, b, (a + b) % P) for a in range(P) for b in range(P)])
    acts = rng.normal(scale=0.5, size=(len(infos), D))
    angle = 2 * np.pi * infos[:, 0] / P
    acts[:, 0] = 3 * np.cos(angle) + 0.05 * rng.normal(size=len(infos))
    acts[:, 1] = 3 * np.sin(angle) + 0.05 * rng.normal(size=len(infos))
    acts = torch.tensor(acts, dtype=torch.float32)
    cache = SimpleNamespace(infos=infos, p=P, layer_acts=lambda layer: acts[:, None, :])
    return cache, acts


class PlantedEngine:
    """The sweep engine's interface over the planted read-out: logits of answer k = 5 cos(2 pi (k - b) / P - angle)."""

    position = 0

    def __init__(self, cache):
        self.cache = cache

    def patched_logits(self, layer: int, rows: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        angle = torch.atan2(vectors[:, 1], vectors[:, 0])
        b = torch.as_tensor(self.cache.infos[rows.numpy(), 1])
        k = torch.arange(P)
        return 5 * torch.cos(2 * np.pi * (k[None, :] - b[:, None]) / P - angle[:, None])


def planted_basis(acts: torch.Tensor) -> CircleBasis:
    mean = acts.mean(0)
    _, _, components = torch.linalg.svd(acts - mean, full_matrices=False)
    plane = torch.eye(D)[:, :2]
    return CircleBasis(plane=plane, r=torch.eye(2), target_to_embedding=torch.zeros(P, 2), mean=mean,
                       pca_components=components[:5], pca_coords=torch.zeros(len(acts), 5))


def planted_result(draws: int, seed: int) -> ctl.ControlResult:
    cache, acts = planted_task()
    engine = PlantedEngine(cache)
    basis = planted_basis(acts)
    runs = intervention_runs(cache.infos, P, "a")
    rows = torch.as_tensor(runs.problem)
    answer = cache.infos[runs.problem, 2]
    sweep_raw = np.zeros((1, len(VARIANTS), len(runs)))
    sweep_raw[0, VARIANTS.index("no_op")] = metric(engine.patched_logits(0, rows, acts[rows]), answer, runs.new_answer)
    donors = acts[torch.as_tensor(runs.donor)]
    sweep_raw[0, VARIANTS.index("patch_layer")] = metric(engine.patched_logits(0, rows, donors), answer, runs.new_answer)
    mean_rows = basis.mean.expand(len(runs), -1)
    sweep_raw[0, VARIANTS.index("average_ablate")] = metric(engine.patched_logits(0, rows, mean_rows), answer,
                                                            runs.new_answer)
    circle, raw = ctl.layer_control_metrics(engine, cache, basis, 0, runs, "a", draws, seed)
    return ctl.ControlResult(layers=np.array([0]), circle=circle[None], raw=raw[None], sweep_raw=sweep_raw,
                             floor=ctl.chance_floor(cache.infos, runs))


@pytest.mark.unit
def test_the_circle_plane_moves_the_answer_and_random_planes_do_not():
    result = planted_result(draws=20, seed=0)
    assert result.circle_plane_share()[0] > 0.95
    mean, lo, hi = result.summary("patch_random")
    assert abs(mean[0]) < 0.1 and hi[0] < 0.25 and lo[0] > -0.25  # 2 of 64 dimensions: a random plane barely touches it
    pca_mean, _, pca_hi = result.summary("patch_random_pca")
    assert 0.15 < pca_mean[0] < 0.9  # inside the top-5 PCA space, which holds the circle, a random plane shares part of it
    assert result.floor == 0.0  # the run rule never asks for the base answer


@pytest.mark.unit
def test_draws_are_reproducible_from_their_seeds():
    first, again, other = planted_result(3, seed=4), planted_result(3, seed=4), planted_result(3, seed=5)
    np.testing.assert_array_equal(first.raw, again.raw)
    assert not np.allclose(first.raw, other.raw)
    cache, acts = planted_task()
    basis = planted_basis(acts)
    plane = ctl.random_plane("patch_random_pca", basis, ctl.draw_seed(4, 0, "patch_random_pca", 1))
    torch.testing.assert_close(plane.T @ plane, torch.eye(2), atol=1e-5, rtol=0)
    inside = basis.pca_components.T @ (basis.pca_components @ plane)  # the plane lies in the PCA span
    torch.testing.assert_close(inside, plane, atol=1e-5, rtol=0)


@pytest.mark.unit
def test_shares_are_not_reported_where_patch_layer_changes_nothing():
    noise = np.array([3e-7, -1e-7])  # rounding noise where patch layer changes nothing: its ratio would read 1.00
    effects = np.array([[1.0, 2.0], noise])
    layer_effect = np.array([[1.0, 2.0], noise])
    shares = ctl.per_run_shares(effects, layer_effect)
    assert shares[0] == pytest.approx(1.0) and np.isnan(shares[1])
    result = planted_result(2, 0)
    result.sweep_raw[:, VARIANTS.index("patch_layer")] = result.sweep_raw[:, VARIANTS.index("no_op")]
    row = ctl.summary_rows(result)[0]
    assert row[1] == "n/a" and row[-1] == "0"


@pytest.mark.integration
def test_sweep_runs_the_controls_as_cached_stages(tiny_model, tiny_base, capsys):
    from multid.circles.sweep import SweepParams, controls_stage, run_circle_sweep
    from multid.tasks.cache import TaskCache
    from multid.stage import is_current

    cache = TaskCache.open(tiny_base, "tiny", "days_of_week")
    params = SweepParams("a", ("cos", "sin"), 5, null_permutations=2, seed=3)
    calls = []

    def load():
        calls.append(1)
        return tiny_model

    result = run_circle_sweep(cache, params, tiny_base, [1, 2], load, progress=False, make_figures=True, controls=2)
    controls = result.controls
    assert controls.raw.shape == (2, len(ctl.CONTROL_KINDS), 2, controls.sweep_raw.shape[-1])
    assert list(controls.layers) == [1, 2] and result.paths["controls_figure"].exists()
    rows = result.paths["controls_summary"].read_text().splitlines()
    assert rows[0].split(",") == list(ctl.SUMMARY_COLUMNS) and len(rows) == 3
    assert all(is_current(controls_stage(tiny_base, cache, params, layer, 2)) for layer in (1, 2))
    again = run_circle_sweep(cache, params, tiny_base, [1, 2], load, progress=False, make_figures=False, controls=2)
    np.testing.assert_array_equal(again.controls.raw, controls.raw)
    assert not is_current(controls_stage(tiny_base, cache, params, 1, 3))  # another K is another stage
    only = run_circle_sweep(cache, params, tiny_base, [1, 2], load, progress=False, make_figures=False, controls=3,
                            control_layers=[2])
    assert list(only.layers) == [1, 2] and list(only.controls.layers) == [2]


@pytest.mark.integration
def test_cli_prints_the_shares_with_their_bands(tiny_model, tiny_base, capsys):
    from intervention import circle_probe_interventions as script

    result = script.main(["day", "a", "tiny", "--base_dir", str(tiny_base), "--intervention_pca_k", "5", "--probe_on_cos",
                          "--probe_on_sin", "--layers", "1", "--null_permutations", "2", "--controls", "2"])
    out = capsys.readouterr().out
    assert "random in PCA" in out and "chance floor 0.00" in out and "of 2 draws" in out
    assert result.controls.raw.shape[2] == 2 and "controls_summary" in result.paths
    assert script.build_parser().parse_args(["day", "a", "tiny", "--controls"]).controls == ctl.DEFAULT_DRAWS


@pytest.mark.integration
def test_a_layer_where_patch_layer_changes_nothing_has_no_share(tiny_model, tiny_base):
    """At the last cache layer the start word no longer reaches the answer: patch layer's change is 0, so every share
    is 0/0 and reported as NaN ("n/a"), not as the 1.00 that rounding noise gave."""
    from multid.circles.sweep import SweepParams, run_circle_sweep, sweep_layers
    from multid.tasks.cache import TaskCache

    cache = TaskCache.open(tiny_base, "tiny", "days_of_week")
    params = SweepParams("a", ("cos", "sin"), 5, null_permutations=2)
    last = sweep_layers(cache, "a")[-1]
    result = run_circle_sweep(cache, params, tiny_base, [last], lambda: tiny_model, progress=False, make_figures=False,
                              controls=1)
    slope, corr = result.per_run_recovery("patch_circle")
    assert np.isnan(slope[0]) and np.isnan(corr[0])
    assert ctl.summary_rows(result.controls)[0][1:-1] == ("n/a",) * (len(ctl.SUMMARY_COLUMNS) - 2)
