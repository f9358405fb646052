"""The circle sweep, Figure 6 grid, intervention-type comparison and paper figures on the tiny model:
artifacts, resume, invalidation, CLI errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from intervention import (
    circle_probe_interventions,
    compare_circle_intervention_types,
    intervene_in_middle_of_circle,
    render_figures,
)
from tests.helpers import CountingLoader
from multid.figures import render
from multid.tasks.cache import TaskCache
from multid.circles.compare import run_comparison
from multid.circles.probe import VARIANTS
from multid.circles.grid import circle_points, compute_grid_logits, grid_figure_path, grid_path
from multid.circles.sweep import (
    SweepParams,
    combined_path,
    load_sweep_result,
    probe_path,
    run_circle_sweep,
)
from multid.figures.intervention_figures import (
    all_layer_pca_grid,
    figure5,
    figure6,
    find_sweep_results,
    load_grid_logits,
    residual_c_figure,
    residual_c_panel,
    results_table,
)
from multid.errors import MissingArtifactError, UserError

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent
DAYS_A = SweepParams("a", ("cos", "sin"), 5, null_permutations=20)


def open_cache(base: Path, task: str = "days_of_week") -> TaskCache:
    return TaskCache.open(base, "tiny", task)


@pytest.mark.integration
def test_sweep_resumes_and_ends_with_the_same_file(tiny_model, tiny_base, tmp_path_factory, tiny_caches, drawn_figures):
    cache = open_cache(tiny_base)
    first = run_circle_sweep(cache, DAYS_A, tiny_base, [1, 2], CountingLoader(tiny_model), progress=False)
    assert sorted(first.meta["timings_s"]) == ["1", "2"]
    resumed = run_circle_sweep(cache, DAYS_A, tiny_base, [1, 2, 3], CountingLoader(tiny_model), progress=False)
    assert sorted(resumed.meta["timings_s"]) == ["3"]  # only the missing layer was computed
    fresh_base = tmp_path_factory.mktemp("fresh")
    shutil.copytree(tiny_caches["days_of_week"].folder, fresh_base / "tiny_days_of_week")
    fresh = run_circle_sweep(open_cache(fresh_base), DAYS_A, fresh_base, [1, 2, 3], CountingLoader(tiny_model), progress=False)
    assert resumed.paths["combined"].read_bytes() == fresh.paths["combined"].read_bytes()
    # nothing left to do: the model is not even loaded
    loader = CountingLoader(tiny_model)
    again = run_circle_sweep(cache, DAYS_A, tiny_base, [1, 2, 3], loader, progress=False)
    assert loader.calls == 0 and again.meta["timings_s"] == {}
    result = load_sweep_result(combined_path(tiny_base, cache, DAYS_A))
    assert list(result.layers) == [1, 2, 3] and result.raw.shape == (3, len(VARIANTS), 294)
    np.testing.assert_allclose(result.means, result.raw.mean(axis=2))
    # the summary and the two figures by content: one row / one point per layer, the means and R^2 of the result
    from multid.circles.sweep import SUMMARY_COLUMNS

    summary = [line.split(",") for line in resumed.paths["summary"].read_text().splitlines()]
    assert tuple(summary[0]) == SUMMARY_COLUMNS and [row[0] for row in summary[1:]] == ["1", "2", "3"]
    assert [float(row[SUMMARY_COLUMNS.index("mean_patch_layer")]) for row in summary[1:]] == pytest.approx(
        result.variant_means("patch_layer"), rel=1e-5)
    (means_ax,) = drawn_figures[resumed.paths["logit_diffs_figure"].name].axes
    lines = [line for line in means_ax.get_lines() if not line.get_label().startswith("_")]
    assert len(lines) == len(VARIANTS)
    for index, line in enumerate(lines):
        np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
        np.testing.assert_allclose(line.get_ydata(), result.means[:, index], atol=1e-9)
    (r2_ax,) = drawn_figures[resumed.paths["probe_r2_figure"].name].axes
    mean_line = next(line for line in r2_ax.get_lines() if line.get_label() == "R$^2$ mean")
    np.testing.assert_allclose(mean_line.get_ydata(), result.r2.mean(axis=1), atol=1e-9)
    assert (result.null_p95 >= result.null_mean).all()


@pytest.mark.integration
def test_changed_parameters_recompute(tiny_model, tiny_base):
    cache = open_cache(tiny_base)
    run_circle_sweep(cache, DAYS_A, tiny_base, [2], CountingLoader(tiny_model), progress=False, make_figures=False)
    changed = SweepParams("a", ("cos", "sin"), 5, null_permutations=10)
    result = run_circle_sweep(cache, changed, tiny_base, [2], CountingLoader(tiny_model), progress=False, make_figures=False)
    assert sorted(result.meta["timings_s"]) == ["2"]
    centred = SweepParams("a", ("cos", "sin"), 5, centered=True, null_permutations=10)
    other = run_circle_sweep(cache, centred, tiny_base, [2], CountingLoader(tiny_model), progress=False, make_figures=False)
    assert "_centered" in other.paths["combined"].name and other.paths["combined"] != result.paths["combined"]


@pytest.mark.integration
def test_probe_file_is_plain_tensors(tiny_model, tiny_base):
    cache = open_cache(tiny_base, "months_of_year")
    params = SweepParams("c", ("cos", "sin"), 20, inverse_regression=True, null_permutations=5)
    result = run_circle_sweep(cache, params, tiny_base, [3], CountingLoader(tiny_model), progress=False, make_figures=False)
    path = probe_path(cache, params, 3)
    assert path.name == f"cos_sin_layer_3_token_{cache.layout.before_c_token}_pca_20_regression_circle.pt"
    stored = torch.load(path, weights_only=True)
    assert stored["probe_q"].shape == (20, 2) and stored["probe_r"].shape == (2, 2)
    assert stored["target_to_embedding"].shape == (12, 2) and stored["meta"]["cache_id"] == cache.cache_id
    assert np.isfinite(result.c_circle_r2).all()


def run_cli(module, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.parametrize(
    "argv, message",
    [
        (["day", "a", "tiny", "--probe_on_cos", "--probe_on_sin", "--use_inverse_regression_probe"], "intervene_on c"),
        (["day", "a", "tiny"], "choose at least one probe target"),
        (["day", "c", "tiny", "--probe_on_cos", "--layers", "0"], "out of range"),
        (["day", "a", "nomodel", "--probe_on_cos"], "unknown model"),
    ],
)
def test_cli_errors_are_one_line(tiny_base, capsys, argv, message):
    code, err = run_cli(circle_probe_interventions, argv + ["--base_dir", str(tiny_base), "--device", "cpu"], capsys)
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.acceptance
def test_script_runs_from_its_folder(tiny_base):
    command = [sys.executable, "circle_probe_interventions.py", "day", "a", "tiny", "--device", "cpu", "--intervention_pca_k", "5",
               "--probe_on_cos", "--probe_on_sin", "--layers", "1", "--base_dir", str(tiny_base), "--null_permutations", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO / "intervention", capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "a_cos_sin_token_" in done.stdout and "_pca_5_all_layers.npz" in done.stdout


@pytest.mark.integration
def test_figure6_grid_and_paper_figures(tiny_model, tiny_base, capsys, drawn_figures):
    cache = open_cache(tiny_base)
    points, angles, radii = circle_points()
    assert points.shape == (2000, 2) and radii[99] == 0 and np.isclose(radii[100], 0.1) and np.isclose(radii[-1], 1.9)
    with pytest.raises(MissingArtifactError, match="circle_probe_interventions.py day a tiny"):
        compute_grid_logits(cache, 1, [2], tiny_base, CountingLoader(tiny_model), num_angles=8, num_radii=3)
    run_circle_sweep(cache, DAYS_A, tiny_base, [1, 2], CountingLoader(tiny_model), progress=False)
    grids = compute_grid_logits(cache, 1, [2, 3], tiny_base, CountingLoader(tiny_model), num_angles=7, num_radii=3)
    assert grids[2].logits.shape == (21, 7)
    # radius 0 is one point whatever the angle: the same logits
    np.testing.assert_allclose(grids[2].logits[:7], np.repeat(grids[2].logits[:1], 7, axis=0), atol=1e-5)
    out = tiny_base / "figs" / "paper_plots"
    written = [
        figure6(load_grid_logits(cache, tiny_base, 1, 5, [2, 3]), cache.meta["answer_words"], out / "fig6.png"),
        figure5(find_sweep_results(tiny_base), out / "fig5.png"),
        residual_c_figure(cache, out / "residual_c.png"),
        all_layer_pca_grid(cache, out / "all_pca.png"),
    ]
    assert all(path.exists() for path in written)
    # by content: Figure 6 colours each grid point by its argmax answer, Figure 5 draws the sweep's means
    import matplotlib

    from multid.circles.probe import VARIANT_LABELS

    wheel = matplotlib.colormaps["hsv"](np.arange(7) / 7)[:, :3]
    panels = [ax for ax in drawn_figures["fig6.png"].axes if ax.collections]
    assert len(panels) == 2
    for ax, b in zip(panels, (2, 3)):
        (scatter,) = ax.collections
        np.testing.assert_allclose(scatter.get_offsets(), grids[b].points)
        np.testing.assert_allclose(scatter.get_facecolors()[:, :3], wheel[grids[b].logits.argmax(axis=1)], atol=1e-6)
        assert ax.get_title() == f"Task Duration = {b} Days"
    sweep = load_sweep_result(combined_path(tiny_base, cache, DAYS_A))
    (fig5_ax,) = [ax for ax in drawn_figures["fig5.png"].axes if ax.get_lines()]
    for variant in ("no_op", "patch_layer", "patch_circle", "patch_pca", "average_ablate"):
        (line,) = [line for line in fig5_ax.get_lines() if line.get_label() == VARIANT_LABELS[variant]]
        np.testing.assert_allclose(line.get_ydata(), sweep.raw[:, VARIANTS.index(variant)].mean(axis=1), atol=1e-9)
    assert len(drawn_figures["residual_c.png"].axes[0].collections[0].get_offsets()) == 49
    assert [ax.get_title() for ax in drawn_figures["all_pca.png"].axes if ax.collections] == ["Layer 0", "Layer 1", "Layer 2"]
    assert residual_c_panel(cache, 2)[1] == (49, 14)
    code = intervene_in_middle_of_circle.main(["--model", "tiny", "--layer", "2", "--b", "4", "--num_angles", "5", "--radii", "2",
                                               "--base_dir", str(tiny_base), "--device", "cpu"])
    assert any(path.name == "logits_2_15_5_4_a.npz" for path in code)


@pytest.mark.integration
def test_results_table(tiny_base):
    latex, counts = results_table(tiny_base, "days_of_week")
    frame = open_cache(tiny_base).results()
    wrong = int((frame["best_token"] != frame["ground_truth"]).sum())
    assert counts == {"tiny": 49 - wrong}
    assert latex.count(r"\\") - 1 == wrong  # one header row, one row per problem the model gets wrong
    assert "Weekdays" in latex and "Tiny correct?" in latex


@pytest.mark.integration
def test_comparison_methods(tiny_model, tiny_base, tmp_path, capsys):
    cache = open_cache(tiny_base)
    with pytest.raises(MissingArtifactError, match="--sae_pca"):
        run_comparison(cache, tiny_base, CountingLoader(tiny_model), [1, 2], 2, sae_path=None)
    rng = np.random.default_rng(0)
    sae_file = tmp_path / "sae_pca.npz"
    np.savez(sae_file, components=np.linalg.qr(rng.normal(size=(64, 4)))[0].T)
    results = run_comparison(cache, tiny_base, CountingLoader(tiny_model), [1, 2], 2, sae_path=sae_file)
    sweep = run_circle_sweep(cache, DAYS_A, tiny_base, [1, 2], CountingLoader(tiny_model), progress=False, make_figures=False)
    np.testing.assert_allclose(results["per_layer_probe"]["raw"], sweep.raw, atol=1e-6)
    # the fixed probe at its own layer is the per-layer probe there
    np.testing.assert_allclose(results["fixed_layer_probe"]["raw"][1], results["per_layer_probe"]["raw"][1], atol=1e-6)
    written = compare_circle_intervention_types.main(["--model", "tiny", "--probe_layer", "2", "--layers", "1", "2",
                                                      "--sae_pca", str(sae_file), "--base_dir", str(tiny_base), "--device", "cpu"])
    assert set(written) == {"fixed_layer_probe", "sae_subspace", "per_layer_probe"}
    with pytest.raises(UserError):
        run_comparison(cache, tiny_base, CountingLoader(tiny_model), [1, 9], 2, methods=["per_layer_probe"])


@pytest.mark.integration
def test_interrupted_sweep_resumes(tiny_model, tiny_base, tmp_path_factory, tiny_caches, monkeypatch):
    """Ctrl-C during layer 3: layers 1 and 2 stay saved, the rerun computes only layer 3, same final file."""
    import multid.circles.sweep as sweep

    cache = open_cache(tiny_base)
    real = sweep.layer_metrics

    def interrupt_at_layer_3(*args, **kwargs):
        if args[4] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "layer_metrics", interrupt_at_layer_3)
    with pytest.raises(KeyboardInterrupt):
        run_circle_sweep(cache, DAYS_A, tiny_base, [1, 2, 3], CountingLoader(tiny_model), progress=False)
    monkeypatch.setattr(sweep, "layer_metrics", real)
    resumed = run_circle_sweep(cache, DAYS_A, tiny_base, [1, 2, 3], CountingLoader(tiny_model), progress=False)
    assert sorted(resumed.meta["timings_s"]) == ["3"]
    fresh_base = tmp_path_factory.mktemp("fresh_interrupt")
    shutil.copytree(tiny_caches["days_of_week"].folder, fresh_base / "tiny_days_of_week")
    fresh = run_circle_sweep(open_cache(fresh_base), DAYS_A, fresh_base, [1, 2, 3], CountingLoader(tiny_model), progress=False)
    assert resumed.paths["combined"].read_bytes() == fresh.paths["combined"].read_bytes()


# ----------------------------------------------------------------------------------------- review fixes


def pretend_rebuilt(base: Path, tiny_model) -> None:
    """Rebuild the weekday cache with other settings (--answer_tokens bare): it gets a new id."""
    from multid.tasks.cache import build_task_cache
    from multid.tasks.registry import get_task_spec

    old_id = open_cache(base).cache_id
    assert build_task_cache(get_task_spec("days_of_week"), "tiny", base, lambda: tiny_model, answer_mode="bare").cache_id != old_id


@pytest.mark.integration
def test_figure5_refuses_a_sweep_of_an_older_cache(tiny_model, tiny_base, capsys):
    cache = open_cache(tiny_base)
    run_circle_sweep(cache, DAYS_A, tiny_base, [1], CountingLoader(tiny_model), progress=False, make_figures=False)
    out = tiny_base / "figs" / "paper_plots" / "fig5.png"
    assert figure5(find_sweep_results(tiny_base), out).exists()
    pretend_rebuilt(tiny_base, tiny_model)
    with pytest.raises(UserError, match="older activation cache.*circle_probe_interventions.py day a tiny .*--layers 1"):
        figure5(find_sweep_results(tiny_base), out)
    with pytest.raises(SystemExit) as exit_info:  # a step asked for with --part that is not drawn fails the run
        render_figures.main(["--base_dir", str(tiny_base), "--model", "tiny", "--part", "main"])
    assert exit_info.value.code == 1 and "skipped Figure 5" in capsys.readouterr().out


@pytest.mark.integration
def test_figure6_grids_check_the_cache_and_keep_centred_runs_apart(tiny_model, tiny_base):
    cache = open_cache(tiny_base)
    run_circle_sweep(cache, DAYS_A, tiny_base, [1], CountingLoader(tiny_model), progress=False, make_figures=False)
    grid = {"num_angles": 7, "num_radii": 3}
    compute_grid_logits(cache, 1, [2, 3], tiny_base, CountingLoader(tiny_model), **grid)
    upstream = grid_path(tiny_base, cache, 1, 5, 2)
    before = upstream.read_bytes()
    centred = compute_grid_logits(cache, 1, [2, 3], tiny_base, CountingLoader(tiny_model), centered=True, **grid)
    assert upstream.read_bytes() == before and grid_path(tiny_base, cache, 1, 5, 2, centered=True).name.endswith("_a_centered.npz")
    assert grid_figure_path(tiny_base, cache, 1, 5, 2, centered=True).name == f"1_{cache.layout.a_token}_5_2_a_centered.png"
    np.testing.assert_array_equal(load_grid_logits(cache, tiny_base, 1, 5, [2], centered=True)[0].logits, centred[2].logits)
    assert load_grid_logits(cache, tiny_base, 1, 5, [2, 3])[1].meta["centered"] is False
    shutil.copy(grid_path(tiny_base, cache, 1, 5, 3, centered=True), grid_path(tiny_base, cache, 1, 5, 3))
    with pytest.raises(UserError, match="other settings"):
        load_grid_logits(cache, tiny_base, 1, 5, [2, 3])
    pretend_rebuilt(tiny_base, tiny_model)
    expected = "intervene_in_middle_of_circle.py --model tiny --problem_type day --layer 1 --pca_k 5 --b 2 --num_angles 7 --radii 3"
    with pytest.raises(UserError, match=f"older activation cache.*{expected}"):
        load_grid_logits(open_cache(tiny_base), tiny_base, 1, 5, [2])


@pytest.mark.integration
def test_figure6_setting_groups_b_by_layer_and_k(tiny_model, tiny_base):
    cache = open_cache(tiny_base)
    for k in (4, 5):
        params = SweepParams("a", ("cos", "sin"), k, null_permutations=5)
        run_circle_sweep(cache, params, tiny_base, [1], CountingLoader(tiny_model), progress=False, make_figures=False)
    compute_grid_logits(cache, 1, [2, 3], tiny_base, CountingLoader(tiny_model), k=5, num_angles=4, num_radii=2)
    compute_grid_logits(cache, 1, [6], tiny_base, CountingLoader(tiny_model), k=4, num_angles=4, num_radii=2)
    compute_grid_logits(cache, 1, [4], tiny_base, CountingLoader(tiny_model), k=4, num_angles=4, num_radii=2, centered=True)
    selection = render.choose_models(tiny_base, "tiny")
    _, layer, k, bs = render.figure6_setting(selection)
    assert (layer, k, bs) == (1, 4, (6,))  # not the k=5 grids of the same layer, nor the centred one
    assert render.render_figure6(selection).exists()


@pytest.mark.integration
def test_explicit_model_is_drawn_even_if_paper_sweeps_exist(tiny_model, tiny_base):
    cache = open_cache(tiny_base)
    run_circle_sweep(cache, DAYS_A, tiny_base, [1], CountingLoader(tiny_model), progress=False, make_figures=False)
    # a "Mistral" weekdays cache and sweep (copies of the tiny ones)
    shutil.copytree(cache.folder, tiny_base / "mistral_days_of_week")
    shutil.copytree(tiny_base / "figs" / "tiny_days_of_week", tiny_base / "figs" / "mistral_days_of_week")
    explicit = render.choose_models(tiny_base, "tiny")
    assert not explicit.auto and render.render_figure5(explicit).name == "tiny_figure5.png"
    auto = render.choose_models(tiny_base)
    assert auto.auto and auto.models["days_of_week"] == "tiny"
    assert render.render_figure5(auto).name == "combined_intervention.png"


@pytest.mark.unit
def test_sae_file_is_checked_before_the_model_and_cache(tmp_path, capsys):
    code, err = run_cli(compare_circle_intervention_types, ["--base_dir", str(tmp_path), "--device", "cpu"], capsys)
    assert code == 2 and "SAE part of this repo is not implemented yet" in err and "--methods fixed_layer_probe per_layer_probe" in err
    assert not (tmp_path / "mistral_days_of_week").exists()
    no_components = tmp_path / "other.npz"
    np.savez(no_components, weights=np.zeros((3, 64)))
    code, err = run_cli(compare_circle_intervention_types, ["--sae_pca", str(no_components), "--base_dir", str(tmp_path)], capsys)
    assert code == 2 and "no 'components' array" in err
    sae_file = tmp_path / "sae_pca.npz"
    np.savez(sae_file, components=np.eye(4, 64))
    code, err = run_cli(compare_circle_intervention_types,
                        ["--sae_pca", str(sae_file), "--sae_pcs", "-1", "2", "--base_dir", str(tmp_path)], capsys)
    assert code == 2 and "--sae_pcs [-1, 2] must be distinct component indices >= 0" in err
    assert not (tmp_path / "mistral_days_of_week").exists()


@pytest.mark.integration
def test_replaced_sae_file_is_recomputed(tiny_model, tiny_base, tmp_path):
    cache = open_cache(tiny_base)
    rng = np.random.default_rng(1)
    sae_file = tmp_path / "sae_pca.npz"
    np.savez(sae_file, components=np.linalg.qr(rng.normal(size=(64, 4)))[0].T)
    first = run_comparison(cache, tiny_base, CountingLoader(tiny_model), [1], 2, sae_path=sae_file, methods=["sae_subspace"])
    loader = CountingLoader(tiny_model)
    run_comparison(cache, tiny_base, loader, [1], 2, sae_path=sae_file, methods=["sae_subspace"])
    assert loader.calls == 0  # same file: reused
    np.savez(sae_file, components=np.linalg.qr(rng.normal(size=(64, 4)))[0].T)
    loader = CountingLoader(tiny_model)
    second = run_comparison(cache, tiny_base, loader, [1], 2, sae_path=sae_file, methods=["sae_subspace"])
    assert loader.calls == 1 and second["sae_subspace"]["meta"]["sae_sha1"] != first["sae_subspace"]["meta"]["sae_sha1"]


@pytest.mark.unit
def test_full_mode_says_what_it_will_do_and_refuses_model_path(tmp_path, capsys):
    plan = intervene_in_middle_of_circle.full_mode_plan(100, 20)
    assert "mistral, llama" in plan and "layers 0..7" in plan and "day b = 1..7" in plan and "month b = 1..12" in plan
    assert "304 grids of 2000 points" in plan
    code, err = run_cli(intervene_in_middle_of_circle, ["--model_path", str(tmp_path), "--base_dir", str(tmp_path)], capsys)
    assert code == 2 and "full mode" in err and "--model" in err
