"""Cluster stability (the paper's rebuttal check on section 4.1): do known clusters survive other graph settings?

For ground-truth clusters G (the Mistral days and months clusters of the paper's file) and every graph
clustering of a (top-k, cutoff) sweep, the best Jaccard similarity max over clusters C of |G & C| / |G | C|.
The sweep shares one exact nearest-neighbour search (the largest k) across all settings. The figure is a
heat map per ground-truth cluster (cutoffs down, k across), plus within-cluster cosine heat maps of the
ground-truth clusters themselves (upstream drew those from a variable the sweep had overwritten, so its maps
showed clusters of the last sweep file; here they are the ground-truth clusters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from multid.errors import UserError
from multid.sae.analysis.clustering_methods import check_decoder, components, top_k_neighbours
from multid.sae.data.cluster_files import cosine_matrix

UPSTREAM_TOP_KS = (2, 3, 4)


def upstream_cutoffs() -> list[float]:
    """The rebuttal sweep's cutoffs: 20 values logspace(-1, 0) plus 0.5, ascending (21 values)."""
    return sorted({float(c) for c in np.logspace(-1, 0, 20)} | {0.5})


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    """|A & B| / |A | B| of two feature sets (0 for two empty sets)."""
    sa, sb = set(int(x) for x in a), set(int(x) for x in b)
    union = len(sa | sb)
    return len(sa & sb) / union if union else 0.0


def best_jaccard(truth: Sequence[int], clusters: Sequence[Sequence[int]]) -> tuple[float, int]:
    """(max over clusters C of jaccard(truth, C), index of the best C; -1 when there are no clusters).

    Only clusters sharing a member with `truth` can score above 0, so only those are compared."""
    members = set(int(x) for x in truth)
    best, best_index = 0.0, -1
    for i, cluster in enumerate(clusters):
        if members.intersection(cluster):
            score = jaccard(members, cluster)
            if score > best:
                best, best_index = score, i
    return best, best_index


@dataclass
class StabilityResult:
    """best[name] is a [len(cutoffs), len(top_ks)] array of best Jaccard values; sizes[(k, cutoff)] the
    cluster sizes of that setting (for the size histograms)."""

    cutoffs: list[float]
    top_ks: list[int]
    best: dict[str, np.ndarray]
    sizes: dict[tuple[int, float], list[int]]

    def to_json(self) -> dict:
        return {"cutoffs": self.cutoffs, "top_ks": self.top_ks,
                "best_jaccard": {name: grid.tolist() for name, grid in self.best.items()}}


def sweep_graph_clusterings(W_dec: np.ndarray, top_ks: Sequence[int], cutoffs: Sequence[float],
                            diagonal: str = "zeroed", progress: bool = False):
    """Yield ((k, cutoff), clusters) for every setting, from one top-max(k) neighbour search.

    The top-k list of a row is a prefix of its top-K list for K >= k (FAISS returns them sorted), so every
    k reuses the one search. Default diagonal "zeroed": the rebuttal sweep ran on the later code.
    """
    W = check_decoder(W_dec)
    if not top_ks or not cutoffs:
        raise UserError("the sweep needs at least one --top_k and one cutoff")
    sims, ids = top_k_neighbours(W, max(top_ks), diagonal, progress=progress)
    num = W.shape[0]
    for k in top_ks:
        k_sims, k_ids = sims[:, :k].reshape(-1), ids[:, :k].reshape(-1)
        rows = np.repeat(np.arange(num, dtype=np.int64), min(k, ids.shape[1]))
        for cutoff in cutoffs:
            edge = (k_sims > cutoff) & (k_ids >= 0)
            yield (int(k), float(cutoff)), components(num, rows[edge], k_ids[edge])


def stability_grid(truths: Mapping[str, Sequence[int]], sweep, top_ks: Sequence[int], cutoffs: Sequence[float]
                   ) -> StabilityResult:
    """Best Jaccard of each ground-truth cluster against each clustering of `sweep` ((k, cutoff), clusters)."""
    k_pos = {int(k): j for j, k in enumerate(top_ks)}
    c_pos = {float(c): i for i, c in enumerate(cutoffs)}
    best = {name: np.full((len(cutoffs), len(top_ks)), np.nan) for name in truths}
    sizes = {}
    for (k, cutoff), clusters in sweep:
        sizes[(k, cutoff)] = [len(c) for c in clusters]
        for name, truth in truths.items():
            best[name][c_pos[float(cutoff)], k_pos[int(k)]] = best_jaccard(truth, clusters)[0]
    return StabilityResult(list(map(float, cutoffs)), list(map(int, top_ks)), best, sizes)


def heatmap_figure(result: StabilityResult, name: str, title_name: str | None = None) -> Figure:
    """One ground-truth cluster's best-Jaccard heat map: cutoffs down (ascending), k across."""
    grid = result.best[name]
    fig = Figure(figsize=(5, 8))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(grid, aspect="auto", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="Max Jaccard Similarity With GT Cluster")
    ax.set_xticks(range(len(result.top_ks)), [f"k={k}" for k in result.top_ks])
    ax.set_yticks(range(len(result.cutoffs)), [f"{c:.2f}" for c in result.cutoffs])
    ax.set_xlabel("top k")
    ax.set_ylabel("similarity cutoff")
    ax.set_title(f"Cluster Stability Across Parameters for {title_name or name} Cluster")
    fig.tight_layout()
    return fig


def size_histogram_figure(result: StabilityResult) -> Figure:
    """Overlaid histograms of cluster sizes (bins linspace(0, 100, 100)) of every setting of the sweep."""
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot(1, 1, 1)
    bins = np.linspace(0, 100, 100)
    for (k, cutoff), sizes in result.sizes.items():
        ax.hist(sizes, bins=bins, alpha=0.2, label=f"k={k}, cutoff={cutoff:.2f}")
    ax.set_yscale("log")
    ax.set_xlabel("cluster size")
    ax.set_ylabel("number of clusters")
    ax.set_title("Cluster sizes across the sweep")
    return fig


def cosine_heatmap_figure(W_dec: np.ndarray, clusters: Mapping[str, Sequence[int]]) -> Figure:
    """Within-cluster decoder cosine matrices (diagonal blank), one panel per named cluster."""
    fig = Figure(figsize=(5 * len(clusters), 4.5))
    for i, (name, members) in enumerate(clusters.items()):
        ax = fig.add_subplot(1, len(clusters), i + 1)
        gram = cosine_matrix(W_dec, members)
        np.fill_diagonal(gram, np.nan)
        image = ax.imshow(gram, vmin=-1, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(members)), [str(m) for m in members], rotation=90, fontsize=6)
        ax.set_yticks(range(len(members)), [str(m) for m in members], fontsize=6)
        ax.set_title(name)
        fig.colorbar(image, ax=ax, label="cosine similarity")
    fig.tight_layout()
    return fig
