"""The paper's static circle figures from cluster reconstructions (section 4.1):

- Figure 1 `gpt2nonlinears.pdf` (1 x 3): GPT-2 layer-7 days (PC 2 vs 3), months (PC 2 vs 3), years (PC 3 vs 4);
- Figure 12 `gpt2nonlinears3projs.pdf` (3 x 3): the same three clusters (rows) on PC pairs (1,2), (2,3), (3,4);
- Figure 13 `mistral7bnonlinears.png` (1 x 2): Mistral-7B layer-8 days and months, PC 2 vs 3.
(PCs 1-based in these names; the code indexes them from 0.)

Each point is coloured by its firing token (multid.sae.data.token_labels): days in tab10, months in a rainbow, years
1900..1999 in viridis with a colour bar, everything else grey. The original figure script gave a non-digit
token in the years panel the colour of the PREVIOUS point; we draw it grey, and `stale_year_colours=True`
reproduces the original colouring (the published Figures 1 and 12 were drawn with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from multid.sae.data import token_labels as L

GREY = "#BBBBBB"
SCATTER = dict(s=1, alpha=0.6, linewidths=0)
DAYS_TITLE, MONTHS_TITLE, YEARS_TITLE = "Days of the Week", "Months of the Year", "Years of the 20th Century"


@dataclass(frozen=True)
class Panel:
    """Points of one cluster: coords [n, k] (PCA scores) and class labels [n] (labels.OTHER for grey)."""

    coords: np.ndarray
    labels: np.ndarray

    @property
    def grey_fraction(self) -> float:
        return L.other_fraction(self.labels)


def day_colours(mistral: bool = False) -> list:
    import matplotlib

    cols = [matplotlib.colormaps["tab10"](i) for i in range(7)]
    return cols + ([(0.0, 0.0, 0.0, 1.0)] if mistral else [])


def month_colours() -> list:
    import matplotlib

    rainbow = matplotlib.colormaps["rainbow"]
    return [rainbow(x) for x in np.linspace(0, 11 / 12, 12)]


def season_colours() -> list:
    import matplotlib

    return [matplotlib.colormaps[name](0.0) for name in ("winter", "spring", "summer", "autumn")]


def year_colour_map():
    import matplotlib

    return matplotlib.colormaps["viridis"]


def colour_array(labels: np.ndarray, palette: Sequence[Any]) -> np.ndarray:
    """RGBA [n, 4] of every point: palette[label], grey for OTHER (or a label beyond the palette)."""
    from matplotlib.colors import to_rgba

    table = np.array([to_rgba(c) for c in palette] + [to_rgba(GREY)])
    idx = np.asarray(labels, dtype=np.int64)
    idx = np.where((idx < 0) | (idx >= len(palette)), len(palette), idx)
    return table[idx]


def year_palette() -> list:
    cmap = year_colour_map()
    return [cmap(x) for x in np.linspace(0, 1, 100)]


def clean_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def scatter_pair(ax, panel: Panel, pcs: tuple[int, int], palette: Sequence[Any], *, size: float = 1,
                 triangles_from: int | None = None) -> None:
    """Scatter PC pcs[0] vs pcs[1] coloured by label; labels >= triangles_from drawn as triangles."""
    coords = np.asarray(panel.coords)
    if max(pcs) >= coords.shape[1]:
        ax.text(0.5, 0.5, f"only {coords.shape[1]} PCs", ha="center", va="center", transform=ax.transAxes)
        clean_axes(ax)
        return
    x, y = coords[:, pcs[0]], coords[:, pcs[1]]
    colours = colour_array(panel.labels, palette)
    tri = np.zeros(len(x), bool) if triangles_from is None else np.asarray(panel.labels) >= triangles_from
    opts = {**SCATTER, "s": size}
    ax.scatter(x[~tri], y[~tri], c=colours[~tri], **opts)
    if tri.any():
        ax.scatter(x[tri], y[tri], c=colours[tri], marker="^", **{**opts, "s": size * 4})
    clean_axes(ax)


def legend_handles(names: Sequence[str], palette: Sequence[Any], marker_size: float, *, other: bool = False,
                   markers: Sequence[str] | None = None) -> list:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="", marker=(markers[i] if markers else "o"), color=palette[i],
                      markersize=marker_size, label=name) for i, name in enumerate(names)]
    if other:
        handles.append(Line2D([], [], linestyle="", marker="o", color=GREY, markersize=marker_size, label="Other"))
    return handles


def two_part_legend(ax, first: list, second: list, fontsize: float) -> None:
    """Two legends in one axes (left: first handles, right: second), as the paper's figures."""
    opts = dict(fontsize=fontsize, frameon=False, handletextpad=0.1, borderpad=0.1, labelspacing=0.2)
    left = ax.legend(handles=first, loc="upper left", **opts)
    ax.add_artist(left)
    ax.legend(handles=second, loc="upper right", **opts)


def day_legend(ax, fontsize: float = 4, marker: float = 3, mistral: bool = False) -> None:
    pal = day_colours(mistral)
    names = list(L.DAY_SHORT)
    second = legend_handles(names[4:], pal[4:7], marker)
    if mistral:
        second += legend_handles(["Weekend"], pal[7:], marker)
    second += legend_handles([], [], marker, other=True)
    two_part_legend(ax, legend_handles(names[:4], pal[:4], marker), second, fontsize)


def month_legend(ax, fontsize: float = 4, marker: float = 3, seasons: bool = False) -> None:
    pal = month_colours()
    names = list(L.MONTH_SHORT)
    second = legend_handles(names[9:], pal[9:], marker)
    if seasons:
        second += legend_handles(list(L.SEASONS), season_colours(), marker, markers=["^"] * 4)
    second += legend_handles([], [], marker, other=True)
    two_part_legend(ax, legend_handles(names[:9], pal[:9], marker), second, fontsize)


def year_colour_bar(fig, rect: Sequence[float]) -> Any:
    """Horizontal viridis colour bar 1900..1999 (ticks 1900, 1950, 1999) in figure coordinates `rect`."""
    import matplotlib as mpl

    cax = fig.add_axes(list(rect))
    mappable = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(L.YEAR_FIRST, L.YEAR_LAST), cmap=year_colour_map())
    bar = fig.colorbar(mappable, cax=cax, orientation="horizontal", ticks=[1900, 1950, 1999])
    bar.ax.tick_params(labelsize=4, length=1, pad=1)
    cax.set_label("year colour bar")
    return bar


def separator(fig, x: float | None = None, y: float | None = None) -> None:
    """A thin grey line across the figure (vertical at x, or horizontal at y), in figure coordinates."""
    from matplotlib.lines import Line2D

    xs, ys = ([x, x], [0.03, 0.97]) if x is not None else ([0.03, 0.97], [y, y])
    fig.add_artist(Line2D(xs, ys, transform=fig.transFigure, color="grey", linewidth=0.5))


FIGURE1_PLANES = ((1, 2), (1, 2), (2, 3))


def figure1(days: Panel, months: Panel, years: Panel, planes: Sequence[tuple[int, int]] = FIGURE1_PLANES,
            titles: Sequence[str] = (DAYS_TITLE, MONTHS_TITLE, YEARS_TITLE)):
    """Figure 1 (1 x 3, 5.5 x 2.0 in): days PC2-3, months PC2-3, years PC3-4 (0-based `planes`), with legends and
    the year bar."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(5.5, 2.0))
    scatter_pair(axes[0], days, tuple(planes[0]), day_colours())
    scatter_pair(axes[1], months, tuple(planes[1]), month_colours())
    scatter_pair(axes[2], years, tuple(planes[2]), year_palette())
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=7)
    day_legend(axes[0])
    month_legend(axes[1])
    fig.tight_layout(pad=0.7)
    separator(fig, x=1 / 3)
    separator(fig, x=2 / 3)
    year_colour_bar(fig, (0.855, 0.85, 0.12, 0.02))
    return fig


PAIRS_12 = ((0, 1), (1, 2), (2, 3))


def figure12(days: Panel, months: Panel, years: Panel):
    """Figure 12 (3 x 3, 5.5 x 5.5 in): rows days / months / years, columns PC pairs (1,2), (2,3), (3,4)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(5.5, 5.5))
    rows = ((days, day_colours(), DAYS_TITLE), (months, month_colours(), MONTHS_TITLE),
            (years, year_palette(), YEARS_TITLE))
    for r, (panel, palette, title) in enumerate(rows):
        for c, pcs in enumerate(PAIRS_12):
            scatter_pair(axes[r, c], panel, pcs, palette)
            axes[r, c].set_title(f"{title}: PC {pcs[0] + 1} vs {pcs[1] + 1}", fontsize=6)
    day_legend(axes[0, 1])
    month_legend(axes[1, 1])
    fig.tight_layout(pad=0.7)
    separator(fig, y=2 / 3)
    separator(fig, y=1 / 3)
    year_colour_bar(fig, (0.855, 0.27, 0.12, 0.007))
    return fig


def figure13(days: Panel, months: Panel):
    """Figure 13 (1 x 2, 5.5 x 2.6 in): Mistral-7B days and months, PC 2 vs 3; seasons as triangles."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(5.5, 2.6))
    scatter_pair(axes[0], days, (1, 2), day_colours(mistral=True), size=3)
    scatter_pair(axes[1], months, (1, 2), month_colours() + season_colours(), size=3, triangles_from=12)
    axes[0].set_title(DAYS_TITLE + " (Mistral 7B)", fontsize=8)
    axes[1].set_title(MONTHS_TITLE + " (Mistral 7B)", fontsize=8)
    day_legend(axes[0], fontsize=5, marker=4, mistral=True)
    month_legend(axes[1], fontsize=5, marker=4, seasons=True)
    fig.tight_layout(pad=0.7)
    return fig


def legend_texts(ax) -> list[str]:
    """Every legend entry drawn in `ax` (both parts of a two-part legend), for checks and tests."""
    from matplotlib.legend import Legend

    return [t.get_text() for leg in ax.findobj(Legend) for t in leg.get_texts()]


# ----------------------------------------------------------------------------------------- rebuttal grid

TOP_TOKENS = 10
LIGHT_GREY = "#DDDDDD"


@dataclass(frozen=True)
class GridEntry:
    """One cluster of the exploration grid: title, PCA scores [n, m], explained variance [m], and the text of
    each point's firing token and of the token after it."""

    title: str
    coords: np.ndarray
    explained: np.ndarray
    current: Sequence[str]
    following: Sequence[str]


def top_token_colours(tokens: Sequence[str], top: int = TOP_TOKENS) -> tuple[np.ndarray, list[str]]:
    """Colours [n, 4]: the `top` most frequent tokens in tab10 (ties: first seen), the rest light grey."""
    import matplotlib
    from matplotlib.colors import to_rgba

    counts: dict[str, int] = {}
    for t in tokens:
        counts[t] = counts.get(t, 0) + 1
    order = sorted(counts, key=lambda t: -counts[t])[:top]
    table = {t: matplotlib.colormaps["tab10"](i) for i, t in enumerate(order)}
    grey = to_rgba(LIGHT_GREY)
    return np.array([table.get(t, grey) for t in tokens]).reshape(-1, 4), order


def explore_grid(entries: Sequence[GridEntry], ncols: int = 2):
    """The rebuttal grid: one subfigure per cluster (up to 5 x 2), each with 2 rows x min(3, m - 1) scatters of
    PC k+1 vs PC k+2 (1-based); row 1 coloured by the firing token, row 2 by the next token."""
    import matplotlib.pyplot as plt

    nrows = max(1, -(-len(entries) // ncols))
    fig = plt.figure(figsize=(15 * ncols, 10 * nrows))
    subfigs = np.atleast_1d(fig.subfigures(nrows, ncols)).ravel()
    for sub, entry in zip(subfigs, entries):
        m = entry.coords.shape[1]
        cols = min(3, m - 1)
        axes = sub.subplots(2, cols, squeeze=False)
        sub.suptitle(entry.title, fontsize=20)
        for row, tokens, what in ((0, entry.current, "current token"), (1, entry.following, "next token")):
            colours, top = top_token_colours(tokens)
            for k in range(cols):
                ax = axes[row, k]
                ax.scatter(entry.coords[:, k], entry.coords[:, k + 1], c=colours, s=1)
                ax.set_xlabel(f"PC {k + 1} ({100 * entry.explained[k]:.1f}%)")
                ax.set_ylabel(f"PC {k + 2} ({100 * entry.explained[k + 1]:.1f}%)")
                ax.set_title(f"coloured by {what}", fontsize=10)
            handles = legend_handles([repr(t) for t in top], [colours[list(tokens).index(t)] for t in top], 6)
            axes[row, -1].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for sub in subfigs[len(entries):]:
        sub.set_facecolor("white")
    return fig
