"""The interactive cluster figure (paper section 4.1; GPT-2 and Mistral share this one implementation).

A plotly 2 x 4 grid:
- (1, 1) heat map of the cosine similarities of the cluster's decoder rows (diagonal left blank, as the
  original; RdBu, -1..1);
- (1, 3) singular values of the cluster's decoder vectors, (1, 4) the same after the original's "centring":
  each decoder vector minus ITS OWN mean coordinate (the mean over its d entries), not the mean vector of
  the cluster. We keep that quirk so the panel matches the paper's figures; it removes the all-ones direction
  from every vector, which for residual-stream SAEs is small, so both panels look alike;
- row 2: PCA of the reconstructions (multid.sae.analysis.reconstructions), PC i vs PC i+1 for i = 0..m-2 with
  m = min(5, cluster size); hovering a point shows its context (10 tokens before) with the firing token bold.

The html is self-contained (plotly.js inlined), so it opens offline; no CDN.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from multid.io import write_text_atomic
from multid.sae.analysis.reconstructions import Pca

MAX_PCS = 5
WIDTH, HEIGHT = 1200, 800


def decoder_cosines(rows: np.ndarray) -> np.ndarray:
    """Cosine similarity matrix of decoder rows [n, d] (float64; equals the Gram matrix for unit-norm rows)."""
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit = rows / np.where(norms > 0, norms, 1.0)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def singular_values(rows: np.ndarray) -> np.ndarray:
    """Singular values of the cluster's decoder vectors (the d x n matrix), largest first."""
    return np.linalg.svd(np.asarray(rows, dtype=np.float64), compute_uv=False)


def centred_singular_values(rows: np.ndarray) -> np.ndarray:
    """Singular values after the original's centring: every vector minus its own mean coordinate."""
    rows = np.asarray(rows, dtype=np.float64)
    return singular_values(rows - rows.mean(axis=1, keepdims=True))


def num_pcs(cluster_size: int) -> int:
    """m = min(5, cluster size): PCA components the figure computes (m - 1 scatter panels)."""
    return min(MAX_PCS, cluster_size)


def build_interactive_figure(rows: np.ndarray, pca: Pca, hover: Sequence[str], title: str) -> Any:
    """The plotly figure of one cluster: rows = its decoder rows [n, d], pca of its reconstructions,
    hover = one html context per reconstruction (same order as pca.coords)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    coords = np.asarray(pca.coords)
    if len(hover) != coords.shape[0]:
        raise ValueError(f"{len(hover)} hover texts for {coords.shape[0]} points")
    n = rows.shape[0]
    pairs = max(0, min(num_pcs(n), pca.k) - 1)
    titles = ["Decoder cosine similarity", "", "Singular values", "Singular values (centred)"]
    titles += [f"PCA dims {i} and {i + 1}" if i < pairs else "" for i in range(4)]
    fig = make_subplots(rows=2, cols=4, horizontal_spacing=0.05, subplot_titles=titles)
    cos = decoder_cosines(rows)
    np.fill_diagonal(cos, np.nan)
    fig.add_trace(go.Heatmap(z=cos, colorscale="RdBu", zmin=-1, zmax=1, reversescale=True,
                             colorbar=dict(title="Cosine similarity", x=0.25, y=0.83, len=0.4),
                             hovertemplate="feature %{y} vs %{x}: %{z:.3f}<extra></extra>",
                             name="decoder cosine"), row=1, col=1)
    ranks = np.arange(1, min(n, rows.shape[1]) + 1)
    for col, values, name in ((3, singular_values(rows), "singular values"),
                              (4, centred_singular_values(rows), "singular values (centred)")):
        fig.add_trace(go.Scatter(x=ranks, y=values, mode="lines+markers", name=name, showlegend=False),
                      row=1, col=col)
        fig.update_xaxes(title_text="rank", row=1, col=col)
    for i in range(pairs):
        fig.add_trace(go.Scatter(
            x=coords[:, i], y=coords[:, i + 1], mode="markers", name=f"PC {i} vs {i + 1}", showlegend=False,
            marker=dict(color="darkblue", opacity=0.5, size=4), text=list(hover), hovertemplate="%{text}<extra></extra>",
            hoverlabel=dict(bgcolor="white", font=dict(color="black"), bordercolor="black"),
        ), row=2, col=i + 1)
        fig.update_xaxes(title_text=f"PCA dim {i}", row=2, col=i + 1)
        fig.update_yaxes(title_text=f"PCA dim {i + 1}", row=2, col=i + 1)
    fig.update_layout(title=title, width=WIDTH, height=HEIGHT, font=dict(size=12), hovermode="closest")
    fig.update_annotations(font_size=13)
    return fig


def write_html(fig: Any, path: str | os.PathLike) -> Path:
    """Write the figure as one self-contained html file (plotly.js inlined, works offline), atomically."""
    text = fig.to_html(include_plotlyjs=True, full_html=True, div_id="cluster-figure",
                       config={"displaylogo": False})
    return write_text_atomic(path, text)


def figure_title(model_label: str, layer: int, cluster: int, size: int, n_points: int) -> str:
    return f"{model_label} layer {layer}: cluster {cluster} with {size} features ({n_points} reconstructions)"
