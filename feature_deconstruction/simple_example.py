"""Toy illustration of feature deconstruction (upstream `feature_deconstruction/simple_example.py`).

A 10-dimensional "representation" of (α, β) in 0..9 x 0..9 mixes four known features,
    f(α, β)_i = C0i sin α + C1i β + C2i [α = 4] + C3i [β = 1] + 0.1 N(0, 1),   C ~ U[0, 1]^(4 x 10), seed 42,
and four RGB panels (rows α, columns β) show what is left as features are regressed out:
a) the raw values, b) residual after [α = 4], [β = 1] and a bias, c) + sin α, d) + β.
Each panel colours the top-3 principal components of what it shows.

Fixes to upstream (spec sae_reducibility.md §7.3): each panel gets its own figure (upstream never cleared
the figure, so later panels were drawn over earlier ones), and panel a is min-max scaled to [0, 1]
(upstream divided each component by its column max, so negative values clipped to black; kept behind
--upstream_panel_a). Also writes one combined four-panel figure and a JSON of R^2 per panel.

    cd feature_deconstruction && python3 simple_example.py          (or: python -m feature_deconstruction.simple_example)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multid.deconstruction.residual_rgb import top_singular_colors  # noqa: E402
from multid.config import add_base_dir_arg, add_seed_arg, figure_dir, resolve_base_dir  # noqa: E402
from multid.errors import cli_entry  # noqa: E402
from multid.io import save_figure, save_json  # noqa: E402

SIDE = 10  # α and β both run over 0..9
DIM = 10  # representation width
NOISE = 0.1
RCOND = 0.001  # upstream's lstsq rcond
PANELS = ("a", "b", "c", "d")
PANEL_TITLES = {
    "a": "a) original",
    "b": "b) − [α=4], [β=1]",
    "c": "c) − sin α",
    "d": "d) − β",
}


def make_toy_data(seed: int = 42) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(alpha, beta, values [100, 10]) with α outer, β inner; numpy legacy RNG seeded as upstream."""
    rng = np.random.RandomState(seed)
    C = rng.rand(4, DIM)
    alphas, betas, rows = [], [], []
    for alpha in range(SIDE):
        for beta in range(SIDE):
            value = C[0] * np.sin(alpha) + C[1] * beta + C[2] * (alpha == 4) + C[3] * (beta == 1)
            rows.append(value + NOISE * rng.randn(DIM))
            alphas.append(alpha)
            betas.append(beta)
    return np.array(alphas), np.array(betas), np.array(rows)


def design_steps(alpha: np.ndarray, beta: np.ndarray) -> dict[str, np.ndarray | None]:
    """Design matrix per panel: none for a, then [α=4, β=1, 1], + sin α, + β."""
    base = np.stack([(alpha == 4), (beta == 1), np.ones_like(alpha)], axis=1).astype(np.float64)
    with_sin = np.concatenate([base, np.sin(alpha)[:, None]], axis=1)
    return {"a": None, "b": base, "c": with_sin, "d": np.concatenate([with_sin, beta[:, None].astype(np.float64)], axis=1)}


def residual(X: np.ndarray | None, Y: np.ndarray) -> np.ndarray:
    """Y minus its least-squares fit on X (np.linalg.lstsq, rcond 0.001 as upstream); Y itself if X is None."""
    if X is None:
        return Y
    coef = np.linalg.lstsq(X, Y, rcond=RCOND)[0]
    return Y - X @ coef


def r2_centred(Y: np.ndarray, R: np.ndarray) -> float:
    """1 - sum(R^2) / sum((Y - mean Y)^2): the share of the toy values' variance the fit explains."""
    return float(1.0 - np.sum(R**2) / np.sum((Y - Y.mean(axis=0)) ** 2))


def panel_colors(values: np.ndarray, upstream_max_scaling: bool = False) -> np.ndarray:
    """[100, 3] RGB in [0, 1] from the top-3 principal components of `values`.

    Default: min-max per component. upstream_max_scaling: divide by the column max and clip (upstream's
    panel a, where negative values clip to 0).
    """
    if not upstream_max_scaling:
        return top_singular_colors(values, k=3, center=True)
    centred = values - values.mean(axis=0, keepdims=True)
    U, S, _ = np.linalg.svd(centred, full_matrices=False)
    scores = U[:, :3] * S[:3]
    scores *= np.sign(scores[np.argmax(np.abs(scores), axis=0), np.arange(3)])
    return np.clip(scores / scores.max(axis=0), 0.0, 1.0)


def compute_panels(seed: int = 42, upstream_panel_a: bool = False) -> dict[str, Any]:
    """Images [10, 10, 3] (rows α, cols β) and R^2 for the four panels."""
    alpha, beta, Y = make_toy_data(seed)
    images, r2 = {}, {}
    for panel, X in design_steps(alpha, beta).items():
        R = residual(X, Y)
        r2[panel] = 0.0 if X is None else r2_centred(Y, R)
        images[panel] = panel_colors(R, upstream_max_scaling=upstream_panel_a and panel == "a").reshape(SIDE, SIDE, 3)
    return {"images": images, "r2": r2, "final_residual_rms": float(np.sqrt(np.mean(R**2)))}


def plot_panels(panels: dict[str, Any], out_dir: Path, fmt: str = "pdf") -> list[Path]:
    """One file per panel (simple_example_{a..d}, titles "a)".."d)") plus the combined four-panel figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for panel in PANELS:
        fig, ax = plt.subplots(figsize=(2.0, 2.0))
        try:
            ax.imshow(panels["images"][panel], interpolation="nearest")
            ax.set_title(f"{panel})")
            ax.axis("off")
            written.append(save_figure(fig, out_dir / f"simple_example_{panel}.{fmt}", bbox_inches="tight"))
        finally:
            plt.close(fig)
    fig, axes = plt.subplots(1, 4, figsize=(8.0, 2.3))
    try:
        for ax, panel in zip(axes, PANELS):
            ax.imshow(panels["images"][panel], interpolation="nearest")
            r2 = panels["r2"][panel]
            ax.set_title(PANEL_TITLES[panel] + ("" if panel == "a" else f"\nR² {r2 * 100:.1f}%"), fontsize=9)
            ax.set_xlabel("β")
            ax.set_ylabel("α")
            ax.set_xticks([])
            ax.set_yticks([])
        written.append(save_figure(fig, out_dir / f"simple_example.{fmt}", bbox_inches="tight"))
    finally:
        plt.close(fig)
    return written


def run_simple_example(out_dir: Path, seed: int = 42, fmt: str = "pdf", upstream_panel_a: bool = False) -> list[Path]:
    """Compute, print R^2 per panel, write the figures and simple_example.json; return the paths."""
    panels = compute_panels(seed, upstream_panel_a)
    for panel in PANELS[1:]:
        print(f"{PANEL_TITLES[panel]}: R^2 = {panels['r2'][panel] * 100:.1f}%")
    print(f"final residual RMS {panels['final_residual_rms']:.4f} (noise level {NOISE})")
    written = plot_panels(panels, out_dir, fmt)
    summary = {"seed": seed, "r2": panels["r2"], "final_residual_rms": panels["final_residual_rms"], "noise": NOISE}
    written.append(save_json(out_dir / "simple_example.json", summary))
    return written


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description="Toy four-panel feature deconstruction (residual RGB) illustration.")
    add_base_dir_arg(parser)
    add_seed_arg(parser, default=42)
    parser.add_argument("--out_dir", default=None, help="output folder (default: <base_dir>/figs/feature_deconstruction)")
    parser.add_argument("--format", default="pdf", choices=("pdf", "png", "svg"), help="figure format (default: %(default)s)")
    parser.add_argument("--upstream_panel_a", action="store_true", help="colour panel a as upstream (divide by column max; negatives clip)")
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir) if args.out_dir else figure_dir(resolve_base_dir(args.base_dir), "feature_deconstruction")
    written = run_simple_example(out_dir, seed=args.seed, fmt=args.format, upstream_panel_a=args.upstream_panel_a)
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    cli_entry(main)()
