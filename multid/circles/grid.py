"""Intervening at points inside and outside the a-circle (paper Figure 6 data; upstream
`intervene_in_middle_of_circle.py`, spec §4.1).

For the problem (a, b) = (0, b) (start = Monday / January) at cache layer L and the start-word token,
each grid point q of the probe's (cos, sin) plane is patched in with the "patch circle" formula using q
in place of E[v]: x' = mu + q R^-1 Q^T P^T - (mu P Q) Q^T P^T (upstream; the centred option drops the
last term). The p answer-word logits at the last position are kept: [n_points, p].

Grid (upstream default): radii 0.0, 0.1, .., 1.9 (20) x 100 angles, radius-major order.
Angles are 2 pi i / num_angles, i = 0..num_angles-1.

Artifacts: <base_dir>/figs/<model>_<task>/varying_circle/logits_<L>_<T>_<k>_<b>_a.npz (logits, points,
meta with the cache id and parameters; recomputed when they differ) and the per-b 2x2 figure
<L>_<T>_<k>_<b>_a.png (ground truth, argmax answer, top-1 minus top-2 logit, max logit); with the
centred formula both names end in `_a_centered` instead, so the two kinds of run do not overwrite each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from multid.tasks.cache import TaskCache, prompt_tokens
from multid.circles.engine import PrefixKV, model_device, patched_answer_logits
from multid.circles.probe import CircleBasis, patch_circle
from multid.circles.sweep import SweepParams, load_probe, problem_type, probe_plane_from_file, rows_per_forward
from multid.config import figure_dir
from multid.errors import UserError
from multid.io import load_npz, save_figure, save_npz

GRID_VERSION = 1


def circle_points(num_angles: int = 100, num_radii: int = 20, max_radius: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points [m, 2], angles [m], radii [m]) on num_radii radii k * max_radius / num_radii (k = 0..) x num_angles angles, radius-major."""
    if num_angles < 1 or num_radii < 1:
        raise UserError(f"the grid needs at least one angle and one radius (got {num_angles} angles, {num_radii} radii)")
    radius_values = np.arange(num_radii) * (max_radius / num_radii)
    angle_values = 2 * np.pi * np.arange(num_angles) / num_angles
    radii = np.repeat(radius_values, num_angles)
    angles = np.tile(angle_values, num_radii)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1), angles, radii


def grid_problem(cache: TaskCache, b: int) -> int:
    """Index of the problem (0, b, b mod p)."""
    if not 1 <= b <= cache.p:
        raise UserError(f"--b {b} is not a duration of this task: choose 1..{cache.p}")
    matches = np.flatnonzero((cache.infos[:, 0] == 0) & (cache.infos[:, 1] == b))
    return int(matches[0])


GRID_LOGITS_NAME = "logits_{layer}_{token}_{k}_{b}_a{centered}.npz"
GRID_FIGURE_NAME = "{layer}_{token}_{k}_{b}_a{centered}.png"


def grid_dir(base_dir: Path, cache: TaskCache) -> Path:
    return figure_dir(base_dir, "varying_circle", cache.model, cache.task)


def grid_file_name(template: str, cache: TaskCache, layer: int, k: int, b: int, centered: bool) -> str:
    """Upstream's name for the (layer, a-token, k, b) grid, with `_centered` for the centred formula."""
    return template.format(layer=layer, token=cache.layout.a_token, k=k, b=b, centered="_centered" if centered else "")


def grid_path(base_dir: Path, cache: TaskCache, layer: int, k: int, b: int, centered: bool = False) -> Path:
    """The stored answer logits of one grid (.npz)."""
    return grid_dir(base_dir, cache) / grid_file_name(GRID_LOGITS_NAME, cache, layer, k, b, centered)


def grid_figure_path(base_dir: Path, cache: TaskCache, layer: int, k: int, b: int, centered: bool = False) -> Path:
    """The per-b 2x2 figure of one grid (.png)."""
    return grid_dir(base_dir, cache) / grid_file_name(GRID_FIGURE_NAME, cache, layer, k, b, centered)


def grid_command(
    cache: TaskCache,
    layer: int,
    k: int,
    bs: Sequence[int],
    centered: bool = False,
    num_angles: int | None = None,
    num_radii: int | None = None,
    base_dir: Path | None = None,
) -> str:
    """The command line that computes these grids (for error messages)."""
    parts = [f"python3 intervention/intervene_in_middle_of_circle.py --model {cache.model} "
             f"--problem_type {problem_type(cache.task)} --layer {layer} --pca_k {k} --b {' '.join(str(b) for b in bs)}"]
    if num_angles is not None:
        parts.append(f"--num_angles {num_angles}")
    if num_radii is not None:
        parts.append(f"--radii {num_radii}")
    if centered:
        parts.append("--centered_interventions")
    if base_dir is not None:
        parts.append(f"--base_dir {base_dir}")
    return " ".join(parts)


@dataclass
class GridLogits:
    logits: np.ndarray  # [m, p]
    points: np.ndarray  # [m, 2]
    angles: np.ndarray
    radii: np.ndarray
    b: int
    p: int
    meta: dict


def grid_meta(cache: TaskCache, layer: int, k: int, b: int, num_angles: int, num_radii: int, centered: bool) -> dict:
    return {"cache_id": cache.cache_id, "model": cache.model, "task": cache.task, "layer": layer,
            "token": cache.layout.a_token, "pca_k": k, "b": b, "num_angles": num_angles, "num_radii": num_radii,
            "centered": centered, "version": GRID_VERSION}


def grid_basis(cache: TaskCache, layer: int, k: int, centered: bool, device, base_dir: Path | None = None) -> CircleBasis:
    """The saved cos/sin a-probe of `layer` (MissingArtifactError naming the sweep command if absent)."""
    stored = load_probe(cache, SweepParams("a", ("cos", "sin"), k), layer, base_dir)
    q, r, table = probe_plane_from_file(stored)
    pca = cache.get_pca(layer, cache.layout.a_token, k)
    return CircleBasis.from_arrays(q, r, table, pca.mean, pca.components, pca.coords, centered=centered, device=device)


def compute_grid_logits(
    cache: TaskCache,
    layer: int,
    bs: Sequence[int],
    base_dir: Path,
    load_model_fn: Callable[[], object],
    k: int = 5,
    num_angles: int = 100,
    num_radii: int = 20,
    centered: bool = False,
    batch_size: int = 64,
) -> dict[int, GridLogits]:
    """Answer logits over the point grid for each b; reuses stored files made with the same inputs."""
    if cache.task not in ("days_of_week", "months_of_year"):
        raise UserError(f"unknown task {cache.task}")
    if not 0 <= layer < cache.n_cache_layers:
        raise UserError(f"--layer {layer} is outside the cache layers 0..{cache.n_cache_layers - 1}")
    points, angles, radii = circle_points(num_angles, num_radii)
    out, state = {}, {}
    for b in bs:
        problem = grid_problem(cache, b)
        meta = grid_meta(cache, layer, k, b, num_angles, num_radii, centered)
        path = grid_path(base_dir, cache, layer, k, b, centered)
        stored = load_npz(path) if path.exists() else None
        if stored is None or json.loads(str(stored["meta_json"])) != meta:
            if not state:
                grid_basis(cache, layer, k, centered, "cpu", base_dir)  # a missing probe fails before the model loads
                state["model"] = load_model_fn()
                state["basis"] = grid_basis(cache, layer, k, centered, model_device(state["model"]), base_dir)
                state["prefix"] = PrefixKV(state["model"], prompt_tokens(state["model"], cache), cache.layout.a_token, batch_size)
            vectors = patch_circle(state["basis"], torch.as_tensor(points, dtype=torch.float32))
            rows = torch.full((len(points),), problem, dtype=torch.long)
            acts = cache.layer_acts(layer)[:, cache.layout.a_token:, :]
            suffix_len = cache.layout.seq_len - cache.layout.a_token
            logits = patched_answer_logits(state["model"], state["prefix"], layer, acts, rows, vectors, cache.answer_token_ids,
                                           rows_per_forward(batch_size, cache.layout.seq_len, suffix_len))
            save_npz(path, meta_json=np.array(json.dumps(meta, sort_keys=True)), logits=logits.numpy().astype(np.float64),
                     points=points, angles=angles, radii=radii)
            stored = load_npz(path)
        out[b] = GridLogits(stored["logits"], stored["points"], stored["angles"], stored["radii"], b, cache.p, meta)
    return out


def grid_ground_truth(grid: GridLogits) -> np.ndarray:
    """Upstream's expected answer of each point: ((round(theta p / 2 pi) mod p) + b) mod p."""
    return ((np.round(grid.angles * grid.p / (2 * np.pi)).astype(int) % grid.p) + grid.b) % grid.p


def plot_grid_panels(grid: GridLogits, names: Sequence[str], out_path: Path) -> Path:
    """The per-b 2x2 figure: ground truth, argmax answer, top-1 minus top-2 logit, max logit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("hsv")(np.arange(grid.p) / grid.p)
    ordered = np.sort(grid.logits, axis=1)
    panels = [
        ("ground truth", colors[grid_ground_truth(grid)], None),
        ("argmax answer", colors[grid.logits.argmax(axis=1)], None),
        ("top-1 minus top-2 logit", ordered[:, -1] - ordered[:, -2], "viridis"),
        ("max logit", ordered[:, -1], "viridis"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(7, 6.4))
    for ax, (title, color, cmap) in zip(axes.ravel(), panels):
        scatter = ax.scatter(grid.points[:, 0], grid.points[:, 1], c=color, cmap=cmap, s=6)
        if cmap is not None:
            fig.colorbar(scatter, ax=ax, fraction=0.046)
        ax.set_title(title, fontsize=9)
        ax.set_aspect("equal")
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colors[i], label=names[i][:3]) for i in range(grid.p)]
    fig.legend(handles=handles, loc="lower center", ncol=min(grid.p, 7), fontsize=7)
    meta = grid.meta
    fig.suptitle(f"{meta['model']} {meta['task']}: layer {meta['layer']}, k={meta['pca_k']}, b={grid.b}", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save_figure(fig, out_path, dpi=150)
    plt.close(fig)
    return out_path
