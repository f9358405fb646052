"""Activation-patching figures and the head table (appendix notebook cells 3-5, spec §5.2), from saved arrays.

Every function here reads what `intervention/activation_patching.py` wrote under the base dir and
needs no model:
- `sweep_heatmap`: the mean of one sweep over all positions (the png beside each .npz, as upstream);
- `layer_patching_heatmap`: MLP / attention (or resid) patching, same-a and same-b pairs together,
  positions cropped to the named prompt tokens, negatives clipped to 0, OrRd (cell 3);
- `head_patching_heatmap`: the same for attention heads, layers x heads, plus the top-10 cells (cell 4);
- `head_table`: per top head, R^2 of its output at the last prompt token explained by one-hot a, b
  (+ constant) and by one-hot a, b, c (+ constant); LaTeX and CSV (cell 5, Table 4).
Fixes: y tick labels come from the cache's token map (upstream hard-coded them, and the Weekdays list
did not follow the rows, spec §6.13); the head table's one-hot blocks cover every value of a, b, c
(upstream used 8 indicators, which misses months >= 8; `indicators="8"` restores that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from multid.tasks.cache import TaskCache  # noqa: E402
from multid.circles.probe import do_regression, one_hot  # noqa: E402
from multid.config import paper_plots_dir  # noqa: E402
from multid.paper import MODEL_TITLES  # noqa: E402
from multid.tasks.registry import TASK_TITLES  # noqa: E402
from multid.patching.activation import (  # noqa: E402
    DEFAULT_NUM_PAIRS,
    KEEP_SAME,
    PatchingResult,
    combined_head_grid,
    head_outputs_path,
    load_patching_result,
    patching_command,
    read_patching_result,
    top_heads,
)
from multid.errors import MissingArtifactError, UserError  # noqa: E402
from multid.io import load_npz, save_csv, save_figure, write_text_atomic  # noqa: E402

LAYER_TYPE_TITLES = {"resid": "Residual stream", "mlp": "MLP", "attention": "Attention", "attention_head": "Attention head"}
INDICATOR_MODES = ("p", "8")
HEAD_TABLE_COLUMNS = (
    "Layer",
    "Head",
    "Average Intervention Effect",
    "EVR R^2 (one-hot a,b)",
    "EVR R^2 (one-hot a,b,c)",
)


def figure_title(model: str, task: str, what: str) -> str:
    return f"{MODEL_TITLES.get(model, model)} {TASK_TITLES.get(task, task)}: {what} patching"


def draw_heatmap(
    ax, grid: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], xlabel: str, ylabel: str, title: str,
    diverging: bool = False,
) -> None:
    """Image of grid [rows, cols] with every row and column labelled: OrRd (clipped grids) or RdBu_r centred at 0."""
    if diverging:
        limit = float(np.nanmax(np.abs(grid))) or 1.0
        image = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    else:
        image = ax.imshow(grid, cmap="OrRd", aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(row_labels)), [str(label) for label in row_labels], fontsize=7)
    ax.set_xticks(range(len(col_labels)), [str(label) for label in col_labels], fontsize=7, rotation=90)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(image, ax=ax, fraction=0.04, pad=0.02).ax.tick_params(labelsize=7)


def save_pdf_and_png(fig, stem: Path) -> list[Path]:
    paths = [save_figure(fig, stem.with_suffix(".pdf")), save_figure(fig, stem.with_suffix(".png"), dpi=150)]
    plt.close(fig)
    return paths


# ------------------------------------------------------------------------------------ one sweep


def sweep_heatmap(npz_path: Path, out_path: Path | None = None) -> Path:
    """Heat map of one saved sweep's mean over pairs (all positions or all heads), as `<npz>.png`.

    Not clipped, so negative effects show (blue, diverging colours centred at 0).
    """
    result = read_patching_result(Path(npz_path))
    out_path = Path(out_path) if out_path is not None else Path(npz_path).with_suffix(".png")
    params = result.params
    heads = params["layer_type"] == "attention_head"
    if heads:
        grid, rows, cols, xlabel, ylabel = result.mean, result.layers, result.sites, "Head", "Layer"
    else:
        labels = [f"{int(pos)}: {str(result.position_labels[pos]).strip()}" for pos in result.sites]
        grid, rows, cols, xlabel, ylabel = result.mean.T, labels, result.layers, "Layer", "Position"
    title = f"{LAYER_TYPE_TITLES[params['layer_type']]}, keep same {params['keep_same']}, mean of {len(result.pairs)} pairs"
    fig, ax = plt.subplots(figsize=(max(4.0, 0.22 * len(cols) + 2), max(3.0, 0.2 * len(rows) + 1.2)))
    draw_heatmap(ax, grid, rows, cols, xlabel, ylabel, title, diverging=True)
    fig.tight_layout()
    save_figure(fig, out_path, dpi=150)
    plt.close(fig)
    return out_path


# ------------------------------------------------------------------------------------ cells 3 and 4


def load_both(base_dir: Path, model: str, task: str, layer_type: str, num_pairs: int, cache: TaskCache) -> list[PatchingResult]:
    """The same-a and same-b sweeps, checked to come from the current cache."""
    return [load_patching_result(base_dir, model, task, layer_type, keep, num_pairs, cache.cache_id) for keep in KEEP_SAME]


def combined_clipped_mean(results: Sequence[PatchingResult]) -> np.ndarray:
    """Mean over all pairs of all sweeps (same-a and same-b concatenated), negatives clipped to 0."""
    return np.clip(np.concatenate([result.scores for result in results]).mean(axis=0), 0, None)


def named_position_labels(cache: TaskCache) -> tuple[list[int], list[str]]:
    """Positions b_token..before_c_token and their tick labels from the cache's token map.

    Positions whose word varies between problems are named by role ("b (Seven)" shows the first
    problem's word); fixed words show the token itself.
    """
    layout, token_map = cache.layout, cache.token_map
    positions = list(range(layout.b_token, layout.before_c_token + 1))
    roles = {layout.b_token: "b", layout.a_token: "a"}
    labels = []
    for position in positions:
        text = token_map.get(position, str(position)).strip()
        labels.append(f"{roles[position]} ({text})" if position in roles else text)
    return positions, labels


def layer_patching_heatmap(
    base_dir: Path, model: str, task: str, layer_type: str, num_pairs: int = DEFAULT_NUM_PAIRS, out_dir: Path | None = None
) -> list[Path]:
    """Appendix cell 3: positions (named prompt tokens) x layers, OrRd, -> `{model}_{type}_{task}_patching.pdf/png`."""
    if layer_type not in ("resid", "mlp", "attention"):
        raise UserError(f"layer_patching_heatmap draws resid, mlp or attention; got {layer_type!r}")
    base_dir = Path(base_dir)
    cache = TaskCache.open(base_dir, model, task)
    results = load_both(base_dir, model, task, layer_type, num_pairs, cache)
    positions, labels = named_position_labels(cache)
    grid = combined_clipped_mean(results)[:, positions].T  # [positions, layers]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.16 * grid.shape[1] + 2), 2.4))
    n_pairs = sum(len(result.pairs) for result in results)
    draw_heatmap(ax, grid, labels, results[0].layers, "Layer", "Token", figure_title(model, task, LAYER_TYPE_TITLES[layer_type]) + f" ({n_pairs} pairs)")
    fig.tight_layout()
    out_dir = Path(out_dir) if out_dir is not None else paper_plots_dir(base_dir)
    return save_pdf_and_png(fig, out_dir / f"{model}_{layer_type}_{task}_patching")


def head_patching_heatmap(
    base_dir: Path, model: str, task: str, num_pairs: int = DEFAULT_NUM_PAIRS, top_k: int = 10, out_dir: Path | None = None
) -> tuple[list[Path], list[tuple[int, int, float]]]:
    """Appendix cell 4: layers x heads, OrRd, -> `{model}_attention_head_{task}_patching.pdf/png` and
    `..._top_heads.csv`. Returns the paths and the top-k (layer, head, clipped mean effect), best first."""
    base_dir = Path(base_dir)
    cache = TaskCache.open(base_dir, model, task)
    grid, layers = combined_head_grid(base_dir, model, task, num_pairs, cache.cache_id)
    clipped = np.clip(grid, 0, None)
    best = top_heads(grid, layers, top_k)
    fig, ax = plt.subplots(figsize=(max(3.5, 0.3 * clipped.shape[1] + 2), max(3.0, 0.2 * clipped.shape[0] + 1.2)))
    draw_heatmap(ax, clipped, layers, range(clipped.shape[1]), "Head", "Layer", figure_title(model, task, "Attention head"))
    for layer, head, _ in best:
        ax.add_patch(plt.Rectangle((head - 0.5, list(layers).index(layer) - 0.5), 1, 1, fill=False, lw=0.8, ec="black"))
    fig.tight_layout()
    out_dir = Path(out_dir) if out_dir is not None else paper_plots_dir(base_dir)
    stem = out_dir / f"{model}_attention_head_{task}_patching"
    paths = save_pdf_and_png(fig, stem)
    paths.append(save_csv(stem.with_name(stem.name + "_top_heads.csv"), ("layer", "head", "effect"), best))
    return paths, best


# ------------------------------------------------------------------------------------ cell 5


def indicator_widths(p: int, indicators: str) -> tuple[int, int, int]:
    """One-hot widths for a (0..p-1), b (1..p) and c (0..p-1): complete ("p") or upstream's fixed 8."""
    if indicators not in INDICATOR_MODES:
        raise UserError(f"indicators must be one of {', '.join(INDICATOR_MODES)}; got {indicators!r}")
    return (8, 8, 8) if indicators == "8" else (p, p + 1, p)


def head_r2(outputs: np.ndarray, infos: np.ndarray, p: int, indicators: str = "p") -> tuple[float, float]:
    """Pooled R^2 of one head's outputs [n, d] on one-hot a,b (+const) and on one-hot a,b,c (+const)."""
    width_a, width_b, width_c = indicator_widths(p, indicators)
    constant = np.ones((len(infos), 1))
    x_ab = np.concatenate([one_hot(infos[:, 0], width_a), one_hot(infos[:, 1], width_b), constant], axis=1)
    x_abc = np.concatenate([x_ab, one_hot(infos[:, 2], width_c)], axis=1)
    return do_regression(x_ab, outputs).r2, do_regression(x_abc, outputs).r2


def head_table_rows(stored: dict, indicators: str = "p") -> list[tuple[int, int, float, float, float]]:
    """(layer, head, effect, R^2 a,b, R^2 a,b,c) per stored top head."""
    rows = []
    for index, (layer, head) in enumerate(stored["heads"].tolist()):
        r2_ab, r2_abc = head_r2(stored["outputs"][:, index, :], stored["infos"], int(stored["p"]), indicators)
        rows.append((int(layer), int(head), float(stored["effects"][index]), r2_ab, r2_abc))
    return rows


def latex_table(rows: Sequence[tuple], caption: str, label: str) -> str:
    """A booktabs table with the Table 4 columns, numbers as %.2f."""
    header = r"Layer & Head & Average Intervention Effect & EVR $R^2$ (one-hot $a,b$) & EVR $R^2$ (one-hot $a,b,c$) \\"
    body = [f"{layer} & {head} & {effect:.2f} & {r2_ab:.2f} & {r2_abc:.2f} \\\\" for layer, head, effect, r2_ab, r2_abc in rows]
    lines = [
        r"\begin{table}[h]",
        r"\centering",
        r"\begin{tabular}{rrrrr}",
        r"\toprule",
        header,
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        f"\\caption{{{caption}}}",
        f"\\label{{{label}}}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def head_table(
    base_dir: Path, model: str, task: str, num_pairs: int = DEFAULT_NUM_PAIRS, top_k: int = 10, indicators: str = "p",
    out_dir: Path | None = None,
) -> tuple[list[Path], list[tuple[int, int, float, float, float]]]:
    """Appendix cell 5 (Table 4): `{model}_{task}_attention_head_patching.tex` and `.csv` from the stored head outputs."""
    base_dir = Path(base_dir)
    cache = TaskCache.open(base_dir, model, task)
    path = head_outputs_path(base_dir, model, task, num_pairs, top_k)
    if not path.exists():
        raise MissingArtifactError(f"top-{top_k} head outputs for {model} / {task}", path, patching_command(model, task, num_pairs, base_dir))
    stored = load_npz(path)
    if str(stored["cache_id"]) != cache.cache_id:
        raise UserError(f"{path} was computed from an older activation cache; recompute it with: {patching_command(model, task, num_pairs, base_dir)}")
    rows = head_table_rows(stored, indicators)
    out_dir = Path(out_dir) if out_dir is not None else paper_plots_dir(base_dir)
    stem = out_dir / f"{model}_{task}_attention_head_patching"
    caption = (
        f"{MODEL_TITLES.get(model, model)} {TASK_TITLES.get(task, task)}: top {len(rows)} attention heads by average "
        f"patching effect, and the fraction of variance of each head's output at the last prompt token explained "
        f"by one-hot $a, b$ and by one-hot $a, b, c$."
    )
    tex = write_text_atomic(stem.with_suffix(".tex"), latex_table(rows, caption, f"tab:{model}_{task}_head_patching"))
    csv = save_csv(stem.with_suffix(".csv"), HEAD_TABLE_COLUMNS, [(l, h, f"{e:.4f}", f"{a:.4f}", f"{b:.4f}") for l, h, e, a, b in rows])
    return [tex, csv], rows
