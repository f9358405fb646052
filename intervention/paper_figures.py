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
import numpy as np  # noqa: E402

from intervention.caches import TaskCache  # noqa: E402
from intervention.circle_finding_utils import probe_r2  # noqa: E402
from multid.config import figs_dir  # noqa: E402
from multid.io import save_figure  # noqa: E402

MODEL_TITLES = {"mistral": "Mistral", "llama": "Llama", "gpt2": "GPT-2", "smollm2": "SmolLM2", "tiny": "Tiny"}
TASK_TITLES = {"days_of_week": "Weekdays", "months_of_year": "Months"}
# Figure 3 of the paper: Mistral weekdays at cache layer 30, Llama months at cache layer 3 (a-token).
PAPER_FIGURE3_LAYERS = {("mistral", "days_of_week"): 30, ("llama", "months_of_year"): 3}


def paper_plots_dir(base_dir: Path) -> Path:
    return figs_dir(base_dir) / "paper_plots"


def class_colors(p: int) -> np.ndarray:
    """One colour per label value around a colour wheel, so neighbours on the circle look alike."""
    return plt.get_cmap("hsv")(np.arange(p) / p)


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
    colors = class_colors(p)
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
    return PAPER_FIGURE3_LAYERS.get((cache.model, cache.task)) or best_probe_layer(cache)


def figure3(caches: Sequence[TaskCache], out_path: Path, layers: Sequence[int | None] | None = None) -> Path:
    """Figure 3: PCA of the start-word token, one panel per (model, task) cache."""
    layers = list(layers) if layers is not None else [None] * len(caches)
    panels = [start_token_panel(cache, layer if layer is not None else figure3_layer(cache)) for cache, layer in zip(caches, layers)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        draw_pca_panel(ax, panel)
    fig.tight_layout()
    save_figure(fig, out_path, dpi=200)
    plt.close(fig)
    return out_path
