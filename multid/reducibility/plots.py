"""The three-panel reducibility figure of the demo (Fig 2 / Fig 9), drawn with matplotlib, no LaTeX needed.

Left: the cloud (black dots) with the mixture slab |v.x + c| = eps * rms (red dashed) and a green cross
along the two axes of the best rotation. Middle: histogram of the slab coordinate z with +-eps and M.
Right: mutual information (bits) against the rotation angle with the minimum and S.
Layout as the paper's figures: 24 x 5 in, font size 30, GridSpec 3 x 3 with height ratios [0.03, 0.92, 0.05].
Every drawn series carries a `gid` ("cloud", "slab", "cross", "z histogram", "eps", "mutual information",
"argmin") so that tests can find it.
"""

from __future__ import annotations

import contextlib
import shutil

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec

from multid.errors import UserError
from multid.reducibility.indices import slab_coordinate


def style(usetex: bool = False) -> contextlib.AbstractContextManager:
    """rcParams for the demo figures; usetex only on request and only when a latex binary exists."""
    if usetex and shutil.which("latex") is None:
        raise UserError("--usetex was given but no `latex` binary is on PATH; drop --usetex (mathtext is used)")
    return matplotlib.rc_context({"font.size": 30, "text.usetex": usetex})


def reducibility_figure(result, eps: float, cross_size: float) -> Figure:
    """Figure for one `synthetic.DemoResult`; call inside `style()` so the fonts apply."""
    fig = Figure(figsize=(24, 5))
    grid = GridSpec(3, 3, figure=fig, height_ratios=[0.03, 0.92, 0.05], wspace=0.25)
    draw_cloud(fig.add_subplot(grid[:, 0]), result, eps, cross_size)
    draw_slab_histogram(fig.add_subplot(grid[1, 1]), result, eps)
    draw_mi_curve(fig.add_subplot(grid[1, 2]), result)
    return fig


def draw_cloud(ax, result, eps: float, cross_size: float) -> None:
    """Scatter, the slab edges v.x + c = +-eps * rms, and the cross along the optimal separating axes.

    The axes are the columns of R(theta*) (rows of the inverse rotation), the directions onto which the
    rotated coordinates project; we centre the cross on the cloud's mean, where S's histogram is centred.
    """
    points = np.asarray(result.points, dtype=np.float64)  # the demo's clouds are float32, as drawn
    ax.scatter(points[:, 0], points[:, 1], s=2, c="black", gid="cloud")
    ax.set_xticks([])
    ax.set_yticks([])
    low, high = points.min(0), points.max(0)
    margin = 0.05 * (high - low)
    ax.set_xlim(low[0] - margin[0], high[0] + margin[0])
    ax.set_ylim(low[1] - margin[1], high[1] + margin[1])
    y = points @ result.v + result.c
    half_width = eps * np.sqrt(np.mean(y * y))  # RMS includes the offset c, as in M
    for level in (-half_width, half_width):
        xs, ys = line_points(result.v, result.c, level, ax.get_xlim(), ax.get_ylim())
        ax.plot(xs, ys, color="red", linestyle="--", linewidth=2, gid="slab")
    centre = points.mean(0)
    cos, sin = np.cos(result.s_angle), np.sin(result.s_angle)
    for axis in (np.array([cos, sin]), np.array([-sin, cos])):
        ends = np.stack([centre - cross_size * axis, centre + cross_size * axis])
        ax.plot(ends[:, 0], ends[:, 1], color="green", linewidth=3, gid="cross")


def line_points(v: np.ndarray, c: float, level: float, xlim, ylim) -> tuple[np.ndarray, np.ndarray]:
    """Two points of the line v.x + c = level spanning the axes box (solved along the better-conditioned axis)."""
    if abs(v[1]) >= abs(v[0]):
        xs = np.array(xlim, dtype=float)
        return xs, (level - c - v[0] * xs) / v[1]
    ys = np.array(ylim, dtype=float)
    return (level - c - v[1] * ys) / v[0], ys


def draw_slab_histogram(ax, result, eps: float) -> None:
    """Histogram (100 bins) of z = (v.x + c) / rms with the slab edges +-eps and the value of M."""
    z = slab_coordinate(result.points, result.v, result.c)
    ax.hist(z, bins=100, color="black", gid="z histogram")
    for edge in (-eps, eps):
        ax.axvline(edge, color="red", linestyle="--", linewidth=2, gid="eps")
    ax.text(0.02, 0.85, rf"$M_\epsilon(f)={result.m:.4f}$", color="red", transform=ax.transAxes)
    ax.set_yticks([])


def draw_mi_curve(ax, result) -> None:
    """MI (bits) against the angle over [0, 2 pi], with the argmin folded into [0, pi/2) and S."""
    ax.plot(result.angles, result.mi_bits, color="green", linewidth=2, gid="mutual information")
    ax.axvline(result.s_angle % (np.pi / 2), color="green", linestyle="--", linewidth=2, gid="argmin")
    ax.text(0.02, 0.85, rf"$S(f)={result.s_bits:.4f}$", color="green", transform=ax.transAxes)
    ax.set_xticks([0, np.pi / 2, np.pi, 3 * np.pi / 2, 2 * np.pi])
    ax.set_xticklabels(["0", r"$\pi/2$", r"$\pi$", r"$3\pi/2$", r"$2\pi$"])
    ax.set_xlim(0, 2 * np.pi)
