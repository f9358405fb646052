"""The paper's figures and tables checked by what they show: points, colours per class, lines per variant
with their values, bands, argmax images, titles, legend entries and table rows (not file sizes).

Unit tests draw from hand-built inputs; integration tests draw from the tiny model's caches and sweeps.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from scipy import stats as scipy_stats

from multid.circles.grid import GridLogits
from multid.circles.probe import VARIANT_LABELS, VARIANTS
from multid.circles.sweep import plot_probe_r2, plot_sweep_means
from multid.figures.intervention_figures import (
    FIGURE5_COLORS,
    FIGURE5_VARIANTS,
    PcaPanel,
    draw_figure5_panel,
    draw_pca_panel,
    figure6,
    results_table,
)
from multid.paper import FIGURE5_CONFIDENCE
from multid.tasks.table1 import write_table1
from tests.test_circle_gaps import hand_built_sweep

DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
               "November", "December")


def wheel(p: int) -> np.ndarray:
    """The class colours: p hues evenly around the HSV wheel (RGB)."""
    return matplotlib.colormaps["hsv"](np.arange(p) / p)[:, :3]


def rgb(colors) -> np.ndarray:
    return np.asarray(colors)[:, :3]


def named_lines(ax) -> list:
    """The plotted series (lines with a legend label; axhline and the like have none)."""
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def band_limits(collection, xs) -> np.ndarray:
    """[len(xs), 2] lowest and highest y of a fill_between polygon at each x."""
    vertices = collection.get_paths()[0].vertices
    return np.array([[vertices[vertices[:, 0] == x, 1].min(), vertices[vertices[:, 0] == x, 1].max()] for x in xs])


def t_band(samples: np.ndarray, confidence: float) -> np.ndarray:
    """[rows, 2] Student-t interval of each row, from scipy (zero width where a row is constant)."""
    rows = []
    for row in samples:
        if np.std(row) == 0:
            rows.append((row.mean(), row.mean()))
        else:
            rows.append(scipy_stats.t.interval(confidence, len(row) - 1, loc=row.mean(), scale=scipy_stats.sem(row)))
    return np.array(rows)


# ----------------------------------------------------------------------------------------- Figure 3 panel


@pytest.mark.unit
def test_pca_panel_points_colours_and_class_names():
    labels = np.tile(np.arange(7), 2)
    angle = 2 * np.pi * labels / 7
    coords = np.stack([np.cos(angle), np.sin(angle)], axis=1) * np.repeat([1.0, 1.2], 7)[:, None] + [3.0, -1.0]
    panel = PcaPanel(coords, labels, DAY_NAMES, "Mistral Weekdays (layer 30)", (0.41, 0.253))
    fig, ax = plt.subplots()
    draw_pca_panel(ax, panel)
    (scatter,) = ax.collections
    np.testing.assert_allclose(scatter.get_offsets(), coords)
    np.testing.assert_allclose(rgb(scatter.get_facecolors()), wheel(7)[labels], atol=1e-6)
    assert [text.get_text() for text in ax.texts] == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    middle = coords.mean(axis=0)
    for value, text in enumerate(ax.texts):  # each name just outside its class centre, away from the middle
        centre = coords[labels == value].mean(axis=0)
        position = np.asarray(text.xyann if hasattr(text, "xyann") else text.get_position())
        assert np.linalg.norm(position - middle) > np.linalg.norm(centre - middle)
        assert np.dot(position - middle, centre - middle) > 0
    assert ax.get_title() == "Mistral Weekdays (layer 30)"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("PC1 (41%)", "PC2 (25%)")
    plt.close(fig)


# ----------------------------------------------------------------------------------------- Figure 5 panel


@pytest.mark.unit
@pytest.mark.parametrize("max_layer, layers", [(None, [3, 5]), (4, [3])])
def test_figure5_panel_lines_bands_and_labels(max_layer, layers):
    result = hand_built_sweep()
    keep = np.isin(result.layers, layers)
    fig, ax = plt.subplots()
    draw_figure5_panel(ax, result, "Tiny Weekdays", max_layer)
    lines = named_lines(ax)
    assert [line.get_label() for line in lines] == ["No-op", "Patch layer", "Patch circle", "Patch PCA", "Average ablate"]
    assert FIGURE5_CONFIDENCE == 0.96
    for line, band, variant in zip(lines, ax.collections, FIGURE5_VARIANTS):
        samples = result.raw[keep, VARIANTS.index(variant)]
        np.testing.assert_array_equal(line.get_xdata(), layers)
        np.testing.assert_allclose(line.get_ydata(), samples.mean(axis=1), atol=1e-12)
        assert to_rgba(line.get_color()) == to_rgba(FIGURE5_COLORS[variant])
        np.testing.assert_allclose(band_limits(band, layers), t_band(samples, 0.96), atol=1e-9)
        np.testing.assert_allclose(rgb(band.get_facecolor()), [to_rgba(FIGURE5_COLORS[variant])[:3]])
    # patch layer at layer 3: runs 3, 5, 1 -> mean 3, band 3 -+ t(0.98, 2 df) * 2 / sqrt 3
    patch_layer = band_limits(ax.collections[1], layers)[0]
    half = scipy_stats.t.ppf(0.98, 2) * 2 / np.sqrt(3)
    np.testing.assert_allclose(patch_layer, [3 - half, 3 + half], atol=1e-9)
    assert half > 4  # a visible band
    assert ax.get_title() == "Tiny Weekdays" and (ax.get_xlabel(), ax.get_ylabel()) == ("Layer", "Logit difference")
    plt.close(fig)


# ----------------------------------------------------------------------------------------- Figure 6


def hand_grid(b: int, p: int, winners: list[int]) -> GridLogits:
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.5], [1.9, 1.9]])
    logits = np.random.default_rng(b).normal(size=(len(points), p)) * 0.1
    logits[np.arange(len(points)), winners] = 1.0 + np.arange(len(points))
    angles = np.arctan2(points[:, 1], points[:, 0])
    return GridLogits(logits, points, angles, np.linalg.norm(points, axis=1), b, p, {})


@pytest.mark.unit
@pytest.mark.parametrize("p, names, unit", [(7, DAY_NAMES, "Days"), (12, MONTH_NAMES, "Months")])
def test_figure6_argmax_images_titles_and_legend(tmp_path, drawn_figures, p, names, unit):
    winners = {2: [0, 3, 6, 2, 5, 1], 5: [4, 4, 0, 1, 6, 2]}
    grids = [hand_grid(b, p, winners[b]) for b in (2, 5)]
    path = figure6(grids, names, tmp_path / "fig6.png")
    assert path.exists()
    fig = drawn_figures["fig6.png"]
    panels = [ax for ax in fig.axes if ax.collections]
    assert len(panels) == 2
    for ax, grid in zip(panels, grids):
        (scatter,) = ax.collections
        np.testing.assert_allclose(scatter.get_offsets(), grid.points)
        np.testing.assert_allclose(rgb(scatter.get_facecolors()), wheel(p)[winners[grid.b]], atol=1e-6)
        assert ax.get_title() == f"Task Duration = {grid.b} {unit}"
        assert ax.get_xlim() == (-2.0, 2.0) and ax.get_ylim() == (-2.0, 2.0)
    (legend,) = fig.legends
    assert [text.get_text() for text in legend.get_texts()] == list(names)
    np.testing.assert_allclose([to_rgba(handle.get_color())[:3] for handle in legend.legend_handles], wheel(p), atol=1e-6)


# ----------------------------------------------------------------------------------------- per-sweep figures


def sweep_with_meta():
    result = hand_built_sweep()
    result.meta = {"model": "tiny", "task": "days_of_week",
                   "params": {"letter": "a", "targets": ["cos", "sin"], "pca_k": 5, "null_permutations": 20}}
    return result


@pytest.mark.unit
def test_sweep_means_figure_has_one_line_per_variant(tmp_path, drawn_figures):
    result = sweep_with_meta()
    plot_sweep_means(result, tmp_path / "means.png")
    (ax,) = drawn_figures["means.png"].axes
    lines = named_lines(ax)
    assert [line.get_label() for line in lines] == [VARIANT_LABELS[variant] for variant in VARIANTS]
    for line, variant in zip(lines, VARIANTS):
        np.testing.assert_array_equal(line.get_xdata(), [3, 5])
        np.testing.assert_allclose(line.get_ydata(), result.raw[:, VARIANTS.index(variant)].mean(axis=1), atol=1e-12)
    assert ax.get_title() == "tiny days_of_week: intervene on a (cos_sin, k=5)"
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [VARIANT_LABELS[variant] for variant in VARIANTS]


@pytest.mark.unit
def test_probe_r2_figure_shows_targets_mean_and_the_null(tmp_path, drawn_figures):
    result = sweep_with_meta()
    plot_probe_r2(result, tmp_path / "r2.png")
    (ax,) = drawn_figures["r2.png"].axes
    series = {line.get_label(): line.get_ydata() for line in named_lines(ax)}
    assert list(series) == ["R$^2$ cos", "R$^2$ sin", "R$^2$ mean", "relabel null mean"]
    np.testing.assert_allclose(series["R$^2$ cos"], [0.9, 0.5])
    np.testing.assert_allclose(series["R$^2$ sin"], [0.7, 0.3])
    np.testing.assert_allclose(series["R$^2$ mean"], [0.8, 0.4])
    np.testing.assert_allclose(series["relabel null mean"], [0.25, 0.5])
    (band,) = ax.collections
    np.testing.assert_allclose(band_limits(band, [3, 5]), [[0.0, 0.5], [0.0, 0.75]])  # up to the null's 95th percentile
    assert band.get_label() == "relabel null (up to 95th pct)"
    assert ax.get_title() == "tiny days_of_week: probe of a (PCA-5, 20 relabellings)"


# ----------------------------------------------------------------------------------------- Tables 1-3


def write_results(base: Path, model: str, task: str, rows: list[tuple]) -> None:
    """results.csv of (a, b, c, ground_truth, model_out, best_token); model_correct = model_out == ground_truth."""
    folder = base / f"{model}_{task}"
    folder.mkdir(parents=True)
    lines = ["a,b,c,ground_truth,model_out,model_correct,best_token"]
    lines += [f"{a},{b},{c},{truth},{out},{out == truth},{best}" for a, b, c, truth, out, best in rows]
    (folder / "results.csv").write_text("\n".join(lines) + "\n")


DAYS_ROWS = [  # (a, b, c, ground truth): Tuesday + 7, Monday + 1, Sunday + 2
    (1, 7, 1, "Tuesday"), (0, 1, 1, "Tuesday"), (6, 2, 1, "Tuesday"),
]


@pytest.mark.unit
def test_table1_counts_top_logit_and_greedy_answers(tmp_path):
    base = tmp_path / "base"
    # alpha: top logit right on 2 of 3 weekdays, greedy right on 1; right on 1 of 2 months; beta: weekdays only, 3 / 3
    write_results(base, "alpha", "days_of_week", [(*DAYS_ROWS[0], "Tuesday", "Tuesday"), (*DAYS_ROWS[1], "the", "Tuesday"),
                                                  (*DAYS_ROWS[2], "Monday", "Monday")])
    write_results(base, "alpha", "months_of_year", [(0, 1, 1, "February", "February", "February"), (0, 2, 2, "March", "May", "May")])
    write_results(base, "beta", "days_of_week", [(*row, "Tuesday", "Tuesday") for row in DAYS_ROWS])
    text, (csv_path, tex_path) = write_table1(base)
    lines = text.splitlines()
    assert lines[0].split() == ["model", "Weekdays", "Months"]
    assert [line.split() for line in lines[1:]] == [["alpha", "2", "/", "3", "1", "/", "2"], ["beta", "3", "/", "3", "-"]]
    assert csv_path.read_text().splitlines() == ["model,task,correct,total,greedy_exact_match", "alpha,days_of_week,2,3,1",
                                                 "beta,days_of_week,3,3,3", "alpha,months_of_year,1,2,1"]
    tex = tex_path.read_text()
    assert "Model & Weekdays & Months \\\\" in tex
    assert "alpha & 2 / 3 & 1 / 2 \\\\" in tex and "beta & 3 / 3 & - \\\\" in tex


@pytest.mark.unit
def test_results_table_lists_the_problems_some_model_gets_wrong(tmp_path):
    base = tmp_path / "base"
    rows = [(1, 7, 1, "Tuesday"), (0, 1, 1, "Tuesday"), (6, 2, 1, "Tuesday"), (3, 3, 6, "Sunday")]
    write_results(base, "mistral", "days_of_week", [(*rows[0], "x", "Tuesday"), (*rows[1], "x", "Monday"),
                                                    (*rows[2], "x", "Tuesday"), (*rows[3], "x", "Sunday")])
    write_results(base, "llama", "days_of_week", [(*rows[0], "x", "Tuesday"), (*rows[1], "x", "Tuesday"),
                                                  (*rows[2], "x", "Friday"), (*rows[3], "x", "Sunday")])
    latex, counts = results_table(base, "days_of_week")
    assert counts == {"mistral": 3, "llama": 3}
    body = latex.split("\\midrule\n")[1].split("\n\\bottomrule")[0].splitlines()
    # sorted by (b, a); rows both models get right (Tuesday + 7, Thursday + 3) are left out
    assert body == [
        "Monday & 1 & Tuesday & Monday & No & Tuesday & Yes \\\\",
        "Sunday & 2 & Tuesday & Tuesday & Yes & Friday & No \\\\",
    ]
    assert "Mistral top-logit $\\gamma$ & Mistral correct? & Llama top-logit $\\gamma$ & Llama correct?" in latex
    assert "Mistral 3/4 correct, Llama 3/4 correct" in latex and "Weekdays problems" in latex


# ----------------------------------------------------------------------------------------- tiny model


@pytest.fixture()
def tiny_copy(tmp_path, tiny_caches) -> Path:
    for cache in tiny_caches.values():
        shutil.copytree(cache.folder, tmp_path / cache.folder.name)
    return tmp_path


@pytest.mark.integration
def test_figure3_residual_c_and_all_layer_pca_on_the_tiny_caches(tiny_copy, drawn_figures):
    from multid.figures.intervention_figures import all_layer_pca_grid, figure3, residual_c_figure, residual_c_panel
    from multid.tasks.cache import TaskCache

    days, months = (TaskCache.open(tiny_copy, "tiny", task) for task in ("days_of_week", "months_of_year"))
    figure3([days, months], tiny_copy / "fig3.png", layers=[2, 1])
    axes = drawn_figures["fig3.png"].axes
    assert [ax.get_title() for ax in axes] == ["Tiny Weekdays (layer 2)", "Tiny Months (layer 1)"]
    for ax, cache, layer in zip(axes, (days, months), (2, 1)):
        (scatter,) = ax.collections
        a = cache.infos[:, 0]
        np.testing.assert_allclose(scatter.get_offsets(), cache.get_pca(layer, cache.layout.a_token, 5).coords[:, :2], atol=1e-6)
        np.testing.assert_allclose(rgb(scatter.get_facecolors()), wheel(cache.p)[a], atol=1e-6)
        assert len(scatter.get_offsets()) == {7: 49, 12: 144}[cache.p]
        assert [text.get_text() for text in ax.texts] == [name[:3] for name in cache.meta["answer_words"]]

    residual_c_figure(days, tiny_copy / "residual_c.png", layer=2)
    (ax,) = drawn_figures["residual_c.png"].axes
    (scatter,) = ax.collections
    panel, shape = residual_c_panel(days, 2)
    assert shape == (49, 14)
    np.testing.assert_allclose(scatter.get_offsets(), panel.coords, atol=1e-6)
    np.testing.assert_allclose(rgb(scatter.get_facecolors()), wheel(7)[days.infos[:, 2]], atol=1e-6)  # coloured by c
    assert ax.get_title().endswith("colour = c")

    all_layer_pca_grid(days, tiny_copy / "all_pca.png")
    fig = drawn_figures["all_pca.png"]
    panels = [ax for ax in fig.axes if ax.collections]
    assert [ax.get_title() for ax in panels] == ["Layer 0", "Layer 1", "Layer 2"]
    for layer, ax in enumerate(panels):
        (scatter,) = ax.collections
        np.testing.assert_allclose(scatter.get_offsets(), days.get_pca(layer, days.layout.a_token, 5).coords[:, :2], atol=1e-6)
        np.testing.assert_allclose(rgb(scatter.get_facecolors()), wheel(7)[days.infos[:, 0]], atol=1e-6)
    (legend,) = fig.legends
    assert [text.get_text() for text in legend.get_texts()] == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    assert fig._suptitle.get_text() == "Tiny Weekdays: start-word token, PCA by layer"


@pytest.mark.integration
def test_figure5_of_a_tiny_sweep_draws_its_means_and_t_bands(tiny_model, tiny_copy, drawn_figures):
    from multid.circles.sweep import SweepParams, run_circle_sweep
    from multid.figures.intervention_figures import figure5, find_sweep_results
    from multid.tasks.cache import TaskCache

    cache = TaskCache.open(tiny_copy, "tiny", "days_of_week")
    params = SweepParams("a", ("cos", "sin"), 5, null_permutations=5)
    result = run_circle_sweep(cache, params, tiny_copy, [1, 2], lambda: tiny_model, progress=False, make_figures=False)
    figure5(find_sweep_results(tiny_copy), tiny_copy / "fig5.png")
    fig = drawn_figures["fig5.png"]
    (ax,) = [ax for ax in fig.axes if ax.get_lines()]
    assert ax.get_title() == "Tiny Weekdays"
    lines = named_lines(ax)
    assert [line.get_label() for line in lines] == [VARIANT_LABELS[variant] for variant in FIGURE5_VARIANTS]
    for line, band, variant in zip(lines, ax.collections, FIGURE5_VARIANTS):
        samples = result.raw[:, VARIANTS.index(variant)]
        np.testing.assert_array_equal(line.get_xdata(), [1, 2])
        np.testing.assert_allclose(line.get_ydata(), samples.mean(axis=1), atol=1e-9)
        np.testing.assert_allclose(band_limits(band, [1, 2]), t_band(samples, FIGURE5_CONFIDENCE), atol=1e-6)
    (legend,) = fig.legends
    assert [text.get_text() for text in legend.get_texts()] == [VARIANT_LABELS[variant] for variant in FIGURE5_VARIANTS]
