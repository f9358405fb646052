"""The paper's intervention figures and tables as functions of cached artifacts (no model needed).

Each function reads what the scripts wrote under the base dir, draws with matplotlib (no LaTeX) and
saves atomically; the notebooks and the demo call these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from multid.tasks.cache import TaskCache  # noqa: E402
from multid.circles.probe import probe_r2  # noqa: E402
from multid.tasks.paths import models_with  # noqa: E402
from multid.tasks.registry import TASK_TITLES  # noqa: E402
from multid.config import paper_plots_dir  # noqa: E402,F401  (re-exported for the notebooks)
from multid.errors import UserError  # noqa: E402
from multid.io import save_figure  # noqa: E402
from multid.plotting import answer_colors, answer_legend_handles  # noqa: E402
from multid.paper import FIGURE3_LAYERS, FIGURE5_CONFIDENCE, FIGURE5_MAX_LAYER, MODEL_TITLES, PAPER_MODELS, RESIDUAL_C  # noqa: E402
from multid.stats import t_interval  # noqa: E402

# Figure 3 of the paper: Mistral weekdays at cache layer 30, Llama months at cache layer 3 (a-token).


@dataclass(frozen=True)
class PcaPanel:
    coords: np.ndarray  # [n, 2]
    labels: np.ndarray  # [n] ints in 0..p-1
    names: Sequence[str]  # p label names
    title: str
    explained: Sequence[float] = ()


def draw_pca_panel(ax, panel: PcaPanel) -> None:
    """Scatter PC1 vs PC2 coloured by label, each class centroid marked with its 3-letter name."""
    p = len(panel.names)
    colors = answer_colors(p)
    ax.scatter(panel.coords[:, 0], panel.coords[:, 1], c=colors[panel.labels], s=18, alpha=0.8, edgecolors="none")
    middle = panel.coords.mean(axis=0)
    span = np.ptp(panel.coords, axis=0).max() or 1.0
    for value in range(p):
        members = panel.coords[panel.labels == value]
        if len(members):
            centre = members.mean(axis=0)
            outward = centre - middle
            outward = outward / (np.linalg.norm(outward) or 1.0)
            ax.annotate(panel.names[value][:3], centre + 0.09 * span * outward, fontsize=7, ha="center", va="center",
                        color=colors[value] * np.array([0.7, 0.7, 0.7, 1.0]), weight="bold")
    ax.margins(0.15)
    axis_names = ["PC1", "PC2"]
    if len(panel.explained) >= 2:
        axis_names = [f"PC{i + 1} ({100 * panel.explained[i]:.0f}%)" for i in range(2)]
    ax.set_xlabel(axis_names[0], fontsize=8)
    ax.set_ylabel(axis_names[1], fontsize=8)
    ax.set_title(panel.title, fontsize=9)
    ax.tick_params(labelsize=7)


def start_token_panel(cache: TaskCache, layer: int) -> PcaPanel:
    """PCA-2 of the start-word (a) token at one cache layer, coloured by a."""
    fit = cache.get_pca(layer, cache.layout.a_token, 5)
    title = f"{MODEL_TITLES.get(cache.model, cache.model)} {TASK_TITLES[cache.task]} (layer {layer})"
    return PcaPanel(fit.coords[:, :2], cache.infos[:, 0], cache.meta["answer_words"], title, fit.explained_variance_ratio)


def best_probe_layer(cache: TaskCache, k: int = 5) -> int:
    """The cache layer where the cos/sin probe of a (PCA-k, a-token) has the highest mean R^2."""
    scores = [
        probe_r2(cache.get_pca(layer, cache.layout.a_token, k).coords, cache.infos[:, 0], cache.p)
        for layer in range(1, cache.n_cache_layers)
    ]
    return 1 + int(np.nanargmax(scores))


def figure3_layer(cache: TaskCache) -> int:
    """The paper's layer for Mistral weekdays / Llama months, else the best-probe layer."""
    return FIGURE3_LAYERS.get((cache.model, cache.task)) or best_probe_layer(cache)


def figure3(caches: Sequence[TaskCache], out_path: Path, layers: Sequence[int | None] | None = None) -> Path:
    """Figure 3: PCA of the start-word token, one panel per (model, task) cache."""
    layers = list(layers) if layers is not None else [None] * len(caches)
    panels = [start_token_panel(cache, layer if layer is not None else figure3_layer(cache)) for cache, layer in zip(caches, layers)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        draw_pca_panel(ax, panel)
    fig.tight_layout()
    save_figure(fig, out_path, dpi=200, close=True)
    return out_path


# =============================================================================================
# Circle interventions: Figure 5, Figure 6, residual-c panel, appendix PCA grids, Tables 2/3
# =============================================================================================

FIGURE5_VARIANTS = ("no_op", "patch_layer", "patch_circle", "patch_pca", "average_ablate")
FIGURE5_COLORS = {"no_op": "tab:gray", "patch_layer": "tab:blue", "patch_circle": "tab:red", "patch_pca": "tab:green",
                  "average_ablate": "tab:orange"}


def find_sweep_results(
    base_dir: Path, letter: str = "a", targets: Sequence[str] = ("cos", "sin"), k: int = 5
) -> list[tuple[str, str, Path]]:
    """(model, task, combined file) of every finished default-formula sweep of a cached model, paper runs first."""
    from multid.circles.sweep import SweepParams, combined_path

    params = SweepParams(letter, tuple(targets), k)
    found = []
    for task in TASK_TITLES:
        for model in models_with(base_dir, task, "meta.json"):
            path = combined_path(base_dir, TaskCache.open(base_dir, model, task), params)
            if path.exists():
                found.append((model, task, path))
    rank = {model: index for index, model in enumerate(PAPER_MODELS)}
    return sorted(found, key=lambda item: (rank.get(item[0], len(rank)), item[0], list(TASK_TITLES).index(item[1])))


def figure5_max_layer(model: str) -> int | None:
    """Paper models are cut at cache layer 24 as in the paper; other models show every finished layer."""
    return FIGURE5_MAX_LAYER if model in PAPER_MODELS else None


def draw_figure5_panel(ax, result, title: str, max_layer: int | None) -> None:
    """Mean and 96% t-interval of logit[c] - logit[c'] vs layer for the five plotted variants."""
    from multid.circles.probe import VARIANT_LABELS, VARIANTS

    keep = np.ones(len(result.layers), bool) if max_layer is None else result.layers <= max_layer
    layers = result.layers[keep]
    for variant in FIGURE5_VARIANTS:
        mean, half = t_interval(result.raw[keep, VARIANTS.index(variant), :], FIGURE5_CONFIDENCE)
        color = FIGURE5_COLORS[variant]
        ax.plot(layers, mean, color=color, marker="o", markersize=2.5, linewidth=1.2, label=VARIANT_LABELS[variant])
        ax.fill_between(layers, mean - half, mean + half, color=color, alpha=0.2, linewidth=0)
    ax.axhline(0, color="0.7", linewidth=0.6)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("Layer", fontsize=8)
    ax.set_ylabel("Logit difference", fontsize=8)
    ax.tick_params(labelsize=7)


def figure5(
    runs: Sequence[tuple[str, str, Path]], out_path: Path, max_layer: int | None | str = "paper", base_dir: Path | None = None
) -> Path:
    """Figure 5: one panel per (model, task) sweep of letter a; a 2x2 grid for the four paper runs.

    runs: (model, task, combined-file path), e.g. from `find_sweep_results`. max_layer "paper" cuts
    Mistral/Llama at layer 24 (as the paper) and shows all finished layers of other models. Each sweep
    must come from the current cache of its model and task under `base_dir` (default: the base dir the
    file lies under); one from an older cache raises a UserError naming the command that recomputes it.
    """
    from multid.circles.sweep import SweepParams, load_current_sweep, sweep_base_dir, sweep_command

    if not runs:
        raise UserError("no finished a-circle sweep found; run e.g. " + sweep_command("smollm2", "days_of_week", SweepParams("a")))
    results = [
        load_current_sweep(Path(base_dir) if base_dir is not None else sweep_base_dir(path), model, task, path)
        for model, task, path in runs
    ]
    n = len(runs)
    rows, cols = (2, 2) if n == 4 else (int(np.ceil(n / 4)), min(n, 4))
    legend_width = 1.4 if cols == 1 else 0.0  # one panel: legend on the right, else below
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols + legend_width, 2.6 * rows), squeeze=False)
    for ax, (model, task, _), result in zip(axes.ravel(), runs, results):
        limit = figure5_max_layer(model) if max_layer == "paper" else max_layer
        draw_figure5_panel(ax, result, f"{MODEL_TITLES.get(model, model)} {TASK_TITLES[task]}", limit)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    if cols == 1:
        fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0, 1 - legend_width / fig.get_figwidth(), 1))
    else:
        fig.legend(handles, labels, loc="lower center", ncol=len(FIGURE5_VARIANTS), fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0.08 / rows, 1, 1))
    save_figure(fig, out_path, dpi=200, close=True)
    return out_path


def load_grid_logits(cache: TaskCache, base_dir: Path, layer: int, k: int, bs: Sequence[int], centered: bool = False) -> list:
    """Stored Figure 6 grids of these b, checked against the current cache and these settings.

    A missing grid raises MissingArtifactError, one made from another cache or with other settings a
    UserError; both name the command that (re)computes the grids.
    """
    import json

    from multid.circles.grid import GridLogits, grid_command, grid_meta, grid_path
    from multid.errors import MissingArtifactError
    from multid.io import load_npz

    grids = []
    for b in bs:
        path = grid_path(base_dir, cache, layer, k, b, centered)
        if not path.exists():
            raise MissingArtifactError(f"Figure 6 logits for b={b}", path, grid_command(cache, layer, k, bs, centered, base_dir=base_dir))
        stored = load_npz(path)
        meta = json.loads(str(stored["meta_json"]))
        num_angles, num_radii = meta.get("num_angles"), meta.get("num_radii")
        if meta != grid_meta(cache, layer, k, b, num_angles, num_radii, centered):
            command = grid_command(cache, layer, k, bs, centered, num_angles, num_radii, base_dir)
            raise UserError(f"{path} was computed from an older activation cache of {cache.model} / {cache.task} or with "
                            f"other settings; recompute it with: {command}")
        grids.append(GridLogits(stored["logits"], stored["points"], stored["angles"], stored["radii"], b, cache.p, meta))
    return grids


def figure6(grids: Sequence, names: Sequence[str], out_path: Path, limit: float = 2.0) -> Path:
    """Figure 6: points of the probe plane coloured by the answer with the highest logit, one panel per b."""
    if not grids:
        raise UserError("Figure 6 needs at least one grid of logits")
    p = grids[0].p
    colors = answer_colors(p)
    unit = "Days" if p == 7 else "Months"
    fig, axes = plt.subplots(1, len(grids), figsize=(2.4 * len(grids), 2.75), squeeze=False)
    for ax, grid in zip(axes[0], grids):
        ax.scatter(grid.points[:, 0], grid.points[:, 1], c=colors[grid.logits.argmax(axis=1)], s=4, edgecolors="none")
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.set_title(f"Task Duration = {grid.b} {unit}", fontsize=8)
        ax.tick_params(labelsize=6)
    handles = answer_legend_handles(names, short=None, colors=colors)
    legend = fig.legend(handles=handles, loc="center right", ncol=1, fontsize=6, frameon=False)
    for handle in legend.legend_handles:
        handle.set_markersize(5)
    fig.tight_layout(rect=(0, 0, 1 - 0.9 / fig.get_figwidth(), 1))
    save_figure(fig, out_path, dpi=200, close=True)
    return out_path


def default_residual_c_layer(cache: TaskCache) -> int:
    """The paper's layer 25 (of 32) for Mistral, the same depth fraction for other models."""
    if cache.model == RESIDUAL_C["model"]:
        return RESIDUAL_C["layer"]
    return int(round(RESIDUAL_C["layer"] / 32 * (cache.n_cache_layers - 1)))


def residual_c_panel(cache: TaskCache, layer: int | None = None) -> tuple[PcaPanel, tuple[int, int]]:
    """PCA-2 of the last-token activations after regressing out one-hot a and one-hot b, coloured by c.

    The regression is fit 5 of docs/least_squares.md.

    Main-text notebook cell 4: np.linalg.lstsq on [one-hot a (p cols) | one-hot b (p cols, b = 1..p)],
    no intercept (the one-hots span it). Returns the panel and the design shape (upstream printed it).
    """
    from multid.tasks.cache import fit_pca
    from multid.circles.probe import one_hot

    layer = default_residual_c_layer(cache) if layer is None else layer
    acts = cache.get_acts(layer, cache.layout.before_c_token).double().numpy()
    a, b, c = cache.infos[:, 0], cache.infos[:, 1], cache.infos[:, 2]
    design = np.concatenate([one_hot(a, cache.p), one_hot(b - 1, cache.p)], axis=1)
    beta = np.linalg.lstsq(design, acts, rcond=None)[0]
    fit = fit_pca(acts - design @ beta, 2)
    title = f"{MODEL_TITLES.get(cache.model, cache.model)} {TASK_TITLES[cache.task]} (layer {layer})\nresidual after one-hot a, b; colour = c"
    return PcaPanel(fit.coords, c, cache.meta["answer_words"], title, fit.explained_variance_ratio), design.shape


def residual_c_figure(cache: TaskCache, out_path: Path, layer: int | None = None) -> Path:
    """The residual-c PCA panel (paper: Mistral weekdays, layer 25, mistral_residuals_c_pca)."""
    panel, _ = residual_c_panel(cache, layer)
    fig, ax = plt.subplots(figsize=(3.4, 3.2))
    draw_pca_panel(ax, panel)
    fig.tight_layout()
    save_figure(fig, out_path, dpi=200, close=True)
    return out_path


def all_layer_pca_grid(cache: TaskCache, out_path: Path, layers: Sequence[int] | None = None, cols: int = 8) -> Path:
    """Appendix grid: PCA-2 of the start-word token at every layer (upstream: cache layers 0..31 of 33), coloured by a."""
    layers = list(range(cache.n_cache_layers - 1)) if layers is None else list(layers)
    cols = max(1, min(cols, len(layers)))
    rows = int(np.ceil(len(layers) / cols))
    colors = answer_colors(cache.p)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows + 0.5), squeeze=False)
    for ax, layer in zip(axes.ravel(), layers):
        fit = cache.get_pca(layer, cache.layout.a_token, 5)
        ax.scatter(fit.coords[:, 0], fit.coords[:, 1], c=colors[cache.infos[:, 0]], s=5, edgecolors="none")
        ax.set_title(f"Layer {layer}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[len(layers):]:
        ax.axis("off")
    names = cache.meta["answer_words"]
    handles = answer_legend_handles(names, colors=colors)
    fig.legend(handles=handles, loc="lower center", ncol=min(cache.p, 12), fontsize=7, frameon=False)
    fig.suptitle(f"{MODEL_TITLES.get(cache.model, cache.model)} {TASK_TITLES[cache.task]}: start-word token, PCA by layer", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    save_figure(fig, out_path, dpi=150, close=True)
    return out_path


def all_layer_pca_path(base_dir: Path, cache: TaskCache) -> Path:
    return all_layer_pca_file(base_dir, cache.model, cache.task)


def all_layer_pca_file(base_dir: Path, model: str, task: str) -> Path:
    return paper_plots_dir(base_dir) / f"{model}_{TASK_TITLES[task].lower()}_all_pca.png"


def results_table_models(base_dir: Path, task: str) -> list[str]:
    """Mistral and Llama if their results.csv exist (the paper's tables), else every model found."""
    found = models_with(base_dir, task, "results.csv")
    paper = [model for model in PAPER_MODELS if model in found]
    return paper or found


def results_table(base_dir: Path, task: str, models: Sequence[str] | None = None) -> tuple[str, dict[str, int]]:
    """Tables 2/3: problems that some model gets wrong, with each model's top-logit answer (LaTeX) and correct counts.

    Rows merged on (a, b, ground truth) across models, correctness = best_token == ground_truth
    (top logit among the p answer words), sorted by (b, a); rows every model gets right are dropped.
    Upstream captioned both tables "Weekdays"; the caption here names the task.
    """
    from multid.tasks.paths import build_cache_command, load_results_csv, results_csv_path, task_dir

    models = list(models) if models else results_table_models(base_dir, task)
    if not models:
        raise UserError(f"no results.csv for {task} under {base_dir}; build one with: "
                        f"{build_cache_command('smollm2', task, base_dir=base_dir)}")
    merged, counts = None, {}
    for model in models:
        frame = load_results_csv(results_csv_path(task_dir(base_dir, model, task)))
        frame = frame[["a", "b", "ground_truth", "best_token"]].rename(columns={"best_token": f"top_{model}"})
        frame[f"ok_{model}"] = frame[f"top_{model}"] == frame["ground_truth"]
        counts[model] = int(frame[f"ok_{model}"].sum())
        merged = frame if merged is None else merged.merge(frame, on=["a", "b", "ground_truth"])
    merged = merged.sort_values(["b", "a"])
    merged = merged[~merged[[f"ok_{model}" for model in models]].all(axis=1)]
    words = list(get_task_words(task))
    header = ["$\\alpha$", "$\\beta$", "Ground truth $\\gamma$"]
    for model in models:
        title = MODEL_TITLES.get(model, model)
        header += [f"{title} top-logit $\\gamma$", f"{title} correct?"]
    lines = []
    for _, row in merged.iterrows():
        cells = [words[int(row["a"])], str(int(row["b"])), str(row["ground_truth"])]
        for model in models:
            cells += [str(row[f"top_{model}"]), "Yes" if row[f"ok_{model}"] else "No"]
        lines.append(" & ".join(cells) + r" \\")
    total = len(load_results_csv(results_csv_path(task_dir(base_dir, models[0], task))))
    caption = (f"{TASK_TITLES[task]} problems that at least one model gets wrong (correct = highest logit among the "
               f"{len(words)} answer words; " + ", ".join(f"{MODEL_TITLES.get(m, m)} {counts[m]}/{total} correct" for m in models) + ").")
    body = "\n".join(lines)
    latex = (
        "\\begin{table}[h]\n\\centering\n\\small\n"
        f"\\begin{{tabular}}{{{'l' * len(header)}}}\n\\toprule\n" + " & ".join(header) + " \\\\\n\\midrule\n"
        f"{body}\n\\bottomrule\n\\end{{tabular}}\n\\caption{{{caption}}}\n\\end{{table}}\n"
    )
    return latex, counts


def get_task_words(task: str) -> tuple[str, ...]:
    from multid.tasks.registry import get_task_spec

    return get_task_spec(task).allowable_tokens


def write_results_table(base_dir: Path, task: str, models: Sequence[str] | None = None) -> tuple[Path, dict[str, int]]:
    """Save Table 2 (weekdays) / 3 (months) as figs/paper_plots/<task>_results.tex; return (path, correct counts)."""
    from multid.io import write_text_atomic

    latex, counts = results_table(base_dir, task, models)
    return write_text_atomic(results_table_path(base_dir, task), latex), counts


def results_table_path(base_dir: Path, task: str) -> Path:
    return paper_plots_dir(base_dir) / f"{task}_results.tex"
