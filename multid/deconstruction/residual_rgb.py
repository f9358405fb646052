"""Feature deconstruction: residual RGB plots of the days/months "is" token (paper Figures 8 and 16).

At one layer, the PCA-20 scores Y [n, 20] of the last prompt token are regressed on a growing list of
explainer groups (one-hot start day, circle in the answer, ...). After each added group we record the
R^2 and colour the residual's top-3 singular directions as RGB on the p x p grid of problems (row = start
a, column = duration b mod p). Structure that disappears from the tiles is what the group explained.

Faithful to upstream `days_of_the_week_deconstruction.py` / `months_of_the_year_deconstruction.py`
(spec sae_reducibility.md §7):
- least squares through the eigen-pseudo-inverse of X^T X / n with eigenvalues <= 1e-5 zeroed;
- uncentred R^2 = 1 - mean((Y - Y_hat)^2) / (mean(Y^2) + 1e-10) (Y is PCA scores, already centred);
- rows reordered by argsort(p*a + b) with a, b reduced mod p, so b = p lands in column 0 (upstream quirk,
  kept: the last duration is drawn first);
- residual SVD, top-3 left singular vectors scaled by their singular values, each min-max to [0, 1].
Changes: no LaTeX needed (unicode labels; --usetex optional), each singular vector's sign is fixed
(largest-magnitude entry positive) so colours do not flip between LAPACK builds, the model is in the
output file name, and a constant colour channel (zero residual) is drawn as 0 instead of NaN.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from multid.tasks.cache import TaskCache
from multid.circles.probe import one_hot
from multid.tasks.paths import (
    build_cache_command,
    load_pca_scores,
    load_results_csv,
    meta_path,
    results_csv_path,
    task_dir,
)
from multid.config import add_base_dir_arg, figure_dir, resolve_base_dir
from multid.errors import MissingArtifactError, UserError, cli_entry
from multid.paper import PAPER_N_BLOCKS
from multid.io import load_json, require_file, save_figure, save_json

PCA_K = 20
EIGENVALUE_FLOOR = 1e-5  # eigenvalues of X^T X / n at or below this are treated as zero (collinear one-hots)
R2_EPS = 1e-10
UPSAMPLE = 20  # each tile pixel becomes a UPSAMPLE x UPSAMPLE block, as upstream
SCHEDULES = ("paper", "scaled", "last", "full")


# ------------------------------------------------------------------------------------ explainer groups


def _bias(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    return np.ones((len(a), 1))


def _one_hot_a(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    return one_hot(a, p)


def _one_hot_b(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    return one_hot(b, p)


def _one_hot_ab(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """One-hot a and one-hot b interleaved column by column: [a==0, b==0, a==1, b==1, ...]."""
    return np.stack([one_hot(a, p), one_hot(b, p)], axis=2).reshape(len(a), 2 * p)


def _one_hot_c(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    return one_hot((a + b) % p, p)


def _circle(angle_of: Callable[[np.ndarray, np.ndarray], np.ndarray], k: int) -> Callable[..., np.ndarray]:
    """Group builder for [cos, sin](2 pi k * angle_of(a, b) / p)."""

    def build(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
        angle = 2 * np.pi * k * angle_of(a, b) / p
        return np.stack([np.cos(angle), np.sin(angle)], axis=1)

    return build


def _a_for_tomorrow(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """p indicators [a == i and b == 1]: the start day when the question is about 'tomorrow'."""
    return one_hot(a, p) * (b == 1)[:, None]


def _one_hot_a_plus_b(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """One-hot of the unreduced sum a + b over 0..2p-2 (23 columns for months)."""
    return one_hot(a + b, 2 * p - 1)


def _a_plus_1_is_b(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    return (a + 1 == b).astype(np.float64)[:, None]


def _parity_c(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """(a + b) mod 2, as upstream; equals c mod 2 for the even p = 12 of months."""
    return ((a + b) % 2).astype(np.float64)[:, None]


@dataclass(frozen=True)
class Group:
    """One explainer group: a block of columns of the design matrix X, and how the figure labels it."""

    key: str
    label: str  # plain unicode label (default, no LaTeX)
    tex: str  # label for --usetex
    fontsize: float
    build: Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (a mod p, b mod p, p) -> [n, m]


GROUPS: dict[str, Group] = {
    group.key: group
    for group in [
        Group("bias", "original", "original", 5, _bias),
        Group("one_hot_a", "one hot α", r"one hot $\alpha$", 4, _one_hot_a),
        Group("one_hot_b", "one hot β", r"one hot $\beta$", 4, _one_hot_b),
        Group("one_hot_ab", "one hot α, β", r"one hot $\alpha, \beta$", 3.5, _one_hot_ab),
        Group("one_hot_c", "one hot γ", r"one hot $\gamma$", 4, _one_hot_c),
        Group("circle_c", "circle γ", r"circle $\gamma$", 4.5, _circle(lambda a, b: a + b, 1)),
        Group("circle_2c", "circle 2γ", r"circle $2\gamma$", 4.5, _circle(lambda a, b: a + b, 2)),
        Group("circle_a_minus_b", "circle α-β", r"circle $\alpha-\beta$", 4, _circle(lambda a, b: a - b, 1)),
        Group("a_for_tmr", "α for tmr", r"$\alpha$ for tmr", 4, _a_for_tomorrow),
        Group("one_hot_a_plus_b", "one hot α+β", r"one hot $\alpha+\beta$", 3.5, _one_hot_a_plus_b),
        Group("a_plus_1_is_b", "α+1=β", r"$\alpha+1=\beta$", 4.5, _a_plus_1_is_b),
        Group("parity_c", "γ parity", r"$\gamma$ parity", 4.5, _parity_c),
    ]
}


def group_matrix(key: str, a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """The design columns of group `key` for problems (a, b), both reduced mod p."""
    if key not in GROUPS:
        raise UserError(f"unknown explainer group {key!r}; choose from {', '.join(GROUPS)}")
    return GROUPS[key].build(np.asarray(a), np.asarray(b), p)


# ------------------------------------------------------------------------------------ tasks and schedules


def _table(rows: Sequence[tuple[Sequence[int], Sequence[str]]]) -> dict[int, tuple[str, ...]]:
    """Expand (layers, groups) rows into {layer: groups}."""
    return {layer: tuple(groups) for layers, groups in rows for layer in layers}


# Paper layer -> cumulative group order (spec §7.2). Layers are cache layers of the paper model.
DAYS_SCHEDULE = _table([
    ([17], ["bias", "one_hot_ab"]),
    ([18], ["bias", "one_hot_ab", "a_for_tmr", "circle_a_minus_b"]),
    ([19, 20], ["bias", "one_hot_ab", "a_for_tmr", "circle_c", "circle_a_minus_b"]),
    ([21], ["bias", "one_hot_ab", "circle_c", "circle_a_minus_b"]),
    ([22, 23, 24], ["bias", "one_hot_ab", "circle_c", "circle_a_minus_b", "a_for_tmr"]),
    ([25, 26, 27], ["bias", "one_hot_ab", "circle_c", "circle_a_minus_b"]),
    ([28, 29], ["bias", "one_hot_ab", "circle_c"]),
])

MONTHS_SCHEDULE = _table([
    ([13, 14, 15, 16], ["bias", "one_hot_b", "one_hot_a", "a_plus_1_is_b"]),
    ([17], ["bias", "one_hot_b", "one_hot_a", "circle_2c"]),
    ([18], ["bias", "one_hot_b", "one_hot_a", "parity_c", "circle_c"]),
    ([19], ["bias", "one_hot_b", "parity_c", "circle_2c", "circle_c", "one_hot_a", "one_hot_a_plus_b"]),
    ([20], ["bias", "one_hot_b", "circle_c", "parity_c", "circle_2c", "one_hot_a", "one_hot_a_plus_b"]),
    ([21], ["bias", "one_hot_b", "circle_2c", "circle_c", "parity_c", "one_hot_a", "one_hot_a_plus_b"]),
    ([22, 23, 24, 25, 26, 29], ["bias", "circle_c", "one_hot_b", "parity_c", "circle_2c", "one_hot_a", "one_hot_a_plus_b"]),
    ([27, 28], ["bias", "parity_c", "circle_c", "one_hot_b", "circle_2c", "one_hot_a", "one_hot_a_plus_b"]),
])


@dataclass(frozen=True)
class DeconstructionTask:
    """Everything that differs between the days and months deconstructions: data, not code."""

    task: str  # intervention cache task name
    p: int
    paper_model: str  # the model the paper ran this task's figure on
    vertical_space: int  # white rows under each tile, room for its two labels
    figure_stem: str  # upstream's output file name, without extension
    schedule: Mapping[int, tuple[str, ...]]  # paper cache layer -> cumulative group order
    full_groups: tuple[str, ...]  # every group the paper uses for this task, for --schedule full

    @property
    def paper_layers(self) -> list[int]:
        return sorted(self.schedule)


DAYS = DeconstructionTask(
    task="days_of_week",
    p=7,
    paper_model="mistral",
    vertical_space=3,
    figure_stem="feature_deconstruction_day_of_the_week",
    schedule=DAYS_SCHEDULE,
    full_groups=("bias", "one_hot_ab", "circle_c", "circle_a_minus_b", "a_for_tmr"),
)

MONTHS = DeconstructionTask(
    task="months_of_year",
    p=12,
    paper_model="llama",
    vertical_space=5,
    figure_stem="feature_deconstruction_month_of_the_year",
    schedule=MONTHS_SCHEDULE,
    full_groups=("bias", "circle_c", "one_hot_b", "parity_c", "circle_2c", "one_hot_a", "a_plus_1_is_b", "one_hot_a_plus_b"),
)

TASKS = {spec.task: spec for spec in (DAYS, MONTHS)}


def get_task(task: str | DeconstructionTask) -> DeconstructionTask:
    if isinstance(task, DeconstructionTask):
        return task
    if task not in TASKS:
        raise UserError(f"unknown deconstruction task {task!r}; choose one of {', '.join(TASKS)}")
    return TASKS[task]


def scaled_paper_layer(spec: DeconstructionTask, layer: int, n_blocks: int) -> int:
    """The paper layer at the same relative depth as cache layer `layer` of an n_blocks model, clamped
    to the paper's table range."""
    paper_layer = round(layer * PAPER_N_BLOCKS / n_blocks)
    return min(max(paper_layer, spec.paper_layers[0]), spec.paper_layers[-1])


def groups_for_layer(
    spec: DeconstructionTask, schedule: str | Sequence[str], layer: int, n_blocks: int = PAPER_N_BLOCKS
) -> tuple[str, ...]:
    """The cumulative group order at `layer` under a schedule.

    - "paper": the paper's table (layer must be one of the paper's layers);
    - "scaled": the paper's table at the same relative depth (layer * 32 / n_blocks, clamped to the table);
    - "last": the paper's list for its last layer, at every layer;
    - "full": every group the paper uses for this task, at every layer;
    - a list of group keys: that list at every layer.
    """
    if not isinstance(schedule, str):
        keys = tuple(schedule)
        for key in keys:
            if key not in GROUPS:
                raise UserError(f"unknown explainer group {key!r}; choose from {', '.join(GROUPS)}")
        if not keys:
            raise UserError("the group list is empty; give at least one explainer group (e.g. bias)")
        return keys
    if schedule == "paper":
        if layer not in spec.schedule:
            first, last = spec.paper_layers[0], spec.paper_layers[-1]
            raise UserError(
                f"layer {layer} has no paper schedule for {spec.task} (paper layers {first}..{last}); "
                f"use --schedule scaled, last or full for other layers"
            )
        return spec.schedule[layer]
    if schedule == "scaled":
        return spec.schedule[scaled_paper_layer(spec, layer, n_blocks)]
    if schedule == "last":
        return spec.schedule[spec.paper_layers[-1]]
    if schedule == "full":
        return spec.full_groups
    raise UserError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)} or pass a group list")


def default_layers(spec: DeconstructionTask, schedule: str | Sequence[str], n_blocks: int) -> list[int]:
    """The paper's layers for schedule "paper"; otherwise the layers at the paper's relative depth."""
    if schedule == "paper":
        return spec.paper_layers
    first, last = spec.paper_layers[0], spec.paper_layers[-1]
    return [layer for layer in range(n_blocks + 1) if first <= round(layer * PAPER_N_BLOCKS / n_blocks) <= last]


# ------------------------------------------------------------------------------------ regression and colours


def fit_groups(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Least-squares prediction Y_hat = X beta with beta = pinv(X^T X / n) X^T Y / n.

    The pseudo-inverse zeroes eigenvalues <= 1e-5 (upstream), which handles the collinear one-hot
    groups plus bias without dropping columns.
    """
    n = X.shape[0]
    gram = X.T @ X / n
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    inverse = np.zeros_like(eigenvalues)
    keep = eigenvalues > EIGENVALUE_FLOOR
    inverse[keep] = 1.0 / eigenvalues[keep]
    gram_pinv = (eigenvectors * inverse) @ eigenvectors.T
    beta = gram_pinv @ (X.T @ Y / n)
    return X @ beta


def r2_score_uncentred(Y: np.ndarray, Y_hat: np.ndarray) -> float:
    """Upstream's R^2: 1 - mean((Y - Y_hat)^2) / (mean(Y^2) + 1e-10) (total not centred; Y is centred)."""
    return float(1.0 - np.mean((Y - Y_hat) ** 2) / (np.mean(Y**2) + R2_EPS))


def top_singular_colors(values: np.ndarray, k: int = 3, center: bool = False) -> np.ndarray:
    """[n, k] colours in [0, 1]: top-k left singular vectors times singular values, min-max per column.

    Each vector's sign is fixed so its largest-magnitude entry is positive (deterministic colours). A
    constant column (e.g. zero residual) becomes 0. Fewer than k directions are padded with zeros.
    """
    values = np.asarray(values, dtype=np.float64)
    if center:
        values = values - values.mean(axis=0, keepdims=True)
    U, S, _ = np.linalg.svd(values, full_matrices=False)
    scores = np.zeros((values.shape[0], k))
    m = min(k, S.shape[0])
    scores[:, :m] = U[:, :m] * S[:m]
    signs = np.sign(scores[np.argmax(np.abs(scores), axis=0), np.arange(k)])
    scores *= np.where(signs == 0, 1.0, signs)
    low, high = scores.min(axis=0), scores.max(axis=0)
    span = high - low
    safe = np.where(span > 1e-12, span, 1.0)
    return np.where(span > 1e-12, (scores - low) / safe, 0.0)


def grid_order(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """Row order that puts the problems on the p x p grid (row a, column b mod p): argsort(p*a + b).

    Works for any input row order; refuses inputs that are not exactly one problem per grid cell.
    """
    a, b = np.asarray(a) % p, np.asarray(b) % p
    keys = p * a + b
    order = np.argsort(keys, kind="stable")
    if len(keys) != p * p or not np.array_equal(keys[order], np.arange(p * p)):
        raise UserError(
            f"results.csv holds {len(keys)} problems that do not cover the {p} x {p} grid of (a, b mod {p}) "
            f"once each; the deconstruction needs the task's full problem set"
        )
    return order


@dataclass
class LayerDeconstruction:
    """One layer's cumulative steps: groups added, R^2 after each, residual RGB tiles [p, p, 3]."""

    layer: int
    groups: tuple[str, ...]
    r2: list[float]
    tiles: list[np.ndarray]


def deconstruct(scores: np.ndarray, a: np.ndarray, b: np.ndarray, p: int, groups: Sequence[str], layer: int = -1) -> LayerDeconstruction:
    """Regress the scores on groups[0..s] for every step s; R^2 and residual RGB tile after each step.

    `scores` [n, k] rows follow (a, b) in any order; they are put on the p x p grid first.
    """
    order = grid_order(a, b, p)
    Y = np.asarray(scores, dtype=np.float64)[order]
    a_grid, b_grid = np.asarray(a)[order] % p, np.asarray(b)[order] % p
    r2s, tiles = [], []
    blocks: list[np.ndarray] = []
    for key in groups:
        blocks.append(group_matrix(key, a_grid, b_grid, p))
        Y_hat = fit_groups(np.concatenate(blocks, axis=1), Y)
        r2s.append(r2_score_uncentred(Y, Y_hat))
        tiles.append(top_singular_colors(Y - Y_hat).reshape(p, p, 3))
    return LayerDeconstruction(layer=layer, groups=tuple(groups), r2=r2s, tiles=tiles)


# ------------------------------------------------------------------------------------ figure


def compose_canvas(columns: Sequence[Sequence[np.ndarray]], p: int, vertical_space: int) -> np.ndarray:
    """White canvas with one column of tiles per layer; each tile p x p plus 1 white column and
    `vertical_space` white rows; shorter columns padded with white; upsampled x UPSAMPLE."""
    n_rows = max(len(tiles) for tiles in columns)
    block_h, block_w = p + vertical_space, p + 1
    canvas = np.ones((n_rows * block_h, len(columns) * block_w, 3))
    for j, tiles in enumerate(columns):
        for s, tile in enumerate(tiles):
            canvas[s * block_h : s * block_h + p, j * block_w : j * block_w + p] = tile
    return canvas.repeat(UPSAMPLE, axis=0).repeat(UPSAMPLE, axis=1)


def plot_deconstruction(
    results: Sequence[LayerDeconstruction], spec: DeconstructionTask, path: str | os.PathLike, usetex: bool = False
) -> Path:
    """The residual RGB figure: column per layer ("layer L" above), row per step (group label + r2 below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p, space = spec.p, spec.vertical_space
    canvas = compose_canvas([result.tiles for result in results], p, space)
    width_in = 0.45 * len(results)
    height_in = width_in * canvas.shape[0] / canvas.shape[1]
    with matplotlib.rc_context({"text.usetex": usetex, "font.family": "serif" if usetex else "sans-serif"}):
        fig, ax = plt.subplots(figsize=(width_in, height_in))
        try:
            ax.imshow(canvas, interpolation="nearest")
            ax.axis("off")
            line = 0.16 * (p + 1) * UPSAMPLE  # a 5 pt line in canvas units (a column is 0.45 in wide)
            for j, result in enumerate(results):
                x = (j * (p + 1) + p / 2) * UPSAMPLE
                ax.text(x, -0.3 * line, f"layer {result.layer}", ha="center", va="bottom", fontsize=5)
                for s, (key, r2) in enumerate(zip(result.groups, result.r2)):
                    group = GROUPS[key]
                    y = s * (p + space) * UPSAMPLE + p * UPSAMPLE + 0.3 * line
                    label = group.tex if usetex else group.label
                    percent = f"{r2 * 100:.1f}\\%" if usetex else f"{r2 * 100:.1f}%"
                    ax.text(x, y, label, ha="center", va="top", fontsize=group.fontsize)
                    ax.text(x, y + line, f"r2: {percent}", ha="center", va="top", fontsize=3.5)
            return save_figure(fig, path, bbox_inches="tight", dpi=400)
        finally:
            plt.close(fig)


# ------------------------------------------------------------------------------------ inputs


@dataclass
class Sources:
    """Where one run reads its inputs, and the command that makes them when they are missing."""

    results_csv: Path
    pca_dir: Path
    meta: dict[str, Any] | None
    command: str
    cache: TaskCache | None = None  # our own activation cache: missing PCA files are fitted from it


def find_sources(
    spec: DeconstructionTask,
    model: str,
    base_dir: str | os.PathLike | None = None,
    results_csv: str | os.PathLike | None = None,
    pca_dir: str | os.PathLike | None = None,
) -> Sources:
    """Our cache (<base_dir>/<model>_<task>/) unless results_csv / pca_dir point at copied files.

    Copied files follow upstream: results.csv next to a `pca_components/` (or our `pca/`) folder; a
    meta.json beside results.csv, if present, supplies the token and the model depth.
    """
    command = build_cache_command(model, spec.task, pca_k=PCA_K, base_dir=base_dir)
    if results_csv is None and pca_dir is None:
        folder = task_dir(resolve_base_dir(base_dir, create=False), model, spec.task)
        csv_path = require_file(results_csv_path(folder), f"results.csv of the {model} {spec.task} cache", command)
        meta = _read_meta(meta_path(folder))
        cache = TaskCache(folder, meta) if meta and "cache_id" in meta else None
        return Sources(csv_path, folder / "pca", meta, command, cache)
    if results_csv is None:
        results_csv = Path(pca_dir).parent / "results.csv"
    csv_path = require_file(Path(results_csv), "results.csv", command)
    if pca_dir is None:
        candidates = [csv_path.parent / "pca_components", csv_path.parent / "pca"]
        pca_dir = next((folder for folder in candidates if folder.is_dir()), candidates[0])
    return Sources(csv_path, Path(pca_dir), _read_meta(csv_path.parent / "meta.json"), command)


def _read_meta(path: Path) -> dict[str, Any] | None:
    return load_json(path) if path.exists() else None


def resolve_token(sources: Sources, token: int | None) -> tuple[int, str]:
    """The token position to read, and where it came from: --token, else meta.json's before_c_token
    (the last prompt token, " is"), else the largest token among the PCA files present (the cached
    positions end at the last prompt token)."""
    if token is not None:
        return int(token), "--token"
    if sources.meta is not None:
        positions = sources.meta.get("positions", {})
        if "before_c_token" in positions:
            return int(positions["before_c_token"]), "meta.json before_c_token"
    tokens = sorted({_token_of(path.name) for path in sources.pca_dir.glob(f"layer*_token*_pca{PCA_K}.pt")} - {None})
    if not tokens:
        raise MissingArtifactError(f"PCA-{PCA_K} files (layer*_token*_pca{PCA_K}.pt)", sources.pca_dir, sources.command)
    return tokens[-1], f"largest token among {sources.pca_dir} files (pass --token to choose)"


def _token_of(name: str) -> int | None:
    """T from 'layer{L}_token{T}_pca20.pt', or None."""
    try:
        return int(name.split("_token", 1)[1].split("_", 1)[0])
    except (IndexError, ValueError):
        return None


def load_scores(sources: Sources, layer: int, token: int) -> np.ndarray:
    """PCA-20 scores of one (layer, token), with the make-it command when the file is missing."""
    path = sources.pca_dir / f"layer{layer}_token{token}_pca{PCA_K}.pt"
    if sources.cache is not None:  # our cache: checks the file's cache id, fits a missing file from the activations
        return sources.cache.get_pca(layer, token, PCA_K).coords.astype(np.float64)
    require_file(path, f"PCA-{PCA_K} scores for layer {layer} token {token}", sources.command)
    return load_pca_scores(path)


# ------------------------------------------------------------------------------------ run


def run_deconstruction(
    task: str | DeconstructionTask,
    model: str | None = None,
    base_dir: str | os.PathLike | None = None,
    layers: Sequence[int] | None = None,
    schedule: str | Sequence[str] | None = None,
    token: int | None = None,
    results_csv: str | os.PathLike | None = None,
    pca_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    fmt: str = "pdf",
    usetex: bool = False,
    verbose: bool = True,
) -> tuple[Path, Path]:
    """Deconstruct the " is" token's PCA scores layer by layer; write the residual RGB figure and a JSON
    of R^2 per (layer, step). Returns (figure_path, json_path).

    task: "days_of_week" or "months_of_year". model: cache model name (default: the paper's model for
    the task). schedule: "paper" | "scaled" | "last" | "full" | a list of group keys; default "paper"
    for the paper's model and "scaled" otherwise. layers: default = the paper's layers (paper schedule)
    or the layers at the paper's relative depth. Outputs go to `out_dir` (default
    <base_dir>/figs/feature_deconstruction/) as <figure_stem>_<model>.<fmt> and .json.
    """
    spec = get_task(task)
    model = model or spec.paper_model
    if schedule is None:
        schedule = "paper" if model == spec.paper_model else "scaled"
    if usetex and shutil.which("latex") is None:
        raise UserError("--usetex needs a LaTeX installation (no `latex` on PATH); drop --usetex")
    sources = find_sources(spec, model, base_dir, results_csv, pca_dir)
    n_blocks = int(sources.meta["n_cache_layers"]) - 1 if sources.meta and "n_cache_layers" in sources.meta else PAPER_N_BLOCKS
    layers = list(layers) if layers else default_layers(spec, schedule, n_blocks)
    if not layers:
        raise UserError(f"no layers to deconstruct for {model} ({n_blocks} blocks); pass --layers")
    if sources.meta and any(layer > n_blocks for layer in layers):
        raise UserError(f"--layers {layers} goes past {model}'s cache layers 0..{n_blocks} (0 = embeddings)")
    plan = {layer: groups_for_layer(spec, schedule, layer, n_blocks) for layer in layers}
    token, token_source = resolve_token(sources, token)
    frame = load_results_csv(sources.results_csv)
    a, b = frame["a"].to_numpy() % spec.p, frame["b"].to_numpy() % spec.p
    if verbose:
        print(f"{spec.task} | model {model} | token {token} ({token_source}) | schedule {_schedule_name(schedule)}")
        print(f"reading {sources.results_csv} and {sources.pca_dir}/")

    results = []
    for layer in layers:
        scores = load_scores(sources, layer, token)
        if scores.shape[0] != len(frame):
            raise UserError(
                f"{sources.pca_dir}/layer{layer}_token{token}_pca{PCA_K}.pt has {scores.shape[0]} rows but "
                f"{sources.results_csv} has {len(frame)} problems; rebuild with: {sources.command}"
            )
        result = deconstruct(scores, a, b, spec.p, plan[layer], layer=layer)
        results.append(result)
        if verbose:
            steps = "  ".join(f"{GROUPS[key].label}: {r2 * 100:.1f}%" for key, r2 in zip(result.groups, result.r2))
            print(f"layer {layer:>2}  {steps}")

    folder = Path(out_dir) if out_dir else figure_dir(resolve_base_dir(base_dir), "feature_deconstruction")
    stem = f"{spec.figure_stem}_{model}"
    figure_path = plot_deconstruction(results, spec, folder / f"{stem}.{fmt}", usetex=usetex)
    json_path = save_json(folder / f"{stem}.json", _summary(spec, model, token, schedule, sources, figure_path, results))
    if verbose:
        print(f"wrote {figure_path}")
        print(f"wrote {json_path}")
    return figure_path, json_path


def _schedule_name(schedule: str | Sequence[str]) -> str:
    return schedule if isinstance(schedule, str) else "groups " + ",".join(schedule)


def _summary(
    spec: DeconstructionTask, model: str, token: int, schedule: str | Sequence[str], sources: Sources, figure: Path,
    results: Sequence[LayerDeconstruction],
) -> dict[str, Any]:
    """The JSON beside the figure: inputs, and R^2 for every (layer, step)."""
    return {
        "task": spec.task,
        "model": model,
        "token": token,
        "pca_k": PCA_K,
        "schedule": schedule if isinstance(schedule, str) else list(schedule),
        "results_csv": str(sources.results_csv),
        "pca_dir": str(sources.pca_dir),
        "figure": str(figure),
        "r2_definition": "1 - mean((Y - Y_hat)^2) / (mean(Y^2) + 1e-10), Y = PCA scores",
        "layers": {
            str(result.layer): [
                {"step": step, "group": key, "label": GROUPS[key].label, "r2": r2}
                for step, (key, r2) in enumerate(zip(result.groups, result.r2))
            ]
            for result in results
        },
    }


# ------------------------------------------------------------------------------------ command line


def parse_layers(items: Sequence[str] | None) -> list[int] | None:
    """'17-29', '17,18,19' or '17 18 19' (mixed allowed) -> sorted unique layers."""
    if not items:
        return None
    layers: set[int] = set()
    for item in items:
        for part in str(item).replace(",", " ").split():
            match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if match is None:
                raise UserError(f"--layers {item!r} is not a layer list; use e.g. 17-29 or 17,18,19 (cache layers >= 0)")
            start = int(match.group(1))
            layers.update(range(start, int(match.group(2) or start) + 1))
    return sorted(layers)


def build_parser(spec: DeconstructionTask, prog: str | None = None) -> argparse.ArgumentParser:
    """The shared CLI; only the task's defaults differ between the days and months entry points."""
    first, last = spec.paper_layers[0], spec.paper_layers[-1]
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            f"Residual RGB plots for the {spec.task} task: regress the last prompt token's PCA-{PCA_K} scores on "
            f"growing explainer groups per layer; write the figure and a JSON of R^2 per (layer, step). Inputs: "
            f"results.csv + PCA-{PCA_K} files, either copied here upstream-style (results.csv and pca_components/ "
            f"in the current folder, or --results_csv/--pca_dir) or from the cache of --model under --base_dir."
        ),
    )
    parser.add_argument("--model", default=None, help=f"cache model name (default: {spec.paper_model}, the paper's model for this task)")
    add_base_dir_arg(parser)
    parser.add_argument("--results_csv", default=None, help="a copied results.csv (6 or 7 columns)")
    parser.add_argument("--pca_dir", default=None, help=f"a copied folder of layer{{L}}_token{{T}}_pca{PCA_K}.pt files")
    parser.add_argument(
        "--layers", nargs="+", default=None,
        help=f"cache layers, e.g. 17-29 or 17,18 (default: {first}-{last} for the paper schedule, else the layers at that relative depth)",
    )
    parser.add_argument(
        "--schedule", choices=SCHEDULES, default=None,
        help=(
            "group order per layer: paper = the paper's per-layer table (paper layers only); scaled = the table "
            "at the same relative depth (layer*32/n_blocks); last = the paper's last-layer list everywhere; "
            f"full = all of this task's groups everywhere. Default: paper for {spec.paper_model}, scaled otherwise"
        ),
    )
    parser.add_argument("--groups", default=None, help=f"comma list of groups to use at every layer instead of a schedule; from: {', '.join(GROUPS)}")
    parser.add_argument("--token", type=int, default=None, help="token position (default: meta.json's before_c_token, else the largest token among the PCA files)")
    parser.add_argument("--out_dir", default=None, help="output folder (default: <base_dir>/figs/feature_deconstruction)")
    parser.add_argument("--format", default="pdf", choices=("pdf", "png", "svg"), help="figure format (default: %(default)s)")
    parser.add_argument("--usetex", action="store_true", help="render labels with LaTeX (needs a LaTeX install; off by default)")
    return parser


def cli_main(spec: DeconstructionTask, argv: Sequence[str] | None = None, prog: str | None = None) -> tuple[Path, Path]:
    """Parse arguments and run; copied files in the current folder are used when neither --model,
    --base_dir, --results_csv nor --pca_dir is given (upstream's way of running)."""
    args = build_parser(spec, prog).parse_args(argv)
    if args.groups and args.schedule:
        raise UserError("give either --schedule or --groups, not both")
    schedule: str | list[str] | None = [key.strip() for key in args.groups.split(",") if key.strip()] if args.groups else args.schedule
    results_csv, pca_dir = args.results_csv, args.pca_dir
    if results_csv is None and pca_dir is None and args.model is None and args.base_dir is None:
        here = Path.cwd()
        if (here / "results.csv").exists() and any((here / name).is_dir() for name in ("pca_components", "pca")):
            results_csv = here / "results.csv"
    return run_deconstruction(
        spec,
        model=args.model,
        base_dir=args.base_dir,
        layers=parse_layers(args.layers),
        schedule=schedule,
        token=args.token,
        results_csv=results_csv,
        pca_dir=pca_dir,
        out_dir=args.out_dir,
        fmt=args.format,
        usetex=args.usetex,
    )


def script_main(spec: DeconstructionTask, prog: str) -> None:
    """Entry point for the two thin scripts: one-line errors, exit status 0 on success."""
    cli_entry(cli_main)(spec, sys.argv[1:], prog)
